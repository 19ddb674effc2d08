"""Periodic jobs of apps that the embedded default's relay loop runs (it has no Celery beat).

``config`` is plumbing and imports no app; an app registers a job in its ``AppConfig.ready``
with ``relay_job_register(name, func, every_s=...)`` and ``manage.py outbox_relay --every N``
calls ``func()`` at most every ``every_s`` seconds beside the outbox relay. With Celery, the
same work is a beat entry in ``CELERY_BEAT_SCHEDULE``."""

from __future__ import annotations

from typing import Callable

_jobs: dict[str, tuple[Callable[[], object], float]] = {}


def relay_job_register(name: str, func: Callable[[], object], *, every_s: float) -> None:
    _jobs[name] = (func, float(every_s))


def relay_jobs() -> dict[str, tuple[Callable[[], object], float]]:
    return dict(_jobs)
