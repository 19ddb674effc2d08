"""Writes of the conversation app. Consumers, views, the API and tasks call these."""

from __future__ import annotations

import re
import unicodedata
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from convo.broadcast import OFFICE_GROUP, chat_group, group_send_on_commit, office_team_group
from convo.exceptions import ConversationClosed, MessageRejected, NotAllowed, RateLimited, SurveyRejected
from convo.models import (
    CSAT_COMMENT_MAX_CHARS,
    CannedResponse,
    Channel,
    Contact,
    Conversation,
    ConversationStatus,
    Message,
    Role,
    Turn,
)
from governance.permissions import can_work_conversations
from governance.services import audit_event_record
from integrations.webhooks import webhook_event_emit
from review.models import ItemKind, ReviewItem
from review.services import review_claims_renew_for_subject, review_item_open, review_items_resolve_for_subject

TOKEN_SALT = "tandem.conversation"  # noqa: S105 (a signing salt, not a secret)
SUBJECT_TYPE = "convo.conversation"
AI_DISCLOSURE = (
    "Hi! I'm the Brightwater assistant, an AI. I answer from our help centre and can check orders "
    "or start a refund. Ask for a person at any time and I'll bring one in."
)
CSAT_QUESTION = "How did we do? Rate this conversation from 1 (very poor) to 5 (excellent)."
CSAT_ALREADY_ANSWERED = "You already rated this conversation. Thank you!"


# --- identity ---------------------------------------------------------------------------

def conversation_token(conversation: Conversation) -> str:
    """A bearer token for the customer's side of one conversation (signed, not stored)."""
    return signing.dumps(str(conversation.pk), salt=TOKEN_SALT, compress=True)


def conversation_id_from_token(token: str) -> str | None:
    try:
        return signing.loads(token, salt=TOKEN_SALT)
    except signing.BadSignature:
        return None


# --- serialisation of outbound events ------------------------------------------------------

def message_payload(message: Message) -> dict:
    return {
        "id": str(message.pk),
        "seq": message.seq,
        "role": message.role,
        "text": message.text,
        "sources": message.sources,
        "author": message.author.get_short_name() or message.author.get_username() if message.author_id else None,
        "created_at": message.created_at.isoformat(),
        "turn_id": message.data.get("turn_id"),
        "model_ms": message.data.get("model_ms"),
        "kind": message.data.get("kind", "text"),
        "action_run_id": message.data.get("action_run_id"),
        # The survey renders from its own message, so a reload shows it answered or not.
        "csat": ({"answered": bool(message.data.get("answered")), "score": message.data.get("score")}
                 if message.data.get("kind") == "csat_request" else None),
    }


def _broadcast_message(message: Message) -> None:
    payload = message_payload(message)
    group_send_on_commit(chat_group(message.conversation_id), {"type": "message.new", "message": payload})
    event = {"type": "conversation.updated", "conversation_id": str(message.conversation_id), "seq": message.seq}
    for group in _office_groups_of(message.conversation_id):
        group_send_on_commit(group, event)


def _broadcast_status(conversation: Conversation) -> None:
    event = {"type": "conversation.status", "conversation_id": str(conversation.pk), "status": conversation.status,
             "label": conversation.get_status_display()}
    group_send_on_commit(chat_group(conversation.pk), event)
    for group in _office_groups_of(conversation.pk):
        group_send_on_commit(group, event)


# --- writes -------------------------------------------------------------------------------

def message_append(*, conversation: Conversation, role: str, text: str, client_id: str = "", author=None,
                    sources: list | None = None, data: dict | None = None) -> Message:
    """Append with the next sequence number; the conversation row is the lock."""
    Conversation.objects.filter(pk=conversation.pk).update(last_seq=F("last_seq") + 1, updated_at=timezone.now())
    seq = Conversation.objects.values_list("last_seq", flat=True).get(pk=conversation.pk)
    conversation.last_seq = seq
    message = Message.objects.create(conversation=conversation, seq=seq, role=role, text=text, client_id=client_id,
                                     author=author, sources=sources or [], data=data or {})
    _broadcast_message(message)
    return message


