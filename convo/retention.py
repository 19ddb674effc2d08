"""Retention of conversation data: the ``messages`` and ``turns`` kinds, and customers and
conversations as subjects of legal holds and erasure requests (``governance.retention_registry``).

Only closed conversations are eligible, counted from when they closed: a live chat is never
touched. Holds map to rows like this: a customer hold covers every row of the customer's
conversations, a conversation hold that conversation's rows, a date-range hold the rows created in
its dates (a customer or conversation hold with dates: its rows created in them).

- ``messages`` anonymise: the text becomes ``ANONYMISED_TEXT`` and the redacted copy is emptied;
  once a conversation has no held message, its summary, survey comment and multi-turn state
  (which quote the customer) are cleared too. Delete: the rows are deleted, except a customer
  message an AI turn was recorded on (the turn's decision record needs that row): it is
  anonymised, and deleted by a later run once the ``turns`` policy has deleted the turn.
- ``turns`` anonymise: the decision record's skeleton stays (ids, versions, intent, decision,
  tokens, cost, latency, timestamps); the input and reply texts are anonymised, the tool call
  loses its arguments, an error text is replaced, any quoted text in the sources is dropped.
  Delete: the turn rows are deleted (the messages stay, under their own policy).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Sequence

from django.db import connection
from django.db.models import CharField, Q, QuerySet
from django.db.models.functions import Cast
from django.utils import timezone

from convo.models import Contact, Conversation, ConversationStatus, Message, Turn
from governance.models import RetentionAction
from governance.retention_registry import (
    RANGE,
    DataKindHandler,
    Hold,
    PurgeCounts,
    PurgeMarker,
    Subject,
    SubjectType,
    data_kind_register,
    subject_type_register,
)
from integrations.models import ActionRun
from review.models import ReviewItem

ANONYMISED_TEXT = "[Removed under the data retention policy]"
ERASED_TEXT = "[Erased at the customer's request]"
MARKERS = (ANONYMISED_TEXT, ERASED_TEXT)
CONVERSATION_TYPE = "convo.conversation"
CONTACT_TYPE = "convo.contact"


def _valid_ids(ids: Sequence[str]) -> list[str]:
    valid = []
    for value in ids:
        try:
            valid.append(str(uuid.UUID(str(value))))
        except ValueError:
            continue
    return valid


def _marker_text(marker: PurgeMarker) -> str:
    return ERASED_TEXT if marker.policy == "erasure" else ANONYMISED_TEXT


# --- eligibility and holds -----------------------------------------------------------------------

def _closed_before(cutoff: datetime, prefix: str = "conversation__") -> Q:
    return Q(**{f"{prefix}status": ConversationStatus.CLOSED, f"{prefix}closed_at__lt": cutoff})


def _subject_q(subject: Subject | None) -> Q:
    if subject is None:
        return Q()
    if subject.type == "contact":
        return Q(conversation__contact_id=subject.id)
    if subject.type == "conversation":
        return Q(conversation_id=subject.id)
    return Q(pk__in=[])


def _held_q(holds: Sequence[Hold]) -> Q | None:
    """Rows (messages or turns: both have ``conversation`` and ``created_at``) under any hold."""
    if not holds:
        return None
    query = Q(pk__in=[])
    for hold in holds:
        dates = hold.dates_q("created_at")
        if hold.subject_type == RANGE:
            query |= dates
        elif hold.subject_type == "contact" and _valid_ids([hold.subject_id]):
            query |= Q(conversation__contact_id=hold.subject_id) & dates
        elif hold.subject_type == "conversation" and _valid_ids([hold.subject_id]):
            query |= Q(conversation_id=hold.subject_id) & dates
    return query


def _split(query: QuerySet, holds: Sequence[Hold]) -> tuple[PurgeCounts, QuerySet]:
    """Counts of the eligible rows, and the queryset of those no hold covers."""
    held = _held_q(holds)
    counts = PurgeCounts(matched=query.count())
    if held is not None:
        counts.held_back = query.filter(held).count()
        # NOT IN over ids rather than exclude(held), which mishandles rows where a held field is NULL.
        query = query.exclude(pk__in=query.filter(held).values("pk"))
    return counts, query


def _batches(query: QuerySet, *, batch_size: int, limit: int, fields: tuple[str, ...]):
    """Rows of ``query`` in id order (ids are time-ordered), ``batch_size`` at a time, at most ``limit``."""
    done, last = 0, None
    while done < limit:
        page = query.filter(pk__gt=last) if last is not None else query
        rows = list(page.order_by("pk").values_list("pk", *fields)[:min(batch_size, limit - done)])
        if not rows:
            return
        yield rows
        done += len(rows)
        last = rows[-1][0]


def _finish(counts: PurgeCounts, ids: list) -> PurgeCounts:
    counts.remaining = max(0, counts.matched - counts.held_back - counts.purged)
    if ids:
        counts.refs = {"first": str(min(ids)), "last": str(max(ids))}
    return counts


# --- messages ------------------------------------------------------------------------------------

def _messages(cutoff: datetime, action: str, subject: Subject | None) -> QuerySet:
    query = Message.objects.filter(_closed_before(cutoff), _subject_q(subject))
    if action == RetentionAction.DELETE:
        # Everything still stored, but a turn's input message that is already anonymised waits for its turn.
        return query.exclude(Q(turn__isnull=False) & Q(text__in=MARKERS))
    return query.exclude(text__in=MARKERS)


def messages_count(*, cutoff: datetime, holds: Sequence[Hold], action: str,
                   subject: Subject | None = None) -> PurgeCounts:
    counts, _ = _split(_messages(cutoff, action, subject), holds)
    return counts


def _conversations_clear(conversation_ids: set, holds: Sequence[Hold]) -> int:
    """Summary, survey comment and state of conversations none of whose messages is held."""
    held = _held_q(holds)
    if held is not None and conversation_ids:
        conversation_ids -= set(Message.objects.filter(held, conversation_id__in=conversation_ids)
                                .values_list("conversation_id", flat=True).distinct())
    if not conversation_ids:
        return 0
    return (Conversation.objects.filter(pk__in=conversation_ids)
            .exclude(summary="", csat_comment="", state={})
            .update(summary="", csat_comment="", state={}, updated_at=timezone.now()))


def messages_purge(*, cutoff: datetime, holds: Sequence[Hold], action: str, batch_size: int, limit: int,
                   marker: PurgeMarker, subject: Subject | None = None) -> PurgeCounts:
    counts, query = _split(_messages(cutoff, action, subject), holds)
    text = _marker_text(marker)
    ids, deleted, anonymised, conversations = [], 0, 0, set()
    for rows in _batches(query, batch_size=batch_size, limit=limit, fields=("conversation_id", "turn")):
        conversations |= {conversation_id for _, conversation_id, _ in rows}
        keep = [pk for pk, _, turn in rows if turn is not None or action == RetentionAction.ANONYMISE]
        drop = [pk for pk, _, turn in rows if turn is None and action == RetentionAction.DELETE]
        if keep:
            anonymised += Message.objects.filter(pk__in=keep).update(text=text, redacted_text="",
                                                                     updated_at=timezone.now())
        if drop:
            # Turn.reply points here with SET NULL; nothing else references a message.
            deleted += Message.objects.filter(pk__in=drop).delete()[1].get(Message._meta.label, 0)
        ids += [pk for pk, _, _ in rows]
    counts.purged = len(ids)
    cleared = _conversations_clear(conversations, holds)
    counts.detail = {k: v for k, v in {"deleted": deleted, "anonymised": anonymised,
                                       "conversations_cleared": cleared}.items() if v}
    return _finish(counts, ids)


# --- turns ---------------------------------------------------------------------------------------

def _turn_payload_left() -> Q:
    return (Q(tool_call__has_key="arguments") | (~Q(error="") & ~Q(error__in=MARKERS))
            | ~Q(message__text__in=MARKERS) | (Q(reply__isnull=False) & ~Q(reply__text__in=MARKERS)))


def _turns(cutoff: datetime, action: str, subject: Subject | None) -> QuerySet:
    query = Turn.objects.filter(_closed_before(cutoff), _subject_q(subject))
    if action == RetentionAction.ANONYMISE:
        query = query.filter(_turn_payload_left())
    return query


def turns_count(*, cutoff: datetime, holds: Sequence[Hold], action: str,
                subject: Subject | None = None) -> PurgeCounts:
    counts, _ = _split(_turns(cutoff, action, subject), holds)
    return counts


def turns_purge(*, cutoff: datetime, holds: Sequence[Hold], action: str, batch_size: int, limit: int,
                marker: PurgeMarker, subject: Subject | None = None) -> PurgeCounts:
    counts, query = _split(_turns(cutoff, action, subject), holds)
    text = _marker_text(marker)
    ids: list = []
    for rows in _batches(query, batch_size=batch_size, limit=limit, fields=("message_id", "reply_id")):
        turn_ids = [pk for pk, _, _ in rows]
        if action == RetentionAction.DELETE:
            Turn.objects.filter(pk__in=turn_ids).delete()
        else:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {Turn._meta.db_table} SET tool_call = tool_call - 'arguments', "  # noqa: S608 (model table)
                    "error = CASE WHEN error = '' THEN '' ELSE %s END, "
                    "sources = (SELECT coalesce(jsonb_agg(CASE WHEN jsonb_typeof(s) = 'object' "
                    "THEN s - 'text' - 'snippet' ELSE s END), '[]'::jsonb) FROM jsonb_array_elements("
                    "CASE WHEN jsonb_typeof(sources) = 'array' THEN sources ELSE '[]'::jsonb END) AS s), "
                    "updated_at = %s WHERE id = ANY(%s)",
                    [text, timezone.now(), turn_ids])
            message_ids = [m for _, message_id, reply_id in rows for m in (message_id, reply_id) if m]
            Message.objects.filter(pk__in=message_ids).exclude(text__in=MARKERS).update(
                text=text, redacted_text="", updated_at=timezone.now())
        ids += turn_ids
    counts.purged = len(ids)
    counts.detail = {("deleted" if action == RetentionAction.DELETE else "anonymised"): len(ids)} if ids else {}
    return _finish(counts, ids)


# --- subjects: customers and conversations ---------------------------------------------------------

def contact_labels(ids: Sequence[str]) -> dict[str, str]:
    valid = _valid_ids(ids)
    contacts = Contact.objects.filter(pk__in=valid) if valid else []
    return {str(c.pk): f"Customer {c}" for c in contacts}


def conversation_labels(ids: Sequence[str]) -> dict[str, str]:
    valid = _valid_ids(ids)
    conversations = Conversation.objects.filter(pk__in=valid).select_related("contact") if valid else []
    return {str(c.pk): f"Conversation …{str(c.pk)[-8:]} with {c.contact} ({c.created_at:%d %b %Y})"
            for c in conversations}


def contact_open_count(subject_id: str) -> int:
    return Conversation.objects.filter(contact_id=subject_id).exclude(status=ConversationStatus.CLOSED).count()


def conversation_open_count(subject_id: str) -> int:
    return Conversation.objects.filter(pk=subject_id).exclude(status=ConversationStatus.CLOSED).count()


def _as_text(query: QuerySet) -> QuerySet:
    return query.annotate(text_id=Cast("pk", CharField())).values("text_id")


def conversation_audit_filter(ids: Sequence[str]) -> Q:
    """Audit events about these conversations: theirs, their turns', messages', action runs' and
    review items' (as ``convo.compliance`` collects them), and those naming them in ``data``."""
    ids = _valid_ids(ids)
    if not ids:
        return Q(pk__in=[])
    return (Q(target_type=CONVERSATION_TYPE, target_id__in=ids)
            | Q(data__conversation__in=ids)
            | Q(target_type="convo.turn", target_id__in=_as_text(Turn.objects.filter(conversation_id__in=ids)))
            | Q(target_type="convo.message", target_id__in=_as_text(Message.objects.filter(conversation_id__in=ids)))
            | Q(target_type="integrations.actionrun",
                target_id__in=_as_text(ActionRun.objects.filter(subject_type=CONVERSATION_TYPE, subject_id__in=ids)))
            | Q(target_type="review.reviewitem",
                target_id__in=_as_text(ReviewItem.objects.filter(subject_type=CONVERSATION_TYPE, subject_id__in=ids))))


