"""Runs awaiting approval expire after ACTION_APPROVAL_EXPIRES_HOURS
(``integrations.services.action_runs_expire``): the run is expired by "policy", the customer is
told nothing was done, and the approval item leaves the queue resolved "expired".

Celery is eager here (config.settings.test): the settled handler runs in the on-commit hook."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from convo.models import Decision, Message
from governance.models import AuditEvent
from integrations.exceptions import ActionStateError
from integrations.models import ActionApproval, ActionRun, ActionRunEvent, RunStatus
from integrations.services import action_run_approve, action_runs_expire
from review.models import ItemKind, ItemStatus, ReviewItem

pytestmark = pytest.mark.django_db

REFUND_REQUEST = ("I want my money back for order BW-10003, 40 euros", "The zip broke after a week")


@pytest.fixture
def pending_refund(say, customer_conversation):
    """A refund the assistant proposed, waiting for a person's approval (as in test_office)."""
    say(REFUND_REQUEST[0])
    turn = say(REFUND_REQUEST[1])
    assert turn.decision == Decision.APPROVAL
    run = ActionRun.objects.get(pk=turn.action_run_id)
    assert run.status == RunStatus.AWAITING_APPROVAL
    return run


def _age(run: ActionRun, hours: float) -> None:
    ActionRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(hours=hours))


def _sweep(django_capture_on_commit_callbacks) -> int:
    with django_capture_on_commit_callbacks(execute=True):
        return action_runs_expire()


def _approval_item(run: ActionRun) -> ReviewItem:
    return ReviewItem.objects.get(kind=ItemKind.ACTION_APPROVAL, subject_type="integrations.actionrun",
                                  subject_id=str(run.pk))


def _state(run: ActionRun) -> dict:
    run.refresh_from_db()
    item = _approval_item(run)
    return {
        "run": (run.status, run.error, run.finished_at, run.updated_at, run.approved_by_id),
        "events": ActionRunEvent.objects.filter(run=run).count(),
        "approvals": ActionApproval.objects.filter(run=run).count(),
        "audit": AuditEvent.objects.count(),
        "messages": list(Message.objects.filter(conversation_id=run.subject_id).values_list("seq", "text")),
        "item": (item.status, item.outcome, item.resolved_at),
    }


def test_an_old_pending_run_expires_and_the_customer_is_told(pending_refund, settings,
                                                              django_capture_on_commit_callbacks):
    settings.ACTION_APPROVAL_EXPIRES_HOURS = 72
    run = pending_refund
    assert _approval_item(run).status != ItemStatus.RESOLVED
    _age(run, 73)

    assert _sweep(django_capture_on_commit_callbacks) == 1

    run.refresh_from_db()
    assert run.status == RunStatus.EXPIRED
    assert run.finished_at is not None
    assert run.error == "Not approved within 72 hours"
    event = ActionRunEvent.objects.filter(run=run).order_by("created_at").last()
    assert (event.from_status, event.to_status, event.actor_label) == (
        RunStatus.AWAITING_APPROVAL, RunStatus.EXPIRED, "policy")
    audit = AuditEvent.objects.get(action="action_run.expired", target_id=str(run.pk))
    assert audit.actor_label == "policy"
    assert audit.data["from"] == RunStatus.AWAITING_APPROVAL

    told = Message.objects.filter(conversation_id=run.subject_id, data__action_run_id=str(run.pk),
                                  data__kind="action_expired")
    assert told.count() == 1
    text = told.get().text
    assert "could not review your request in time" in text
    assert "nothing was done" in text
    assert "approve" not in text.lower()  # not worded as a rejection

    item = _approval_item(run)
    assert (item.status, item.outcome) == (ItemStatus.RESOLVED, "expired")


def test_a_recent_pending_run_does_not_expire(pending_refund, settings, django_capture_on_commit_callbacks):
    settings.ACTION_APPROVAL_EXPIRES_HOURS = 72
    _age(pending_refund, 71)
    before = _state(pending_refund)

    assert _sweep(django_capture_on_commit_callbacks) == 0
    assert _state(pending_refund) == before
    assert pending_refund.status == RunStatus.AWAITING_APPROVAL


def test_now_is_the_reference_time(pending_refund, settings, django_capture_on_commit_callbacks):
    settings.ACTION_APPROVAL_EXPIRES_HOURS = 1
    with django_capture_on_commit_callbacks(execute=True):
        assert action_runs_expire(now=timezone.now() + timedelta(minutes=30)) == 0
        assert action_runs_expire(now=timezone.now() + timedelta(hours=2)) == 1
    pending_refund.refresh_from_db()
    assert pending_refund.status == RunStatus.EXPIRED
    assert pending_refund.error == "Not approved within 1 hour"


def test_zero_switches_expiry_off(pending_refund, settings, django_capture_on_commit_callbacks):
    settings.ACTION_APPROVAL_EXPIRES_HOURS = 0
    _age(pending_refund, 24 * 365)
    before = _state(pending_refund)

    assert _sweep(django_capture_on_commit_callbacks) == 0
    assert _state(pending_refund) == before
    assert pending_refund.status == RunStatus.AWAITING_APPROVAL


def test_a_second_sweep_changes_nothing(pending_refund, settings, django_capture_on_commit_callbacks):
    settings.ACTION_APPROVAL_EXPIRES_HOURS = 72
    _age(pending_refund, 100)
    assert _sweep(django_capture_on_commit_callbacks) == 1
    after_first = _state(pending_refund)

    assert _sweep(django_capture_on_commit_callbacks) == 0
    assert _state(pending_refund) == after_first


def test_the_announcement_is_not_repeated(pending_refund, settings, django_capture_on_commit_callbacks):
    from convo.handlers import action_run_announce

    settings.ACTION_APPROVAL_EXPIRES_HOURS = 72
    _age(pending_refund, 100)
    assert _sweep(django_capture_on_commit_callbacks) == 1
    before = _state(pending_refund)

    action_run_announce(run_id=str(pending_refund.pk))  # a redelivered notify_action_settled
    assert _state(pending_refund) == before


def test_approving_an_expired_run_is_refused(pending_refund, users, settings, django_capture_on_commit_callbacks):
    settings.ACTION_APPROVAL_EXPIRES_HOURS = 72
    _age(pending_refund, 100)
    assert _sweep(django_capture_on_commit_callbacks) == 1
    before = _state(pending_refund)

    with django_capture_on_commit_callbacks(execute=True), \
            pytest.raises(ActionStateError, match="This action is expired, not awaiting approval"):
        action_run_approve(run_id=pending_refund.pk, actor=users["agent"])

    assert _state(pending_refund) == before
    assert pending_refund.status == RunStatus.EXPIRED


def test_the_task_and_the_relay_job_are_registered(settings):
    from config.periodic import relay_jobs
    from integrations.tasks import expire_action_runs

    assert expire_action_runs.name == "integrations.expire_action_runs"
    assert settings.CELERY_BEAT_SCHEDULE["expire-action-runs"] == {
        "task": "integrations.expire_action_runs", "schedule": 300.0}
    assert relay_jobs()["expire-action-runs"][1] == 300.0
