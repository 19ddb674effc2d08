"""The audit chain: canonical hashing, appending, signed checkpoints and verification.

The hash chain alone proves that no row was edited, removed from the middle or moved; it cannot
prove that the newest rows were not removed (a shorter chain is still a valid chain), nor that
someone with database access did not recompute every hash after an edit (the hash is unkeyed).
Signed checkpoints close both gaps: every ten minutes the head ``(seq, hash)`` is signed with
HMAC-SHA256 under ``AUDIT_CHECKPOINT_KEY``, stored (append-only) and printed as a JSON line that
operators ship elsewhere. ``chain_verify`` checks every checkpoint's signature and that the
chain still holds that seq with that hash."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Iterable, Mapping

from django.conf import settings
from django.core import checks
from django.core.serializers.json import DjangoJSONEncoder

GENESIS_HASH = "0" * 64
# One advisory lock serialises appends so that every row links to its predecessor.
AUDIT_LOCK_KEY = 727_001
CHECKPOINT_FORMAT = "tandem-audit-checkpoint/v1"
# The columns verification reads (values_list rows instead of model instances: faster).
EVENT_FIELDS = ("seq", "prev_hash", "hash", "occurred_at", "actor_id", "actor_label", "action", "target_type",
                "target_id", "request_id", "data")


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
    checkpoints: int = 0  # signed checkpoints whose signature and hash were confirmed


class AuditChainBroken(Exception):
    """Refusing to sign a checkpoint over a chain that does not verify."""

    def __init__(self, report: ChainReport):
        super().__init__(f"audit chain broken at seq {report.first_broken_seq}: {report.reason}")
        self.report = report


# --- verification -------------------------------------------------------------------------

def verify_rows(rows: Iterable, *, checkpoints: Mapping[int, str] | None = None, start_seq: int = 1,
                prev_hash: str = GENESIS_HASH) -> ChainReport:
    """Walk rows in seq order; report the first row whose link or content does not hold.

    ``checkpoints`` maps seq → hash from signed checkpoints (signatures already checked): the
    row at each such seq must carry that hash, and the chain must reach the highest one.
    ``start_seq``/``prev_hash`` verify a segment that continues an already signed head."""
    checkpoints = checkpoints or {}
    expected_seq = start_seq
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
        signed = checkpoints.get(row.seq)
        if signed is not None and signed != row.hash:
            return ChainReport(checked, False, row.seq,
                               f"row hash differs from the signed checkpoint at seq {row.seq} "
                               "(the chain was rewritten up to here)")
        prev_hash = row.hash
        expected_seq += 1
        checked += 1
    last_signed = max(checkpoints, default=0)
    if last_signed >= expected_seq:
        return ChainReport(checked, False, expected_seq,
                           f"chain truncated: a signed checkpoint holds seq {last_signed} but the chain ends at "
                           f"seq {expected_seq - 1} (rows {expected_seq}..{last_signed} deleted)",
                           len(checkpoints))
    return ChainReport(checked, True, checkpoints=len(checkpoints))


def chain_verify(*, batch_size: int = 5000, external: Iterable[Mapping[str, Any]] = ()) -> ChainReport:
    """The whole chain against every stored checkpoint and the ``external`` ones (parsed JSON
    lines of ``manage.py audit_checkpoint``, e.g. shipped to another system)."""
    from governance.models import AuditCheckpoint, AuditEvent

    stored = AuditCheckpoint.objects.order_by("seq").values_list("seq", "hash", "signed_at", "signature")
    candidates = [(seq, digest, signed_at, signature, "stored") for seq, digest, signed_at, signature in stored]
    for line in external:
        try:
            candidates.append((int(line["seq"]), str(line["hash"]), datetime.fromisoformat(line["signed_at"]),
                               str(line["signature"]), "exported"))
        except (KeyError, TypeError, ValueError):
            return ChainReport(0, False, None, f"exported checkpoint is not readable: {line!r}")
    signed: dict[int, str] = {}
    for seq, digest, signed_at, signature, origin in candidates:
        if not checkpoint_signature_valid(seq=seq, hash=digest, signed_at=signed_at, signature=signature):
            return ChainReport(0, False, seq, f"{origin} checkpoint at seq {seq} has an invalid signature "
                                              "(forged, altered, or signed with another key)")
        if signed.setdefault(seq, digest) != digest:
            return ChainReport(0, False, seq, f"two validly signed checkpoints disagree about seq {seq}")
    rows = AuditEvent.objects.order_by("seq").values_list(*EVENT_FIELDS, named=True).iterator(chunk_size=batch_size)
    try:
        report = verify_rows(rows, checkpoints=signed)
    finally:
        rows.close()  # a walk that stopped early closes its server-side cursor now, not at garbage collection
    return replace(report, checkpoints=len(candidates))


# --- signed checkpoints ---------------------------------------------------------------------

def checkpoint_key_configured() -> str:
    return getattr(settings, "AUDIT_CHECKPOINT_KEY", "") or os.environ.get("AUDIT_CHECKPOINT_KEY", "")


def checkpoint_key() -> bytes:
    """``AUDIT_CHECKPOINT_KEY``, or a key derived from ``SECRET_KEY`` (then rotating SECRET_KEY
    invalidates every stored checkpoint; production warns, see ``checkpoint_key_check``)."""
    configured = checkpoint_key_configured()
    if configured:
        return configured.encode("utf-8")
    return hmac.new(settings.SECRET_KEY.encode("utf-8"), b"tandem.governance.audit-checkpoint", hashlib.sha256).digest()


def checkpoint_message(*, seq: int, hash: str, signed_at: datetime) -> bytes:  # noqa: A002 (the column's name)
    moment = signed_at.astimezone(UTC).isoformat(timespec="microseconds")
    return f"{CHECKPOINT_FORMAT}\n{seq}\n{hash}\n{moment}".encode()


def checkpoint_signature(*, seq: int, hash: str, signed_at: datetime, key: bytes | None = None) -> str:  # noqa: A002
    message = checkpoint_message(seq=seq, hash=hash, signed_at=signed_at)
    return hmac.new(key if key is not None else checkpoint_key(), message, hashlib.sha256).hexdigest()


def checkpoint_signature_valid(*, seq: int, hash: str, signed_at: datetime, signature: str) -> bool:  # noqa: A002
    expected = checkpoint_signature(seq=seq, hash=hash, signed_at=signed_at)
    return hmac.compare_digest(expected, signature)


def checkpoint_json(checkpoint) -> str:
    """One JSON line an operator can ship elsewhere and later pass to ``audit_verify --checkpoints``."""
    return canonical_json({
        "type": "audit_checkpoint",
        "format": CHECKPOINT_FORMAT,
        "alg": "HMAC-SHA256",
        "seq": checkpoint.seq,
        "hash": checkpoint.hash,
        "signed_at": checkpoint.signed_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "signature": checkpoint.signature,
    })


def audit_checkpoint_create(*, batch_size: int = 5000):
    """Sign the current chain head and store it; returns the checkpoint (None for an empty chain).

    Only the rows since the previous checkpoint are verified (they must continue its signed
    hash), so a run every ten minutes stays cheap and a tampered segment is never signed: it
    raises ``AuditChainBroken``. With no new events the latest checkpoint is returned as is."""
    from django.db import IntegrityError, transaction
    from django.utils import timezone

    from governance.models import AuditCheckpoint, AuditEvent

    with transaction.atomic(durable=True):
        head = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
        if head is None:
            return None
        last = AuditCheckpoint.objects.order_by("-seq").first()
        if last is not None:
            if not checkpoint_signature_valid(seq=last.seq, hash=last.hash, signed_at=last.signed_at,
                                              signature=last.signature):
                raise AuditChainBroken(ChainReport(0, False, last.seq, f"stored checkpoint at seq {last.seq} has "
                                                                       "an invalid signature"))
            if last.seq > head[0] or (last.seq == head[0] and last.hash != head[1]):
                raise AuditChainBroken(ChainReport(0, False, min(last.seq, head[0]),
                                                   f"the chain head (seq {head[0]}) does not match the signed "
                                                   f"checkpoint at seq {last.seq}"))
            if last.seq == head[0]:
                return last
        start_seq, prev_hash = (last.seq + 1, last.hash) if last else (1, GENESIS_HASH)
        rows = (AuditEvent.objects.filter(seq__gte=start_seq, seq__lte=head[0]).order_by("seq")
                .values_list(*EVENT_FIELDS, named=True).iterator(chunk_size=batch_size))
        try:
            report = verify_rows(rows, start_seq=start_seq, prev_hash=prev_hash)
        finally:
            rows.close()
        if not report.ok or start_seq + report.checked - 1 != head[0]:
            raise AuditChainBroken(report)
        signed_at = timezone.now()
        try:
            with transaction.atomic():
                return AuditCheckpoint.objects.create(
                    seq=head[0], hash=head[1], signed_at=signed_at,
                    signature=checkpoint_signature(seq=head[0], hash=head[1], signed_at=signed_at),
                )
        except IntegrityError:  # signed concurrently by another run: that one stands
            return AuditCheckpoint.objects.get(seq=head[0])


def checkpoint_key_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Production only: without its own key, checkpoints are signed with a key derived from
    SECRET_KEY, which anyone holding SECRET_KEY can forge and which a rotation invalidates."""
    if not settings.SETTINGS_MODULE.endswith(".production") or checkpoint_key_configured():
        return []
    return [checks.Warning(
        "AUDIT_CHECKPOINT_KEY is not set: audit checkpoints are signed with a key derived from SECRET_KEY.",
        hint="Set AUDIT_CHECKPOINT_KEY to a random string kept apart from the database and SECRET_KEY.",
        id="governance.W001",
    )]