def contact_audit_filter(ids: Sequence[str]) -> Q:
    ids = _valid_ids(ids)
    if not ids:
        return Q(pk__in=[])
    conversations = [str(pk) for pk in Conversation.objects.filter(contact_id__in=ids).values_list("pk", flat=True)]
    return Q(target_type=CONTACT_TYPE, target_id__in=ids) | conversation_audit_filter(conversations)


def _conversation_fields_clear(query: QuerySet) -> int:
    return (query.exclude(summary="", csat_comment="", state={})
            .update(summary="", csat_comment="", state={}, updated_at=timezone.now()))


def contact_anonymise(subject_id: str, marker: PurgeMarker) -> int:
    """The customer's name, e-mail and external id, and what their conversations quote of them."""
    changed = Contact.objects.filter(pk=subject_id).exclude(name="", email="", external_id="").update(
        name="", email="", external_id="", updated_at=timezone.now())
    return changed + _conversation_fields_clear(Conversation.objects.filter(contact_id=subject_id))


def conversation_anonymise(subject_id: str, marker: PurgeMarker) -> int:
    return _conversation_fields_clear(Conversation.objects.filter(pk=subject_id))


MESSAGES = DataKindHandler(
    name="messages",
    label="Messages",
    actions=(RetentionAction.ANONYMISE, RetentionAction.DELETE),
    count=messages_count,
    purge=messages_purge,
    description="What customers, agents and the assistant wrote in closed conversations, counted from when the "
                "conversation closed. Live conversations are never touched.",
    action_notes={
        RetentionAction.ANONYMISE: "The text is replaced by a note; the conversation's summary and survey comment "
                                   "are cleared. The transcript keeps its shape.",
        RetentionAction.DELETE: "The messages are deleted. A customer message an AI turn was recorded on is "
                                "anonymised instead, until the turns policy deletes the turn.",
    },
    erasable=True,
    position=10,
)

