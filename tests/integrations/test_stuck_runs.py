"""Runs left approved or executing with nothing queued to finish them are picked up
(``integrations.services.action_runs_reconcile_stuck``): a process that died between the
proposal's commit and the inline execution of a run needing no approval loses nothing.

Celery is eager here (config.settings.test): the queued task runs in the on-commit hook."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import transaction
from django.db.models import F

from config.models import OutboxMessage
from integrations.models import ActionDefinition, ActionRun, Connector, RunStatus
from integrations.services import action_run_execute, action_run_propose, action_runs_reconcile_stuck
from integrations.tasks import EXECUTE_ACTION_RUN

pytestmark = pytest.mark.django_db

PARAMS = {"order_id": "BW-10003", "amount": 1.25, "reason": "stuck run test"}


@pytest.fixture
def instant_refund(demo):
    """A refund that needs no approval (rule "never"): the turn would execute it inline."""
    refund = ActionDefinition.objects.get(name="refund_request")
    return ActionDefinition.objects.create(
        name="instant_refund", title="Instant refund", description="Refund without approval (test).",
        connector=Connector.objects.get(pk=refund.connector_id), method="POST", path="/refunds",
        parameters_schema=refund.parameters_schema, risk_level="low", approval_rule={"rule": "never"})


def _stranded(action, key: str, *, age_s: float = 120, status: str | None = None) -> ActionRun:
    """Propose in a committed transaction and never execute (the process died), ``age_s`` ago."""
    with transaction.atomic():
        run = action_run_propose(action=action, params=PARAMS, idempotency_key=key)
    assert run.status == RunStatus.APPROVED
    changes = {"updated_at": F("updated_at") - timedelta(seconds=age_s)}
    if status:
        changes["status"] = status
    ActionRun.objects.filter(pk=run.pk).update(**changes)
    return run


def _messages(run) -> int:
    return OutboxMessage.objects.filter(task_name=EXECUTE_ACTION_RUN, args=[str(run.pk)]).count()


def test_a_stranded_approved_run_is_executed_exactly_once(instant_refund, demo_backend,
                                                          django_capture_on_commit_callbacks):
    run = _stranded(instant_refund, "stuck:approved")
    with django_capture_on_commit_callbacks(execute=True):
        assert action_runs_reconcile_stuck(older_than_s=60) == 1
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert demo_backend.execution_counts == {"stuck:approved": 1}
    assert OutboxMessage.objects.get(args=[str(run.pk)]).done_at is not None
    # Settled: a later sweep leaves it alone, nothing runs again.
    with django_capture_on_commit_callbacks(execute=True):
        assert action_runs_reconcile_stuck(older_than_s=0) == 0
    assert demo_backend.execution_counts == {"stuck:approved": 1}


def test_a_run_left_executing_mid_call_is_reconciled_not_repeated(instant_refund, demo_backend,
                                                                  django_capture_on_commit_callbacks):
    run = _stranded(instant_refund, "stuck:executing", age_s=0)
    # The call reached the backend, then the process died before settling: replay the call's
    # effect, then leave the run executing as the crash would.
    action_run_execute(run_id=run.pk)
    assert demo_backend.execution_counts == {"stuck:executing": 1}
    ActionRun.objects.filter(pk=run.pk).update(status=RunStatus.EXECUTING, finished_at=None,
                                               updated_at=F("updated_at") - timedelta(seconds=120))
    with django_capture_on_commit_callbacks(execute=True):
        assert action_runs_reconcile_stuck(older_than_s=60) == 1
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert demo_backend.execution_counts == {"stuck:executing": 1}  # asked again with the key


def test_sweeping_twice_queues_once(instant_refund, demo_backend, django_capture_on_commit_callbacks):
    run = _stranded(instant_refund, "stuck:twice")
    # The message is committed but not yet sent (on-commit hooks not run): it is live.
    with django_capture_on_commit_callbacks(execute=False):
        assert action_runs_reconcile_stuck(older_than_s=60) == 1
    with django_capture_on_commit_callbacks(execute=False):
        assert action_runs_reconcile_stuck(older_than_s=60) == 0
    assert _messages(run) == 1
    assert demo_backend.execution_counts == {}


def test_a_run_whose_message_gave_up_is_queued_again(instant_refund, demo_backend,
                                                     django_capture_on_commit_callbacks):
    run = _stranded(instant_refund, "stuck:gave-up")
    with django_capture_on_commit_callbacks(execute=False):
        action_runs_reconcile_stuck(older_than_s=60)
    OutboxMessage.objects.filter(args=[str(run.pk)]).update(gave_up_at=F("created_at"))
    with django_capture_on_commit_callbacks(execute=True):
        assert action_runs_reconcile_stuck(older_than_s=60) == 1
    assert _messages(run) == 2
    assert demo_backend.execution_counts == {"stuck:gave-up": 1}


def test_a_recent_run_is_left_alone(instant_refund, demo_backend, django_capture_on_commit_callbacks):
    run = _stranded(instant_refund, "stuck:recent", age_s=5)
    with django_capture_on_commit_callbacks(execute=True):
        assert action_runs_reconcile_stuck(older_than_s=60) == 0
    run.refresh_from_db()
    assert run.status == RunStatus.APPROVED
    assert _messages(run) == 0
    assert demo_backend.execution_counts == {}


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.REJECTED,
                                    RunStatus.AWAITING_APPROVAL])
def test_terminal_and_unapproved_runs_are_left_alone(instant_refund, demo_backend,
                                                     django_capture_on_commit_callbacks, status):
    run = _stranded(instant_refund, f"stuck:{status}", status=status)
    with django_capture_on_commit_callbacks(execute=True):
        assert action_runs_reconcile_stuck(older_than_s=60) == 0
    run.refresh_from_db()
    assert run.status == status
    assert _messages(run) == 0
    assert demo_backend.execution_counts == {}


def test_the_embedded_relay_loop_runs_the_sweep(instant_refund, demo_backend, django_capture_on_commit_callbacks):
    from config.periodic import relay_jobs

    assert "reconcile-stuck-action-runs" in relay_jobs()
    run = _stranded(instant_refund, "stuck:relay")
    with django_capture_on_commit_callbacks(execute=True):
        call_command("outbox_relay", stdout=open("/dev/null", "w"))  # noqa: SIM115
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert demo_backend.execution_counts == {"stuck:relay": 1}


def test_the_task_is_on_the_beat_schedule(settings):
    from config.celery import app

    entries = {e["task"]: e["schedule"] for e in settings.CELERY_BEAT_SCHEDULE.values()}
    assert entries["integrations.reconcile_stuck_runs"] == 60.0
    app.loader.import_default_modules()
    assert "integrations.reconcile_stuck_runs" in app.tasks