def conversation_start(*, channel: str = Channel.WEB, contact: Contact | None = None) -> Conversation:
    """A new conversation, opened with the AI disclosure (recorded on the conversation)."""
    with transaction.atomic():
        contact = contact or Contact.objects.create()
        conversation = Conversation.objects.create(contact=contact, channel=channel, ai_disclosed=True)
        message_append(conversation=conversation, role=Role.ASSISTANT, text=AI_DISCLOSURE,
                        data={"kind": "disclosure"})
        audit_event_record(action="conversation.started", target=conversation,
                           data={"channel": channel, "ai_disclosed": True})
    return conversation


def _printable(text: str) -> str:
    """Drop control characters other than newlines and tabs; keep everything printable."""
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C").strip()


def _clean_text(text) -> str:
    if not isinstance(text, str):
        raise MessageRejected("Messages must be text.", code="not_text")
    text = _printable(text)
    if not text:
        raise MessageRejected("Your message is empty.", code="empty")
    if len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise MessageRejected(
            f"Your message is too long ({len(text)} characters); the limit is {settings.CHAT_MAX_MESSAGE_CHARS}.",
            code="too_long",
        )
    return text


def message_receive(*, conversation_id, text, client_id: str = "") -> tuple[Message, bool]:
    """Store a customer message and, if the assistant is in charge, start a turn after commit.

    Returns (message, created). Re-sending the same ``client_id`` returns the stored message
    without a second turn."""
    from convo.dispatch import turn_dispatch

    text = _clean_text(text)
    client_id = str(client_id or "")[:64]
    with transaction.atomic(durable=True):
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        if client_id:
            existing = Message.objects.filter(conversation=conversation, client_id=client_id).first()
            if existing:
                return existing, False
        if conversation.status == ConversationStatus.CLOSED:
            raise ConversationClosed("This conversation is closed. Start a new one to keep chatting.")
        window = timezone.now() - timedelta(minutes=1)
        recent = Message.objects.filter(conversation=conversation, role=Role.CUSTOMER, created_at__gte=window).count()
        if recent >= settings.CHAT_RATE_LIMIT_PER_MINUTE:
            raise RateLimited("You're sending messages very fast. Please wait a moment and try again.")
        try:
            with transaction.atomic():
                message = message_append(conversation=conversation, role=Role.CUSTOMER, text=text,
                                          client_id=client_id)
        except IntegrityError:
            return Message.objects.get(conversation=conversation, client_id=client_id), False
        if conversation.status == ConversationStatus.BOT:
            turn = Turn.objects.create(conversation=conversation, message=message)
            message.data = {"turn_id": str(turn.pk)}
            message.save(update_fields=["data"])
            transaction.on_commit(lambda: turn_dispatch(str(turn.pk)))
    return message, True


def _require_worker(user) -> None:
    if not can_work_conversations(user):
        raise NotAllowed("Only agents can do this.")


def conversation_escalate(*, conversation: Conversation, reason: str, summary: str, title: str,
                          priority: int = 2, data: dict | None = None, actor=None) -> None:
    """Hand the conversation to people: status handoff and a review item. Runs in the caller's
    transaction."""
    if conversation.status == ConversationStatus.BOT:
        conversation.status = ConversationStatus.HANDOFF
    conversation.summary = summary
    conversation.save(update_fields=["status", "summary", "updated_at"])
    item, created = review_item_open(
        kind=ItemKind.ESCALATION, subject_type=SUBJECT_TYPE, subject_id=str(conversation.pk), title=title,
        summary=summary, reason=reason, priority=priority, sla_minutes=settings.ESCALATION_SLA_MINUTES,
        data=data or {}, actor=actor,
    )
    audit_event_record(actor=actor, action="conversation.escalated", target=conversation,
                       data={"reason": reason, "review_item": str(item.pk), "new_item": created})
    if created:
        webhook_event_emit(event="conversation.escalated", payload={
            "conversation_id": str(conversation.pk), "reason": reason, "priority": priority, "title": title,
            "review_item_id": str(item.pk)})
    _broadcast_status(conversation)


