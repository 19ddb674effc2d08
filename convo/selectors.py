"""Reads of the conversation app for a request."""

from __future__ import annotations

from django.db.models import Q, QuerySet, UUIDField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast

from convo.models import CannedResponse, Conversation, ConversationStatus, Message, Turn
from governance.permissions import can_read_conversations, user_roles
from integrations.models import ActionRun
from integrations.selectors import action_runs_with_approvals
from review.models import ReviewItem
from review.permissions import items_visible_filter, sees_every_queue, team_ids_for

SUBJECT_TYPE = "convo.conversation"


def conversation_exists(*, conversation_id) -> bool:
    return Conversation.objects.filter(pk=conversation_id).exists()


def conversation_list_for_user(*, user) -> QuerySet[Conversation]:
    """Compliance officers and administrators see every conversation; agents and supervisors
    those behind their teams' review items, and those assigned to them."""
    if not can_read_conversations(user):
        return Conversation.objects.none()
    qs = Conversation.objects.all()
    visible = items_visible_filter(user)
    if visible is not None:
        team_items = ReviewItem.objects.filter(visible)
        escalated = team_items.filter(subject_type=SUBJECT_TYPE).values(cid=Cast("subject_id", UUIDField()))
        approvals = team_items.filter(kind="action_approval").values(
            cid=Cast(KeyTextTransform("conversation_id", "data"), UUIDField()))
        qs = qs.filter(Q(assigned_agent=user) | Q(pk__in=escalated) | Q(pk__in=approvals))
    return qs


def conversation_visible_to(*, user, conversation_id) -> bool:
    return conversation_list_for_user(user=user).filter(pk=conversation_id).exists()


def conversation_get_for_user(*, user, conversation_id) -> Conversation:
    """Raises Conversation.DoesNotExist when it does not exist or the user may not see it."""
    return conversation_list_for_user(user=user).select_related("contact", "assigned_agent").get(pk=conversation_id)


def conversation_inbox(*, user) -> QuerySet[Conversation]:
    return (
        conversation_list_for_user(user=user)
        .filter(status__in=[ConversationStatus.HANDOFF, ConversationStatus.HUMAN])
        .select_related("contact", "assigned_agent")
        .order_by("-updated_at")
    )


def messages_after(*, conversation_id, after_seq: int = 0, limit: int = 200) -> list[dict]:
    from convo.services import message_payload

    rows = Message.objects.filter(conversation_id=conversation_id, seq__gt=after_seq).select_related("author")
    return [message_payload(m) for m in rows.order_by("seq")[:limit]]


def conversation_transcript(*, conversation: Conversation) -> list[dict]:
    """Messages with the AI turn that produced each reply (sources, confidence, versions)."""
    messages = list(conversation.messages.select_related("author").order_by("seq"))
    turns = {
        str(t.reply_id): t
        for t in Turn.objects.filter(conversation=conversation, reply__isnull=False)
        .select_related("model_version", "prompt_version")
    }
    return [{"message": m, "turn": turns.get(str(m.pk))} for m in messages]


def action_runs_for_conversation(*, conversation: Conversation) -> list[ActionRun]:
    """The conversation's action runs, newest first, with their approvals (two queries)."""
    return list(action_runs_with_approvals(
        ActionRun.objects.filter(subject_type=SUBJECT_TYPE, subject_id=str(conversation.pk))).order_by("-created_at"))


def pending_approvals_for_user(*, user) -> QuerySet[ReviewItem]:
    from review.selectors import review_item_list_for_user

    return review_item_list_for_user(user=user).filter(kind="action_approval")


def action_run_get_for_user(*, user, run_id) -> ActionRun:
    """An action run of a conversation the user may see."""
    run = ActionRun.objects.select_related("action").get(pk=run_id, subject_type=SUBJECT_TYPE)
    conversation_get_for_user(user=user, conversation_id=run.subject_id)
    return run


def canned_responses_for_user(*, user) -> QuerySet[CannedResponse]:
    """The active canned responses ``user`` may insert: those for everyone plus those of the
    teams they work or supervise; compliance officers and administrators get every team's."""
    if not user_roles(user):
        return CannedResponse.objects.none()
    qs = CannedResponse.objects.filter(active=True)
    if not sees_every_queue(user):
        qs = qs.filter(Q(team__isnull=True) | Q(team_id__in=team_ids_for(user)))
    return qs.order_by("title", "shortcut")


__all__ = [
    "conversation_exists", "conversation_list_for_user", "conversation_visible_to", "conversation_get_for_user", "conversation_inbox",
    "messages_after", "conversation_transcript", "action_runs_for_conversation", "pending_approvals_for_user",
    "action_run_get_for_user", "canned_responses_for_user",
]
