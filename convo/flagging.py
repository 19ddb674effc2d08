"""Flagging an AI answer as wrong: an agent says why and writes the answer it should have been.

One flag makes three things, linked by id:

- a **curated answer** (``knowledge.curated``) to the customer's question, so the assistant
  answers that question with the agent's words from now on (at once when the agent may
  publish in the collection, else once a publisher has published it);
- an **evaluation case** (``governance.EvaluationCase``) with the question, the bad and the
  expected answer and the model and prompt versions that answered, so the next version can be
  evaluated on it;
- a **flagged-answer review item**, opened and resolved ("corrected") by the agent, so the
  queue's history shows who corrected what.

The assistant message keeps ``data["flag"]`` so the workspace can show "Flagged" on it.

Transactions: everything that can refuse the flag is checked first, without writing, and the
correct answer is embedded (``curated_answer_prepare``, slow, outside any transaction); then
one durable transaction opens the item, stores the curated answer (``curated_answer_store``,
recording the item as its source), records the case, resolves the item, marks the message and
writes the audit event. Either all of it commits or none of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from convo.exceptions import ConvoError
from convo.guards import pii_redact
from convo.models import Conversation, Message, Role, Turn
from convo.selectors import conversation_get_for_user
from governance.models import EvaluationCase, EvaluationCategory
from governance.permissions import can_work_conversations
from governance.services import audit_event_record
from knowledge.curated import CuratedAnswerInvalid, curated_answer_clean, curated_answer_prepare, curated_answer_store
from knowledge.models import Collection, Document
from knowledge.permissions import Action, actions_on
from review.models import EscalationReason, ItemKind, ReviewItem, Team
from review.permissions import may_work_item, team_ids_for
from review.services import LIVE, review_item_open, review_item_resolve, team_default

SUBJECT_TYPE = "convo.message"
OUTCOME = "corrected"
NOTE_MAX_CHARS = 1000
ALREADY_FLAGGED = "This answer was already flagged."

# (value, label) pairs for the flag form's choice of reason.
FLAG_CATEGORIES: tuple[tuple[str, str], ...] = tuple(EvaluationCategory.choices)


class FlagError(ConvoError):
    """The answer cannot be flagged (already flagged, not an AI answer, ...)."""

    code = "flag_refused"


class FlagInvalid(FlagError):
    """The form is wrong; ``errors`` maps each field (``category``, ``correct_answer``,
    ``question``, ``note``) to its reason."""

    code = "flag_invalid"

    def __init__(self, errors: dict[str, str]):
        super().__init__(" ".join(errors.values()))
        self.errors = dict(errors)


@dataclass(frozen=True)
class FlagResult:
    review_item: ReviewItem
    document: Document
    eval_case: EvaluationCase
    document_changed: bool  # False: an identical curated answer already existed and was reused
    review_item_created: bool  # False: a flagged-answer item was already open for this message

    @property
    def published(self) -> bool:
        """Whether the assistant already answers with the correction."""
        return self.document.published


# --- reads ------------------------------------------------------------------------------------

def message_get_for_user(*, user, message_id) -> Message:
    """A message of a conversation ``user`` may see; ``Message.DoesNotExist`` otherwise (an
    unknown id, a malformed one and an invisible one look the same)."""
    try:
        message = Message.objects.select_related("conversation").get(pk=message_id)
        conversation_get_for_user(user=user, conversation_id=message.conversation_id)
    except (Message.DoesNotExist, Conversation.DoesNotExist, ValidationError, ValueError):
        raise Message.DoesNotExist("That message does not exist, or you may not see it.") from None
    return message


def flagged_messages(*, conversation) -> dict[str, dict]:
    """{message id (text): its flag} for the flagged assistant messages of a conversation, in
    one query. (A page that already holds the messages can read ``message.data["flag"]``.)"""
    rows = Message.objects.filter(conversation=conversation, role=Role.ASSISTANT, data__has_key="flag").values_list(
        "pk", "data")
    return {str(pk): data["flag"] for pk, data in rows}


def _flag_of(message: Message) -> dict | None:
    return (message.data or {}).get("flag")


def _asked(message: Message, turn: Turn | None) -> Message | None:
    """The customer message this reply answered: its turn's, else the closest one before it."""
    if turn is not None:
        return turn.message
    return (Message.objects.filter(conversation_id=message.conversation_id, role=Role.CUSTOMER,
                                   seq__lt=message.seq).order_by("-seq").first())


def _team_for(actor, conversation_id) -> Team:
    """The team whose queue records the flag, one the actor works: that of the conversation's
    latest review item they work, else their first team, else the default team."""
    mine = [str(t) for t in team_ids_for(actor)]
    if mine:
        team_id = (ReviewItem.objects.filter(subject_id=str(conversation_id), team_id__in=mine)
                   .order_by("-created_at").values_list("team_id", flat=True).first())
        return Team.objects.get(pk=team_id or mine[0])
    return team_default()


# --- the write ----------------------------------------------------------------------------------

