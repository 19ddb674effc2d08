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
