"""Actions an agent proposes from the workspace (e.g. a refund agreed in a live chat).

The agent is recorded as the proposer, so they can never approve it themselves: an action
that needs approval goes to the queue for a colleague (two, above the four-eyes line).
"""

from __future__ import annotations

import json

from django.conf import settings
from django.db import transaction

from convo.exceptions import ConversationClosed, NotAllowed
from convo.models import Conversation, ConversationStatus
from convo.services import SUBJECT_TYPE
from governance.permissions import can_work_conversations
from integrations.exceptions import InvalidParameters
from integrations.models import ActionDefinition, ActionRun, RunStatus
from integrations.services import action_run_propose
from review.models import EscalationReason, ItemKind, ReviewItem
from review.services import review_item_open

RUN_SUBJECT_TYPE = "integrations.actionrun"


def proposable_actions():
    """Actions an agent may propose: the enabled ones that change something (reads are lookups)."""
    return ActionDefinition.objects.filter(enabled=True).exclude(method__iexact="GET").order_by("title")


def _describe(params: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in params.items())


def agent_action_propose(*, conversation_id, agent, action_name: str, params_text: str, token: str) -> ActionRun:
    """Propose ``action_name`` with the JSON ``params_text`` on behalf of the customer.

    ``token`` comes from the form, so a double submit returns the first proposal. Raises
    InvalidParameters (bad JSON, unknown action, schema errors), NotAllowed, ConversationClosed."""
    from integrations.tasks import execute_action_run_enqueue

    if not can_work_conversations(agent):
        raise NotAllowed("Only agents can propose actions.")
    action = proposable_actions().filter(name=action_name).first()
    if action is None:
        raise InvalidParameters("Choose one of the actions offered.")
    try:
        params = json.loads(params_text or "")
    except ValueError:
        raise InvalidParameters("The parameters are not valid JSON: write them as {\"name\": value, …}.") from None
    if not isinstance(params, dict):
        raise InvalidParameters("The parameters must be a JSON object: {\"name\": value, …}.")
    token = str(token or "")[:64]
    if len(token) < 8:
        raise InvalidParameters("This form is out of date. Reload the page and try again.")
    with transaction.atomic(durable=True):
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        if conversation.status == ConversationStatus.CLOSED:
            raise ConversationClosed("This conversation is closed.")
        run = action_run_propose(action=action, params=params, idempotency_key=f"agent:{conversation.pk}:{token}",
                                 subject_type=SUBJECT_TYPE, subject_id=str(conversation.pk),
                                 actor_label=agent.get_username(), actor=agent)
        if run.status == RunStatus.AWAITING_APPROVAL:
            escalation = (ReviewItem.objects.filter(kind=ItemKind.ESCALATION, subject_type=SUBJECT_TYPE,
                                                    subject_id=str(conversation.pk))
                          .select_related("team").order_by("-created_at").first())
            name = agent.get_short_name() or agent.get_username()
            review_item_open(
                kind=ItemKind.ACTION_APPROVAL, subject_type=RUN_SUBJECT_TYPE, subject_id=str(run.pk),
                title=f"{action.title}: {_describe(run.params)}",
                summary=f"{name} proposes “{action.title}” with {_describe(run.params)}.",
                reason=EscalationReason.POLICY_RESTRICTION, priority=2,
                sla_minutes=settings.ESCALATION_SLA_MINUTES, team=escalation.team if escalation else None,
                data={"conversation_id": str(conversation.pk), "action": action.name, "params": run.params,
                      "proposed_by": agent.get_username()},
                actor=agent,
            )
        elif run.status == RunStatus.APPROVED:
            execute_action_run_enqueue(run.pk)
    return run


def agent_action_undo(*, conversation_id, agent, run_id, reason: str) -> ActionRun:
    """Undo a succeeded action of this conversation by its compensation action (e.g. a refund
    reversal). The agent is the compensating run's proposer, so a colleague approves it when its
    policy needs approval. Raises ActionStateError / InvalidParameters (nothing changed)."""
    from integrations.services import action_run_compensate

    if not can_work_conversations(agent):
        raise NotAllowed("Only agents can undo actions.")
    with transaction.atomic(durable=True):
        run = ActionRun.objects.select_related("action").get(pk=run_id, subject_type=SUBJECT_TYPE,
                                                             subject_id=str(conversation_id))
        compensating = action_run_compensate(run_id=run.pk, actor=agent, reason=reason)
        if compensating.status == RunStatus.AWAITING_APPROVAL:
            escalation = (ReviewItem.objects.filter(kind=ItemKind.ESCALATION, subject_type=SUBJECT_TYPE,
                                                    subject_id=str(conversation_id))
                          .select_related("team").order_by("-created_at").first())
            action = compensating.action
            name = agent.get_short_name() or agent.get_username()
            review_item_open(
                kind=ItemKind.ACTION_APPROVAL, subject_type=RUN_SUBJECT_TYPE, subject_id=str(compensating.pk),
                title=f"{action.title} (undoing {run.action.title}): {_describe(compensating.params)}",
                summary=f"{name} asks to undo “{run.action.title}”: {reason.strip()}",
                reason=EscalationReason.POLICY_RESTRICTION, priority=2,
                sla_minutes=settings.ESCALATION_SLA_MINUTES, team=escalation.team if escalation else None,
                data={"conversation_id": str(conversation_id), "action": action.name,
                      "params": compensating.params, "proposed_by": agent.get_username(),
                      "compensation_of": str(run.pk)},
                actor=agent,
            )
    return compensating
