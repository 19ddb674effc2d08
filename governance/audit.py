"""The audit chain: canonical hashing, appending and verification."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable

from django.core.serializers.json import DjangoJSONEncoder

GENESIS_HASH = "0" * 64
# One advisory lock serialises appends so that every row links to its predecessor.
AUDIT_LOCK_KEY = 727_001


def canonical_json(value: Any) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(*, seq: int, prev_hash: str, occurred_at, actor_id: str, actor_label: str, action: str,
               target_type: str, target_id: str, request_id: str, data: dict) -> str:
    payload = canonical_json(
        {
            "seq": seq,
            "prev": prev_hash,
            "at": occurred_at.isoformat(),
            "actor": [actor_id, actor_label],
            "action": action,
            "target": [target_type, target_id],
            "request": request_id,
            "data": data,
        }
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    checked: int
    ok: bool
    first_broken_seq: int | None = None
    reason: str = ""


def verify_rows(rows: Iterable) -> ChainReport:
    """Walk rows in seq order; report the first row whose link or content does not hold."""
    prev_hash = GENESIS_HASH
    expected_seq = 1
    checked = 0
    for row in rows:
        if row.seq != expected_seq:
            return ChainReport(checked, False, expected_seq, f"row seq {expected_seq} is missing (found {row.seq})")
        if row.prev_hash != prev_hash:
            return ChainReport(checked, False, row.seq, "previous-hash link is broken")
        recomputed = event_hash(
            seq=row.seq, prev_hash=row.prev_hash, occurred_at=row.occurred_at, actor_id=row.actor_id,
            actor_label=row.actor_label, action=row.action, target_type=row.target_type,
            target_id=row.target_id, request_id=row.request_id, data=row.data,
        )
        if recomputed != row.hash:
            return ChainReport(checked, False, row.seq, "row content does not match its hash")
        prev_hash = row.hash
        expected_seq += 1
        checked += 1
    return ChainReport(checked, True)
