"""The audit chain: canonical hashing, appending, signed checkpoints and verification.

The hash chain alone proves that no row was edited, removed from the middle or moved; it cannot
prove that the newest rows were not removed (a shorter chain is still a valid chain), nor that
someone with database access did not recompute every hash after an edit (the hash is unkeyed).
Signed checkpoints close both gaps: every ten minutes the head ``(seq, hash)`` is signed with
HMAC-SHA256 under ``AUDIT_CHECKPOINT_KEY``, stored (append-only) and printed as a JSON line that
operators ship elsewhere. ``chain_verify`` checks every checkpoint's signature and that the
chain still holds that seq with that hash.

Payloads can be anonymised without breaking the chain: a row's hash covers the SHA-256 of its
payload (``data_sha256``), not the payload itself. A retention purge replaces a payload with a
marker ``{"_purged": {"digest": <that SHA-256>, "policy": ..., "at": ...}}`` (the only UPDATE the
database allows, see migration 0007) and lists the row's seq in a later ``retention.purged``
event; verification hashes the marker's digest in place of the payload and reports a marked row
that no such event lists (a hand-made marker). This recipe replaced one that hashed the payload
itself; there was no deployed chain to stay compatible with."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
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


# A purged payload: {"_purged": {"digest": sha256 of the original payload, "policy": ..., "at": ...}}.
PURGE_MARKER_KEY = "_purged"
PURGE_MARKER_FIELDS = frozenset({"digest", "policy", "at"})
# The event that lists the rows a purge anonymised (``data["audit_seqs"]``: [[from, to], ...]).
PURGE_LISTING_ACTION = "retention.purged"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def payload_sha256(data: Any) -> str:
    """SHA-256 of the canonical JSON of a payload as stored."""
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()


def purge_marker(*, data: Any, policy: str, at: datetime) -> dict:
    """The marker that replaces ``data`` when a retention purge anonymises it."""
    return {PURGE_MARKER_KEY: {"digest": payload_sha256(data), "policy": policy, "at": at.isoformat()}}


def purged_digest(data: Any) -> str | None:
    """The original payload's digest if ``data`` is a purge marker, else None."""
    if not isinstance(data, dict) or set(data) != {PURGE_MARKER_KEY}:
        return None
    marker = data[PURGE_MARKER_KEY]
    if not isinstance(marker, dict) or set(marker) != PURGE_MARKER_FIELDS:
        return None
    digest = marker.get("digest")
    return digest if isinstance(digest, str) and _HEX64.fullmatch(digest) else None


def data_digest(data: Any) -> str:
    """What a row's hash covers of its payload: the payload's SHA-256, or for a purged row the
    digest its marker kept (whether the purge was real is ``verify_rows``'s question)."""
    return purged_digest(data) or payload_sha256(data)


def event_hash(*, seq: int, prev_hash: str, occurred_at, actor_id: str, actor_label: str, action: str,
               target_type: str, target_id: str, request_id: str, data: dict) -> str:
    """SHA-256 of the canonical JSON of the row's fields, its payload by digest (``data_digest``),
    so that anonymising the payload later keeps the hash."""
    payload = canonical_json(
        {
            "seq": seq,
            "prev": prev_hash,
            "at": occurred_at.isoformat(),
            "actor": [actor_id, actor_label],
            "action": action,
            "target": [target_type, target_id],
            "request": request_id,
            "data_sha256": data_digest(data),
        }
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def seq_ranges(seqs: Iterable[int]) -> list[list[int]]:
    """[[from, to], ...] of consecutive runs of the sorted ``seqs`` (how purge events list rows)."""
    ranges: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return ranges


def _listed_ranges(data: Any) -> list[tuple[int, int]]:
    """The [from, to] seq ranges a ``retention.purged`` event lists (ignores anything malformed)."""
    listed = data.get("audit_seqs") if isinstance(data, dict) else None
    ranges = []
    for item in listed if isinstance(listed, list) else []:
        if (isinstance(item, list) and len(item) == 2 and all(type(n) is int for n in item)  # noqa: E721 (no bools)
                and item[0] <= item[1]):
            ranges.append((item[0], item[1]))
    return ranges


class _PurgedRows:
    """Purged rows seen so far that no later ``retention.purged`` event has listed yet, kept as
    sorted, disjoint [from, to] ranges (a million purged rows in a row are one range)."""

    def __init__(self) -> None:
        self.ranges: list[list[int]] = []

    def add(self, seq: int) -> None:
        if self.ranges and self.ranges[-1][1] == seq - 1:
            self.ranges[-1][1] = seq
        else:
            self.ranges.append([seq, seq])

    def discharge(self, low: int, high: int) -> None:
        kept: list[list[int]] = []
        for start, end in self.ranges:
            if end < low or start > high:
                kept.append([start, end])
                continue
            if start < low:
                kept.append([start, low - 1])
            if end > high:
                kept.append([high + 1, end])
        self.ranges = kept

    def first(self) -> int | None:
        return self.ranges[0][0] if self.ranges else None


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
                prev_hash: str = GENESIS_HASH, require_purge_listing: bool = True) -> ChainReport:
    """Walk rows in seq order; report the first row whose link or content does not hold.

    ``checkpoints`` maps seq → hash from signed checkpoints (signatures already checked): the
    row at each such seq must carry that hash, and the chain must reach the highest one.
    ``start_seq``/``prev_hash`` verify a segment that continues an already signed head.

    A row whose payload is a purge marker verifies with the marker's digest, and must be listed
    (``audit_seqs``) by a later ``retention.purged`` event; one that is not is reported at the end
    of the walk (``require_purge_listing=False`` skips that, for a segment whose listing event may
    lie beyond its end)."""
    checkpoints = checkpoints or {}
    expected_seq = start_seq
    checked = 0
    unlisted = _PurgedRows()
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
        if purged_digest(row.data) is not None:
            unlisted.add(row.seq)
        elif row.action == PURGE_LISTING_ACTION:
            for low, high in _listed_ranges(row.data):
                unlisted.discharge(low, min(high, row.seq - 1))  # only earlier rows can be listed
        prev_hash = row.hash
        expected_seq += 1
        checked += 1
    last_signed = max(checkpoints, default=0)
    if last_signed >= expected_seq:
        return ChainReport(checked, False, expected_seq,
                           f"chain truncated: a signed checkpoint holds seq {last_signed} but the chain ends at "
                           f"seq {expected_seq - 1} (rows {expected_seq}..{last_signed} deleted)",
                           len(checkpoints))
    first_unlisted = unlisted.first()
    if require_purge_listing and first_unlisted is not None:
        return ChainReport(checked, False, first_unlisted,
                           f"payload of seq {first_unlisted} was replaced by a purge marker that no later "
                           f"{PURGE_LISTING_ACTION} event lists (not a retention purge)", len(checkpoints))
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
            # The signature covers hashes, which a purge keeps; whether each purge marker is listed
            # is audit_verify's check over the whole chain (a listing may lie past this segment).
            report = verify_rows(rows, start_seq=start_seq, prev_hash=prev_hash, require_purge_listing=False)
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
    if not (settings.SETTINGS_MODULE or "").endswith(".production") or checkpoint_key_configured():
        return []
    return [checks.Warning(
        "AUDIT_CHECKPOINT_KEY is not set: audit checkpoints are signed with a key derived from SECRET_KEY.",
        hint="Set AUDIT_CHECKPOINT_KEY to a random string kept apart from the database and SECRET_KEY.",
        id="governance.W001",
    )]