def ai_answer_flag(*, message_id, actor, category: str, correct_answer: str, collection: Collection,
                   note: str = "", question: str | None = None) -> FlagResult:
    """Flag the assistant message ``message_id`` as wrong for ``category`` and save
    ``correct_answer`` as the curated answer to the customer's question in ``collection``.

    ``question`` replaces the customer's message as the curated question (e.g. tidied up by
    the agent); by default it is that message, with personal data redacted.

    Raises ``PermissionDenied`` (the actor may not work conversations, may not add answers to
    ``collection``, or works no team), ``Message.DoesNotExist`` (unknown or not visible),
    ``FlagInvalid`` (per-field errors) and ``FlagError`` (not an AI answer; already flagged).
    Nothing is written when any of them is raised (one exception: two people flagging the
    same answer at the same moment; the loser's curated answer is kept, see above)."""
    if not can_work_conversations(actor):
        raise PermissionDenied("Only agents, supervisors and administrators may flag answers.")
    message = message_get_for_user(user=actor, message_id=message_id)
    if message.role != Role.ASSISTANT:
        raise FlagError("Only the assistant's answers can be flagged.", code="not_an_ai_answer")
    if _flag_of(message) or EvaluationCase.objects.filter(source_type=SUBJECT_TYPE,
                                                          source_id=str(message.pk)).exists():
        raise FlagError(ALREADY_FLAGGED, code="already_flagged")

    turn = Turn.objects.select_related("message").filter(reply=message).first()
    asked = _asked(message, turn)
    errors: dict[str, str] = {}
    if category not in EvaluationCategory.values:
        errors["category"] = "Choose what is wrong with the answer."
    if question is None:
        # The question is stored in knowledge and shown to reviewers: never the customer's data.
        question = (asked.redacted_text or pii_redact(asked.text)[0]) if asked is not None else ""
        if not question:
            errors["question"] = "There is no customer question before this answer: write the question."
    note = (note or "").strip()
    if len(note) > NOTE_MAX_CHARS:
        errors["note"] = f"The note is too long: at most {NOTE_MAX_CHARS:,} characters."
    try:
        question, answer = curated_answer_clean(question=question, answer=correct_answer)
    except CuratedAnswerInvalid as exc:
        renamed = {"correct_answer" if field == "answer" else field: reason for field, reason in exc.errors.items()}
        errors = {**renamed, **errors}
    if errors:
        raise FlagInvalid(errors)
    if Action.EDIT not in actions_on(actor, collection):
        raise PermissionDenied(f"You may not add answers to the collection “{collection.name}”.")
    # An item already open for this answer is the one resolved; else a new one in a team of theirs.
    open_item = ReviewItem.objects.filter(kind=ItemKind.FLAGGED_ANSWER, subject_type=SUBJECT_TYPE,
                                          subject_id=str(message.pk), status__in=LIVE).first()
    team = _team_for(actor, message.conversation_id) if open_item is None else None
    if not may_work_item(actor, open_item or ReviewItem(team=team)):
        raise PermissionDenied("You may not flag answers: you work in no team's queue.")

    conversation_id = str(message.conversation_id)
    # Embedding first, outside the transaction (see the module docstring).
    draft = curated_answer_prepare(collection=collection, question=question, answer=answer, actor=actor,
                                   conversation_id=conversation_id)

    with transaction.atomic(durable=True):
        locked = Message.objects.select_for_update().get(pk=message.pk)
        if _flag_of(locked):  # flagged by someone else meanwhile
            raise FlagError(ALREADY_FLAGGED, code="already_flagged")
        item, item_created = review_item_open(
            kind=ItemKind.FLAGGED_ANSWER, subject_type=SUBJECT_TYPE, subject_id=str(message.pk),
            title=f"Flagged: {_clip(question, 180)}", summary=note,
            reason=EscalationReason.SAFETY_FLAG if category == EvaluationCategory.UNSAFE else "",
            data={"category": category, "conversation_id": conversation_id, "note": note,
                  "collection": str(collection.pk)},
            team=team, actor=actor,
        )
        # The answer records the item as its source; the case and the message record the answer.
        document, document_changed = curated_answer_store(draft, source_review_item=item)
        # Governance is the lowest layer and has no service for this yet: the case is written
        # here, in the same transaction as the rest of the flag.
        case = EvaluationCase.objects.create(
            question=question, expected_answer=answer, bad_answer=message.text, category=category,
            source_type=SUBJECT_TYPE, source_id=str(message.pk), conversation_id=conversation_id,
            model_version_id=turn.model_version_id if turn else None,
            prompt_version_id=turn.prompt_version_id if turn else None,
            created_by=actor, curated_document_id=str(document.pk),
        )
        item = review_item_resolve(item_id=item.pk, actor=actor, outcome=OUTCOME, note=note)
        flag = {
            "category": category, "category_label": EvaluationCategory(category).label,
            "by": actor.get_username(), "by_id": str(actor.pk), "at": timezone.now().isoformat(),
            "eval_case": str(case.pk), "curated_document": str(document.pk), "review_item": str(item.pk),
        }
        locked.data = {**(locked.data or {}), "flag": flag}
        locked.save(update_fields=["data", "updated_at"])
        audit_event_record(
            actor=actor, action="conversation.answer_flagged", target=locked,
            data={**flag, "conversation": conversation_id, "turn": str(turn.pk) if turn else "",
                  "collection": str(collection.pk), "published": document.published,
                  "model_version": str(case.model_version_id or ""),
                  "prompt_version": str(case.prompt_version_id or "")},
        )
    return FlagResult(review_item=item, document=document, eval_case=case, document_changed=document_changed,
                      review_item_created=item_created)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit - 1]}…"
