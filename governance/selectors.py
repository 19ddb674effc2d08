"""Reads of the governance app."""

from __future__ import annotations

from governance.audit import ChainReport, chain_verify
from governance.models import AuditEvent


def audit_chain_verify(*, batch_size: int = 5000) -> ChainReport:
    """The whole chain, links and signed checkpoints (what ``manage.py audit_verify`` runs)."""
    return chain_verify(batch_size=batch_size)


def audit_events_for_target(*, target) -> list[AuditEvent]:
    target_type = f"{target._meta.app_label}.{target._meta.model_name}"
    return list(AuditEvent.objects.filter(target_type=target_type, target_id=str(target.pk)).order_by("seq"))
