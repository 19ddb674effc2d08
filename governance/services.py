"""Writes of the governance app: audit events and the runtime model/prompt versions."""

from __future__ import annotations

import json
from typing import Any

from django.db import connection
from django.utils import timezone

from config.request_context import get_request_id
from governance.audit import AUDIT_LOCK_KEY, GENESIS_HASH, PURGE_MARKER_KEY, canonical_json, event_hash
from governance.models import AuditEvent

DEFAULT_PROMPT_NAME = "customer-assistant"
DEFAULT_PROMPT_TEMPLATE = """You are the customer assistant of {company}. Answer only from the numbered \
sources below. Cite every fact with its source number in square brackets, like [1]. If the \
sources do not contain the answer, say so plainly and offer to connect the customer with a \
person. Never claim an action was done unless a tool result says so. Be brief and friendly.

Sources:
{sources}"""


def audit_event_record(*, actor=None, action: str, target=None, target_type: str = "", target_id: str = "",
                       data: dict[str, Any] | None = None) -> AuditEvent:
    """Append one event to the chain. Call it inside the transaction of the act it records."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit_event_record must run inside the transaction of the act it records")
    if target is not None:
        target_type = target_type or f"{target._meta.app_label}.{target._meta.model_name}"
        target_id = target_id or str(target.pk)
    actor_id, actor_label = "", "system"
    if actor is not None and getattr(actor, "is_authenticated", False):
        actor_id, actor_label = str(actor.pk), actor.get_username()
    elif isinstance(actor, str):
        actor_label = actor
    if isinstance(data, dict) and PURGE_MARKER_KEY in data:
        # Only a retention purge writes that shape, over an existing row (verification would
        # report a new row carrying it as a forged purge anyway).
        raise ValueError(f"an audit payload may not use the reserved key {PURGE_MARKER_KEY!r}")
    # Round-trip through JSON so the hash covers exactly what jsonb will give back.
    clean = json.loads(canonical_json(data or {}))
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_LOCK_KEY])
    last = AuditEvent.objects.order_by("-seq").only("seq", "hash").first()
    seq = (last.seq + 1) if last else 1
    prev = last.hash if last else GENESIS_HASH
    occurred_at = timezone.now()
    request_id = get_request_id()
    digest = event_hash(
        seq=seq, prev_hash=prev, occurred_at=occurred_at, actor_id=actor_id, actor_label=actor_label,
        action=action, target_type=target_type, target_id=target_id, request_id=request_id, data=clean,
    )
    return AuditEvent.objects.create(
        seq=seq, prev_hash=prev, hash=digest, occurred_at=occurred_at, actor_id=actor_id,
        actor_label=actor_label, action=action, target_type=target_type, target_id=target_id,
        request_id=request_id, data=clean,
    )
