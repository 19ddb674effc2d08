"""Celery entry points of the conversation app (queue: turns)."""

from __future__ import annotations

from celery import shared_task

from config.request_context import reset_request_id, set_request_id
from convo.pipeline import turn_run


@shared_task(name="convo.run_turn", acks_late=True, reject_on_worker_lost=True, soft_time_limit=120, time_limit=150)
def run_turn(turn_id: str) -> None:
    token = set_request_id(f"turn-{turn_id}")
    try:
        turn_run(turn_id=turn_id)
    finally:
        reset_request_id(token)


@shared_task(name="convo.notify_action_settled", acks_late=True, reject_on_worker_lost=True, time_limit=60)
def notify_action_settled(run_id: str) -> None:
    from convo.handlers import action_run_announce

    action_run_announce(run_id=run_id)


# Below the broker's visibility timeout (1 h), so an acks_late task is never handed to a second
# worker while the first is still busy; a long run continues in a fresh task.
EVALUATION_SOFT_LIMIT_S = 50 * 60


@shared_task(name="convo.evaluation_run", bind=True, acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=EVALUATION_SOFT_LIMIT_S, time_limit=EVALUATION_SOFT_LIMIT_S + 120)
def evaluation_run(self, run_id: str) -> None:
    """A dataset run or replay (sent by ``governance.evaluation.evaluation_run_create`` through the
    outbox). Re-delivery is safe: a finished run returns at once, an interrupted one resumes, and
    one running elsewhere is left to that worker. Run eagerly (the embedded default: inside the
    request that started it) it only plans the run; the relay loop runs the cases
    (``convo.evaluation``)."""
    from celery.exceptions import SoftTimeLimitExceeded

    from convo.evaluation import evaluation_run_execute

    try:
        evaluation_run_execute(run_id=run_id, max_batches=0 if self.request.is_eager else None)
    except SoftTimeLimitExceeded:
        self.apply_async(args=[run_id], countdown=1)


@shared_task(name="convo.shadow_turn", acks_late=True, reject_on_worker_lost=True, soft_time_limit=120,
             time_limit=150)
def shadow_turn(turn_id: str, deployment_id: str, state: dict | None = None) -> None:
    """A shadow deployment answers a committed live turn's input (recorded only); ``state`` is
    the conversation state the live turn started from."""
    from convo.evaluation import shadow_turn_run

    shadow_turn_run(turn_id=turn_id, deployment_id=deployment_id, state=state or {})
