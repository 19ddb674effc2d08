"""Celery entry points of the governance app (periodic, run by beat)."""

import logging

from celery import shared_task

from governance.audit import audit_checkpoint_create, checkpoint_json

logger = logging.getLogger(__name__)


# Queue: the default one (CELERY_TASK_DEFAULT_QUEUE).
@shared_task(name="governance.audit_checkpoint", acks_late=True, reject_on_worker_lost=True, time_limit=600)
def audit_checkpoint() -> int | None:
    """Sign the chain head; idempotent (no new events → the latest checkpoint). A chain that does
    not verify raises AuditChainBroken: the task fails loudly and nothing is signed."""
    checkpoint = audit_checkpoint_create()
    if checkpoint is None:
        return None
    # The JSON line in the log is the copy outside the database (ship the logs elsewhere).
    logger.info("audit checkpoint %s", checkpoint_json(checkpoint))
    return checkpoint.seq


# Queue: the default one. Beat runs it daily (CELERY_BEAT_SCHEDULE "retention-run-due").
@shared_task(name="governance.retention_run_due", acks_late=True, reject_on_worker_lost=True, time_limit=3600)
def retention_run_due() -> list[dict]:
    """Run every enabled retention policy; idempotent (purged rows no longer match, a rerun
    purges nothing more). Returns each run's kind, status and counts."""
    from governance.retention import retention_run_due as run_due

    runs = [r for r in run_due() if r is not None]
    for run in runs:
        logger.info("retention %s: %s matched=%s purged=%s held_back=%s remaining=%s", run.data_kind, run.status,
                    run.matched, run.purged, run.held_back, run.remaining)
    return [{"kind": r.data_kind, "status": r.status, "run": str(r.pk), **r.counts} for r in runs]