def conversation_takeover(*, conversation_id, agent) -> Conversation:
    """An agent joins: the assistant stops answering until the agent hands back."""
    _require_worker(agent)
    with transaction.atomic(durable=True):
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        if conversation.status == ConversationStatus.CLOSED:
            raise ConversationClosed("This conversation is closed.")
        if conversation.status == ConversationStatus.HUMAN and conversation.assigned_agent_id not in (None, agent.pk):
            raise NotAllowed(f"{conversation.assigned_agent} is already handling this conversation.")
        conversation.status = ConversationStatus.HUMAN
        conversation.assigned_agent = agent
        conversation.save(update_fields=["status", "assigned_agent", "updated_at"])
        name = agent.get_short_name() or agent.get_username()
        message_append(conversation=conversation, role=Role.SYSTEM, text=f"{name} from our team has joined the chat.",
                        data={"kind": "agent_joined"})
        audit_event_record(actor=agent, action="conversation.taken_over", target=conversation)
        _broadcast_status(conversation)
    return conversation


def agent_reply(*, conversation_id, agent, text) -> Message:
    _require_worker(agent)
    text = _clean_text(text)
    with transaction.atomic(durable=True):
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        if conversation.status == ConversationStatus.CLOSED:
            raise ConversationClosed("This conversation is closed.")
        if conversation.status != ConversationStatus.HUMAN or conversation.assigned_agent_id != agent.pk:
            raise NotAllowed("Take over the conversation before replying.")
        message = message_append(conversation=conversation, role=Role.AGENT, text=text, author=agent)
        review_claims_renew_for_subject(subject_type=SUBJECT_TYPE, subject_id=str(conversation.pk), actor=agent)
        audit_event_record(actor=agent, action="conversation.agent_replied", target=conversation,
                           data={"message": str(message.pk)})
    return message


def conversation_hand_back(*, conversation_id, agent, needed_human: bool | None = None) -> Conversation:
    _require_worker(agent)
    with transaction.atomic(durable=True):
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        if conversation.status == ConversationStatus.CLOSED:
            raise ConversationClosed("This conversation is closed.")
        conversation.status = ConversationStatus.BOT
        conversation.assigned_agent = None
        conversation.state = {}
        conversation.save(update_fields=["status", "assigned_agent", "state", "updated_at"])
        message_append(conversation=conversation, role=Role.SYSTEM,
                        text="You're back with the assistant. Ask for a person again at any time.",
                        data={"kind": "handed_back"})
        review_items_resolve_for_subject(subject_type=SUBJECT_TYPE, subject_id=str(conversation.pk), actor=agent,
                                         outcome="handed_back", kinds=[ItemKind.ESCALATION], needed_human=needed_human)
        audit_event_record(actor=agent, action="conversation.handed_back", target=conversation)
        _broadcast_status(conversation)
    return conversation


def conversation_close(*, conversation_id, agent, resolution: str = "resolved",
                       needed_human: bool | None = None) -> Conversation:
    """Close; ``needed_human`` answers, for an escalation, whether a person was really needed."""
    _require_worker(agent)
    with transaction.atomic(durable=True):
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        if conversation.status == ConversationStatus.CLOSED:
            raise ConversationClosed("This conversation is already closed.")
        # No survey for a chat the customer never wrote in.
        ask_csat = Message.objects.filter(conversation=conversation, role=Role.CUSTOMER).exists()
        conversation.status = ConversationStatus.CLOSED
        conversation.resolution = resolution[:40]
        conversation.closed_at = timezone.now()
        if ask_csat:
            conversation.csat_requested_at = conversation.closed_at
        conversation.save(update_fields=["status", "resolution", "closed_at", "csat_requested_at", "updated_at"])
        message_append(conversation=conversation, role=Role.SYSTEM,
                        text="This conversation has been closed. Thanks for chatting with us!",
                        data={"kind": "closed"})
        if ask_csat:
            message_append(conversation=conversation, role=Role.SYSTEM, text=CSAT_QUESTION,
                            data={"kind": "csat_request"})
        review_items_resolve_for_subject(subject_type=SUBJECT_TYPE, subject_id=str(conversation.pk), actor=agent,
                                         outcome=resolution, kinds=[ItemKind.ESCALATION], needed_human=needed_human)
        audit_event_record(actor=agent, action="conversation.closed", target=conversation,
                           data={"resolution": resolution, "csat_requested": ask_csat})
        _broadcast_status(conversation)
    return conversation


