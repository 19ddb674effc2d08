"""Celery entry points of the knowledge app (queue: ingestion, via the ``knowledge.*`` route)."""

from __future__ import annotations

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from knowledge.services import ingestion_job_run

# Below the broker's visibility timeout (1 h), so an acks_late task is never handed to a
# second worker while the first is still busy; a long job continues in a fresh task.
SOFT_TIME_LIMIT_S = 50 * 60


@shared_task(name="knowledge.ingest_job", bind=True, acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=SOFT_TIME_LIMIT_S, time_limit=SOFT_TIME_LIMIT_S + 120)
def ingest_job(self, job_id: str) -> None:
    # Re-delivery is safe: a finished job returns at once, an interrupted one resumes with the
    # files not yet done, and a job already running elsewhere is left to that worker.
    try:
        ingestion_job_run(job_id=job_id)
    except SoftTimeLimitExceeded:
        self.apply_async(args=[job_id], countdown=1)


@shared_task(name="knowledge.reembed_space", bind=True, acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=SOFT_TIME_LIMIT_S, time_limit=SOFT_TIME_LIMIT_S + 120)
def reembed_space(self, space_id: str) -> None:
    # Resumable like ingestion: the chunks still missing a vector are picked up again.
    from knowledge.embedding_spaces import reembed_run

    try:
        reembed_run(space_id=space_id)
    except SoftTimeLimitExceeded:
        self.apply_async(args=[space_id], countdown=1)