TURNS = DataKindHandler(
    name="turns",
    label="AI turns",
    actions=(RetentionAction.ANONYMISE, RetentionAction.DELETE),
    count=turns_count,
    purge=turns_purge,
    description="The decision record of each AI answer in closed conversations: input, reply, sources, tool call.",
    action_notes={
        RetentionAction.ANONYMISE: "Input and reply texts, tool-call arguments and error texts are removed; the "
                                   "record of which versions decided what, when, at what cost stays.",
        RetentionAction.DELETE: "The decision records are deleted (their audit events stay).",
    },
    erasable=True,
    position=20,
)

CONTACT = SubjectType(name="contact", label="Customer", target_type=CONTACT_TYPE, labels=contact_labels,
                      open_count=contact_open_count, audit_filter=contact_audit_filter, anonymise=contact_anonymise)
CONVERSATION = SubjectType(name="conversation", label="Conversation", target_type=CONVERSATION_TYPE,
                           labels=conversation_labels, open_count=conversation_open_count,
                           audit_filter=conversation_audit_filter, anonymise=conversation_anonymise)


def register() -> None:
    """Called from ``ConvoConfig.ready``."""
    data_kind_register(MESSAGES)
    data_kind_register(TURNS)
    subject_type_register(CONTACT)
    subject_type_register(CONVERSATION)
