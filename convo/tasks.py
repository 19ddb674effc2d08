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
