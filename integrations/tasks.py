"""Celery entry points of the integrations app (queue: actions)."""

from __future__ import annotations

import random

from celery import shared_task
from django.db import InterfaceError, OperationalError

from config.outbox import outbox_enqueue
from integrations.exceptions import ConnectorError
from integrations.models import ActionRun
from integrations.services import action_retry_countdown, action_run_execute

EXECUTE_ACTION_RUN = "integrations.execute_action_run"


def execute_action_run_enqueue(run_id) -> None:
    """Queue a run's execution in the caller's transaction (the transactional outbox): it is
    sent if and only if that transaction commits, and sent again if it is lost on the way."""
    outbox_enqueue(EXECUTE_ACTION_RUN, [str(run_id)])


# Delivered at least once (outbox relay, broker redelivery after a killed worker): the service
# re-fetches the run, returns early when it is settled, and reconciles one left executing.
DATABASE_RETRIES = 60  # a database restart or failover: try again every few seconds for minutes


@shared_task(name=EXECUTE_ACTION_RUN, bind=True, acks_late=True, reject_on_worker_lost=True,
             max_retries=None, soft_time_limit=60, time_limit=90)
def execute_action_run(self, run_id: str) -> None:
    """Retries follow the action's policy: ``max_attempts`` calls in all (counted on the run),
    waiting its backoff (base doubled per retry, capped) between them, and only on retryable
    connector errors. A database that is briefly away (restart, failover) is waited for a few
    seconds at a time instead of failing the message; it does not use up the action's attempts."""
    try:
        run = ActionRun.objects.select_related("action").only(
            "attempts", "action__max_attempts", "action__retry_backoff_s", "action__retry_backoff_max_s",
        ).filter(pk=run_id).first()
        if run is None:
            return  # no such run: nothing to do (a message for a deleted run)
        # An eager run (tests, the embedded default) cannot wait for a backoff, and its retry would
        # raise celery.exceptions.Retry into the caller (e.g. the approve view) and leave the run
        # executing; so there the first attempt is the final one.
        final = self.request.is_eager or run.attempts + 1 >= run.action.max_attempts
        action_run_execute(run_id=run_id, final_attempt=final)
    except ConnectorError as exc:
        raise self.retry(exc=exc, max_retries=None,
                         countdown=action_retry_countdown(action=run.action, retries=run.attempts)) from exc
    except (OperationalError, InterfaceError) as exc:
        # Celery's Django fixup drops an unusable connection after the task; the retry reconnects.
        if self.request.is_eager or self.request.retries >= DATABASE_RETRIES:
            raise  # the outbox relay sends it again after its lease
        raise self.retry(exc=exc, max_retries=None, countdown=2 + random.random() * 3) from exc  # noqa: S311


@shared_task(name="integrations.prune_connector_calls", acks_late=True, soft_time_limit=240, time_limit=300)
def prune_connector_calls() -> int:
    """Beat, hourly: connector call records older than 7 days go (idempotent)."""
    from integrations.services import connector_calls_prune

    return connector_calls_prune()


@shared_task(name="integrations.reconcile_stuck_runs", acks_late=True, ignore_result=True, soft_time_limit=50,
             time_limit=60)
def reconcile_stuck_runs() -> int:
    """Beat, every minute: queue runs left approved or executing with nothing to finish them."""
    from integrations.services import action_runs_reconcile_stuck

    return action_runs_reconcile_stuck()


# Delivered at least once (outbox): the service claims the delivery and returns early when it is
# not pending or not yet due, so a repeated message does not POST twice in a row.
@shared_task(name="integrations.deliver_webhook", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=60, time_limit=90)
def deliver_webhook(delivery_id: str) -> None:
    """One attempt at an outbound webhook delivery. A retryable failure leaves it pending with
    ``next_attempt_at`` set (exponential backoff); the sweep below queues it again then."""
    from integrations.webhooks import webhook_delivery_attempt

    webhook_delivery_attempt(delivery_id=delivery_id)


@shared_task(name="integrations.webhook_deliveries_sweep", acks_late=True, soft_time_limit=50, time_limit=60)
def webhook_deliveries_sweep() -> int:
    """Beat, every 30 s: queue the webhook deliveries whose next attempt has come (idempotent)."""
    from integrations.webhooks import webhook_deliveries_sweep as sweep

    return sweep()


@shared_task(name="integrations.expire_action_runs", acks_late=True, ignore_result=True, soft_time_limit=50,
             time_limit=60)
def expire_action_runs() -> int:
    """Beat, every 5 minutes: runs awaiting approval past ACTION_APPROVAL_EXPIRES_HOURS expire."""
    from integrations.services import action_runs_expire

    return action_runs_expire()
