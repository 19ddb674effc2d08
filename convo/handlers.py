"""How the conversation app plugs into the lower apps (registered in ConvoConfig.ready)."""

from __future__ import annotations

import logging

from django.db import transaction
from django.urls import reverse

from integrations import registry as integrations_registry
from integrations.models import ActionRun
from knowledge.embedding_spaces import on_space_activated
from review.models import ItemKind
from review.registry import ItemChange, KindHandler, SubjectHandler, on_item_changed, register_kind, register_subject

logger = logging.getLogger(__name__)


def _conversation_url(subject_id: str) -> str:
    return reverse("office:conversation", args=[subject_id])


def _item_in_conversation_url(item) -> str:
    """Approval and flagged-answer items keep their conversation's id: link without a query."""
    conversation_id = (item.data or {}).get("conversation_id")
    if not conversation_id:
        return ""
    anchor = f"#m-{item.subject_id}" if item.subject_type == "convo.message" else ""
    return reverse("office:conversation", args=[conversation_id]) + anchor


def _message_url(subject_id: str) -> str:
    from convo.models import Message

    conversation_id = Message.objects.filter(pk=subject_id).values_list("conversation_id", flat=True).first()
    return f"{reverse('office:conversation', args=[conversation_id])}#m-{subject_id}" if conversation_id else ""


def _action_run_url(subject_id: str) -> str:
    conversation_id = ActionRun.objects.filter(pk=subject_id).values_list("subject_id", flat=True).first()
    return reverse("office:conversation", args=[conversation_id]) if conversation_id else ""


def register() -> None:
    from convo.services import SUBJECT_TYPE

    register_subject(SubjectHandler(subject_type=SUBJECT_TYPE, url=_conversation_url))
    register_subject(SubjectHandler(subject_type="integrations.actionrun", url=_action_run_url,
                                    item_url=_item_in_conversation_url))
    register_subject(SubjectHandler(subject_type="convo.message", url=_message_url,
                                    item_url=_item_in_conversation_url))
    integrations_registry.on_run_settled(_on_run_settled)
    on_space_activated(intent_examples_reembed)
    on_item_changed(review_item_broadcast)
    # Escalations close with the conversation's resolution code (free, as the API allows);
    # approvals and flags have fixed outcomes.
    register_kind(KindHandler(kind=ItemKind.ESCALATION))
    register_kind(KindHandler(kind=ItemKind.ACTION_APPROVAL,
                              outcomes=(("approved", "Approved"), ("rejected", "Rejected"),
                                        ("expired", "Expired"))))
    register_kind(KindHandler(kind=ItemKind.FLAGGED_ANSWER, outcomes=(("corrected", "Corrected"),)))
    register_evaluation()


def register_evaluation() -> None:
    """Shadow disagreements: a turn subject, the reviewer's verdicts (kept with the evaluation
    result), the side-by-side page's review block; and, in the embedded default, the relay loop
    continues evaluation runs started from a page (``convo.evaluation``)."""
    from config.periodic import relay_job_register
    from convo import evaluation
    from governance.evaluation import register_disagreement_review

    register_subject(SubjectHandler(subject_type=evaluation.TURN_SUBJECT_TYPE, url=evaluation.turn_url,
                                    item_url=evaluation.shadow_item_url))
    register_kind(KindHandler(kind=ItemKind.SHADOW_DISAGREEMENT, outcomes=evaluation.OUTCOMES,
                              on_resolved=evaluation.disagreement_resolved))
    register_disagreement_review(evaluation.disagreement_review())
    relay_job_register("evaluation-runs", evaluation.evaluation_runs_continue, every_s=5)


def review_item_broadcast(change: ItemChange) -> None:
    """Tell the open workspaces of the item's team (and those who see every queue) that the
    queue changed; they re-fetch what they may see. Runs after commit."""
    from convo.broadcast import OFFICE_GROUP, group_send_now, office_team_group

    event = {"type": "queue.updated", "item_id": change.item_id, "kind": change.kind, "event": change.event,
             "status": change.status, "subject_id": change.subject_id}
    group_send_now(OFFICE_GROUP, event)
    if change.team_id:
        group_send_now(office_team_group(change.team_id), event)


def intent_examples_reembed(spec) -> None:
    """Re-embed every intent example phrase with the model the knowledge index switched to,
    so that a customer's message (embedded with the configured model) is compared like with like."""
    from convo.models import IntentExample
    from knowledge.embeddings import embed_texts

    column = IntentExample._meta.get_field("embedding").dimensions
    if spec.dimensions != column:
        logger.error("intent examples hold %s-dimension vectors; %s cannot replace them", column, spec)
        return
    examples = list(IntentExample.objects.only("id", "text"))
    for example, vector in zip(examples, embed_texts([e.text for e in examples], spec=spec), strict=True):
        example.embedding = vector
    IntentExample.objects.bulk_update(examples, ["embedding"], batch_size=200)
    logger.info("re-embedded %d intent examples with %s", len(examples), spec)


def _on_run_settled(run_id: str) -> None:
    from convo.tasks import notify_action_settled

    notify_action_settled.delay(run_id)


def action_run_announce(*, run_id: str) -> None:
    """Tell the customer how an approved (or rejected, or expired) action ended, once."""
    from convo.pipeline import action_result_text
    from convo.services import SUBJECT_TYPE, assistant_message_post

    run = ActionRun.objects.select_related("action").get(pk=run_id)
    if run.subject_type != SUBJECT_TYPE or not run.requires_approval:
        return  # runs executed inside a turn are reported by that turn
    from convo.models import Conversation, Message

    with transaction.atomic():
        Conversation.objects.select_for_update().filter(pk=run.subject_id).first()
        already = Message.objects.filter(conversation_id=run.subject_id, data__action_run_id=str(run.pk),
                                         data__kind__in=["action_done", "action_failed", "action_rejected",
                                                       "action_expired"]).exists()
        if already:
            return
        kind = {"succeeded": "action_done", "rejected": "action_rejected",
                "expired": "action_expired"}.get(run.status, "action_failed")
        assistant_message_post(conversation_id=run.subject_id, text=action_result_text(run),
                               data={"kind": kind, "action_run_id": str(run.pk)})
        if run.status == "expired":
            # Nobody decided in time: the approval item leaves the queue with the run.
            from review.services import review_items_resolve_for_subject

            review_items_resolve_for_subject(subject_type="integrations.actionrun", subject_id=str(run.pk),
                                             actor=None, outcome="expired")
        if run.status == "failed" and not (run.http_status and 400 <= run.http_status < 500):
            # The customer was told a person will follow up: make it so.
            from convo.services import conversation_escalate
            from review.models import EscalationReason

            conversation = Conversation.objects.select_for_update().get(pk=run.subject_id)
            conversation_escalate(
                conversation=conversation, reason=EscalationReason.ACTION_FAILURE, priority=1,
                title=f"{EscalationReason.ACTION_FAILURE.label}: {run.action.title}",
                summary=f"Approved action “{run.action.title}” failed: {run.error}",
                data={"action_run_id": str(run.pk)},
            )
