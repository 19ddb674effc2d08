"""Celery entry points of the integrations app (queue: actions)."""

from __future__ import annotations

from celery import shared_task

from integrations.exceptions import ConnectorError
from integrations.services import action_run_execute


@shared_task(name="integrations.execute_action_run", bind=True, acks_late=True, reject_on_worker_lost=True,
             max_retries=4, soft_time_limit=60, time_limit=90)
def execute_action_run(self, run_id: str) -> None:
    # An eager run (tests, the embedded default) cannot wait for a backoff, and its retry would
    # raise celery.exceptions.Retry into the caller (e.g. the approve view) and leave the run
    # executing; so there the first attempt is the final one.
    final = self.request.is_eager or self.request.retries >= self.max_retries
    try:
        action_run_execute(run_id=run_id, final_attempt=final)
    except ConnectorError as exc:
        raise self.retry(exc=exc, countdown=min(2 ** self.request.retries, 30)) from exc