def assistant_message_post(*, conversation_id, text: str, data: dict | None = None, sources: list | None = None,
                           role: str = Role.ASSISTANT) -> Message:
    """A message from the system side outside a turn (e.g. an action result after approval)."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        return message_append(conversation=conversation, role=role, text=text, data=data, sources=sources)


# --- satisfaction survey ------------------------------------------------------------------

def _csat_clean(score, comment) -> tuple[int, str]:
    # bool is an int in Python; JSON true must not count as a rating of 1.
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise SurveyRejected("Please choose a rating from 1 (very poor) to 5 (excellent).", code="csat_invalid_score")
    if comment is None:
        comment = ""
    if not isinstance(comment, str):
        raise SurveyRejected("Your comment must be text.", code="csat_invalid_comment")
    comment = _printable(comment)
    if len(comment) > CSAT_COMMENT_MAX_CHARS:
        raise SurveyRejected(
            f"Your comment is too long ({len(comment)} characters); the limit is {CSAT_COMMENT_MAX_CHARS}.",
            code="csat_comment_too_long")
    return score, comment


def _office_groups_of(conversation_id) -> list[str]:
    """Those who see every queue, and the teams whose review items concern the conversation."""
    team_ids = (ReviewItem.objects.filter(subject_type=SUBJECT_TYPE, subject_id=str(conversation_id))
                .exclude(team=None).values_list("team_id", flat=True).distinct())
    return [OFFICE_GROUP, *(office_team_group(team_id) for team_id in team_ids)]


def csat_submit(*, conversation_id, score, comment: str = "") -> Conversation:
    """The customer's answer to the survey posted on close: stored once, never changed.

    Refusals (a bad score or comment, no survey asked, already answered) raise SurveyRejected
    and change nothing."""
    score, comment = _csat_clean(score, comment)
    with transaction.atomic(durable=True):
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        if conversation.csat_requested_at is None:
            raise SurveyRejected("There is no survey to answer in this conversation.", code="csat_not_requested")
        if conversation.csat_submitted_at is not None:
            raise SurveyRejected(CSAT_ALREADY_ANSWERED, code="csat_already_submitted")
        conversation.csat_score = score
        conversation.csat_comment = comment
        conversation.csat_submitted_at = timezone.now()
        conversation.save(update_fields=["csat_score", "csat_comment", "csat_submitted_at", "updated_at"])
        # The survey message carries its answered state, so the chat renders it after a reload.
        survey = (Message.objects.filter(conversation=conversation, data__kind="csat_request")
                  .select_related("author").order_by("-seq").first())
        if survey is not None:
            survey.data = {**survey.data, "answered": True, "score": score}
            survey.save(update_fields=["data", "updated_at"])
            group_send_on_commit(chat_group(conversation.pk), {"type": "message.new", "message": message_payload(survey)})
        # The comment is the customer's own words (it may hold personal data): the append-only
        # audit trail records only its length; the text stays on the conversation.
        audit_event_record(action="conversation.csat_submitted", target=conversation,
                           data={"score": score, "comment_chars": len(comment)})
        event = {"type": "conversation.csat", "conversation_id": str(conversation.pk), "score": score}
        for group in _office_groups_of(conversation.pk):
            group_send_on_commit(group, event)
    return conversation


# --- canned responses ---------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def canned_response_render(*, response: CannedResponse, conversation: Conversation, agent) -> str:
    """The response's text with ``{customer_name}`` and ``{agent_name}`` filled in.

    Not ``str.format``: text written in the admin must never reach attributes (``{agent.password}``)
    or raise on a stray brace. Unknown placeholders stay as typed."""
    customer_name = (conversation.contact.name or "").strip() if conversation.contact_id else ""
    agent_name = ((agent.get_short_name() or agent.get_username()) if agent is not None else "").strip()
    values = {"customer_name": customer_name or "there", "agent_name": agent_name or "our team"}
    return _PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)), response.text)
