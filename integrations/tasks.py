"""Celery entry points of the integrations app (queue: actions)."""

from __future__ import annotations

from celery import shared_task

from config.outbox import outbox_enqueue
from integrations.exceptions import ConnectorError
from integrations.models import ActionDefinition
from integrations.services import action_retry_countdown, action_run_execute

EXECUTE_ACTION_RUN = "integrations.execute_action_run"


def execute_action_run_enqueue(run_id) -> None:
    """Queue a run's execution in the caller's transaction (the transactional outbox): it is
    sent if and only if that transaction commits, and sent again if it is lost on the way."""
    outbox_enqueue(EXECUTE_ACTION_RUN, [str(run_id)])


# Delivered at least once (outbox relay, broker redelivery after a killed worker): the service
# re-fetches the run, returns early when it is settled, and reconciles one left executing.
@shared_task(name=EXECUTE_ACTION_RUN, bind=True, acks_late=True, reject_on_worker_lost=True,
             max_retries=9, soft_time_limit=60, time_limit=90)
def execute_action_run(self, run_id: str) -> None:
    """Retries follow the action's policy: ``max_attempts`` in all, waiting its backoff (base
    doubled per retry, capped) between them, and only on retryable connector errors."""
    action = ActionDefinition.objects.filter(runs__pk=run_id).first()
    if action is None:
        return  # no such run: nothing to do (a message for a deleted run)
    retries = max(0, action.max_attempts - 1)
    # An eager run (tests, the embedded default) cannot wait for a backoff, and its retry would
    # raise celery.exceptions.Retry into the caller (e.g. the approve view) and leave the run
    # executing; so there the first attempt is the final one.
    final = self.request.is_eager or self.request.retries >= retries
    try:
        action_run_execute(run_id=run_id, final_attempt=final)
    except ConnectorError as exc:
        raise self.retry(exc=exc, max_retries=retries,
                         countdown=action_retry_countdown(action=action, retries=self.request.retries)) from exc


@shared_task(name="integrations.prune_connector_calls", acks_late=True, soft_time_limit=240, time_limit=300)
def prune_connector_calls() -> int:
    """Beat, hourly: connector call records older than 7 days go (idempotent)."""
    from integrations.services import connector_calls_prune

    return connector_calls_prune()
