"""Evidence bundles: the audit side of a compliance export, and a standalone bundle check.

A bundle (format ``tandem-evidence/v1``, built by ``convo.compliance``) carries the records of
some conversations and every audit event that refers to them, each with its full hashed
content, plus a ``chain_proof``: how the hashes are computed (``HASH_RECIPE``), the latest signed
checkpoint at or after the newest included event, and the result of verifying the whole chain
when the bundle was made.

``bundle_verify`` and ``bundle_event_hash`` use the standard library only (no Django, no
database), so they can be copied out and run by a third party on the JSON file alone.

The reads here (``audit_events_related``, ``chain_proof_build``...) stay within governance: the
caller says which targets and ids to look for, governance knows nothing of conversations.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

EVIDENCE_FORMAT = "tandem-evidence/v1"
GENESIS = "0" * 64

# What a third party needs to recompute every event hash of a bundle from the bundle alone.
# It follows ``governance.audit.event_hash`` (tests/convo/test_compliance.py checks both agree).
HASH_RECIPE: dict[str, Any] = {
    "algorithm": "sha256",
    "digest": "lowercase hexadecimal SHA-256 of the UTF-8 bytes of the canonical JSON below",
    "hashed_object": {
        "seq": "<event.seq, integer>",
        "prev": "<event.prev_hash: the hash of the event with seq - 1, or 64 zeros for seq 1>",
        "at": "<event.occurred_at, exactly the string in the bundle (ISO 8601, UTC offset +00:00)>",
        "actor": ["<event.actor_id>", "<event.actor_label>"],
        "action": "<event.action>",
        "target": ["<event.target_type>", "<event.target_id>"],
        "request": "<event.request_id>",
        "data_sha256": "<SHA-256 (hex) of the canonical JSON of event.data; if event.data is a retention "
                       "purge marker {\"_purged\": {\"digest\", \"policy\", \"at\"}}, its digest instead>",
    },
    "canonical_json": [
        "object keys sorted by Unicode code point, at every depth",
        "no whitespace: separators ',' and ':'",
        "strings in double quotes; only '\"', '\\\\' and control characters are escaped "
        "(\\n \\r \\t \\b \\f, other controls as \\u00xx in lowercase hex); all other characters, "
        "non-ASCII included, are written as themselves in UTF-8",
        "integers as decimal digits; other numbers in their shortest round-trip form as Python's "
        "repr writes them (a float with no fractional part keeps '.0', e.g. 1.0)",
        "true, false and null as such",
        "equivalent to Python: json.dumps(obj, sort_keys=True, separators=(',', ':'), ensure_ascii=False)",
    ],
    "chain": "an event's prev_hash equals the hash of the event one seq before it; the first event's "
             "prev_hash is 64 zeros",
    "bundle_digest": "export_event.data.bundle_sha256 is the SHA-256 (hex) of the canonical JSON of the whole "
                     "bundle without its export_event key; the export event is itself in the chain",
    "checkpoint_signature": "HMAC-SHA256 (key held by the operator, not in the bundle) of the UTF-8 text "
                            "'tandem-audit-checkpoint/v1\\n<seq>\\n<hash>\\n<signed_at>', hexadecimal",
}
PURGE_MARKER_KEY = "_purged"
_HEX = frozenset("0123456789abcdef")

EVENT_KEYS = ("id", "seq", "prev_hash", "hash", "occurred_at", "actor_id", "actor_label", "action",
              "target_type", "target_id", "request_id", "data")


# --- the standalone part (standard library only) -------------------------------------------

def canonical(value: Any) -> str:
    """The canonical JSON of ``HASH_RECIPE`` (for values parsed from JSON)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _purge_marker_digest(data: Any) -> str | None:
    """The original payload's digest kept by a retention purge marker, else None."""
    if not isinstance(data, dict) or set(data) != {PURGE_MARKER_KEY}:
        return None
    marker = data[PURGE_MARKER_KEY]
    if not isinstance(marker, dict) or set(marker) != {"digest", "policy", "at"}:
        return None
    digest = marker["digest"]
    return digest if isinstance(digest, str) and len(digest) == 64 and set(digest) <= _HEX else None


def payload_digest(data: Any) -> str:
    """What an event hash covers of its payload (``HASH_RECIPE["hashed_object"]["data_sha256"]``)."""
    return _purge_marker_digest(data) or hashlib.sha256(canonical(data).encode("utf-8")).hexdigest()


def bundle_event_hash(event: Mapping[str, Any]) -> str:
    """The hash an event of a bundle must carry, recomputed from its content."""
    payload = canonical({
        "seq": event["seq"],
        "prev": event["prev_hash"],
        "at": event["occurred_at"],
        "actor": [event["actor_id"], event["actor_label"]],
        "action": event["action"],
        "target": [event["target_type"], event["target_id"]],
        "request": event["request_id"],
        "data_sha256": payload_digest(event["data"]),
    })
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def bundle_digest(bundle: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the whole bundle except ``export_event``. The export's
    audit event records it, so that no part of the bundle can change unnoticed."""
    body = {key: value for key, value in bundle.items() if key != "export_event"}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


def event_problems(event: Mapping[str, Any], *, previous_hash: str | None = None) -> list[str]:
    """What is wrong with one event: missing fields, a hash its content does not give, or (when
    the previous event's hash is known) a broken link."""
    missing = [key for key in EVENT_KEYS if key not in event]
    if missing:
        return [f"audit event {event.get('seq', '?')}: missing {', '.join(missing)}"]
    problems = []
    try:
        recomputed = bundle_event_hash(event)
    except (TypeError, ValueError) as exc:
        return [f"audit event {event['seq']}: its content cannot be hashed ({exc})"]
    if recomputed != event["hash"]:
        problems.append(f"audit event {event['seq']} ({event['action']}): content does not match its hash")
    if previous_hash is not None and event["prev_hash"] != previous_hash:
        problems.append(f"audit event {event['seq']}: prev_hash does not link to the hash of event {event['seq'] - 1}")
    if event["seq"] == 1 and event["prev_hash"] != GENESIS:
        problems.append("audit event 1: prev_hash is not the genesis hash")
    return problems


def checkpoint_signature_ok(checkpoint: Mapping[str, Any], *, key: bytes) -> bool:
    message = f"{checkpoint['format']}\n{checkpoint['seq']}\n{checkpoint['hash']}\n{checkpoint['signed_at']}"
    expected = hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, str(checkpoint.get("signature", "")))


def _turn_problems(turn: Mapping[str, Any], event: Mapping[str, Any]) -> list[str]:
    """A turn's decision record must say what its ``ai.turn`` event (written in the same
    transaction, and hashed) says."""
    data = event["data"]
    pairs = [
        ("intent", turn.get("intent"), data.get("intent")),
        ("confidence", turn.get("confidence"), data.get("confidence")),
        ("decision", turn.get("decision"), data.get("decision")),
        ("reason", turn.get("reason"), data.get("reason")),
        ("model version", (turn.get("model_version") or {}).get("id"), data.get("model_version")),
        ("prompt version", (turn.get("prompt_version") or {}).get("id"), data.get("prompt_version")),
        ("action run", turn.get("action_run_id") or None, data.get("action_run")),
        ("tool call", turn.get("tool_call") or {}, data.get("tool_call") or {}),
        ("guards", turn.get("guards") or {}, data.get("guards") or {}),
        ("tokens", [turn.get("tokens_in"), turn.get("tokens_out")], data.get("tokens")),
        ("sources", [[s.get("chunk_id"), s.get("score")] for s in turn.get("sources") or []],
         [[s.get("chunk_id"), s.get("score")] for s in data.get("sources") or []]),
    ]
    return [f"turn {turn.get('id')}: {label} differs from its audit event {event['seq']}"
            for label, recorded, audited in pairs if recorded != audited]


def bundle_verify(bundle: Mapping[str, Any], *, checkpoint_key: bytes | None = None) -> list[str]:
    """Check a bundle on its own; returns the problems found (empty: it holds).

    - every audit event (and the export's own event) recomputes to its hash, and events with
      consecutive seqs link;
    - the rest of the bundle is what the export's event says was exported (``bundle_sha256``);
    - each AI turn's decision record agrees with its hashed ``ai.turn`` event;
    - the checkpoint, if any, agrees with an included event of its seq, and (given the key)
      carries a valid signature;
    - the chain verified when the bundle was made.
    """
    problems: list[str] = []
    if not isinstance(bundle, Mapping) or bundle.get("format") != EVIDENCE_FORMAT:
        return [f"not a {EVIDENCE_FORMAT} bundle"]
    audit = bundle.get("audit")
    if not isinstance(audit, list):
        return ["the bundle has no audit list"]
    by_seq: dict[int, Mapping[str, Any]] = {}
    for event in audit:
        if not isinstance(event, Mapping) or not isinstance(event.get("seq"), int):
            problems.append("an audit entry is not an event with an integer seq")
            continue
        if event["seq"] in by_seq:
            problems.append(f"audit event {event['seq']} appears twice")
        by_seq[event["seq"]] = event
    for seq in sorted(by_seq):
        previous = by_seq.get(seq - 1)
        problems += event_problems(by_seq[seq], previous_hash=previous["hash"] if previous else None)
    export_event = bundle.get("export_event")
    if not isinstance(export_event, Mapping):
        problems.append("the bundle has no export event")
    else:
        problems += [f"export event: {p}" for p in event_problems(export_event)]
        recorded = (export_event.get("data") or {}).get("bundle_sha256")
        if recorded != bundle_digest(bundle):
            problems.append("the bundle's content differs from what was exported (bundle_sha256 of the export "
                            "event does not match)")

    turn_events = {str(e.get("target_id")): e for e in by_seq.values()
                   if e.get("action") == "ai.turn" and e.get("target_type") == "convo.turn"}
    for conversation in bundle.get("conversations") or []:
        for turn in conversation.get("turns") or []:
            if turn.get("status") == "pending":
                continue
            event = turn_events.get(str(turn.get("id")))
            if event is None:
                problems.append(f"turn {turn.get('id')}: its ai.turn audit event is not in the bundle")
            elif _purge_marker_digest(event["data"]) is None:  # a purged payload has nothing to compare
                problems += _turn_problems(turn, event)

    proof = bundle.get("chain_proof") or {}
    checkpoint = proof.get("checkpoint")
    if checkpoint:
        included = by_seq.get(checkpoint.get("seq"))
        if included is not None and included["hash"] != checkpoint.get("hash"):
            problems.append(f"checkpoint at seq {checkpoint.get('seq')} disagrees with the included event")
        if checkpoint_key is not None and not checkpoint_signature_ok(checkpoint, key=checkpoint_key):
            problems.append(f"checkpoint at seq {checkpoint.get('seq')} has an invalid signature")
    verification = proof.get("verification") or {}
    if not verification.get("ok"):
        problems.append(f"the audit chain did not verify when the bundle was made: "
                        f"{verification.get('reason') or 'no verification recorded'}")
    return problems


# --- building (reads the database) ----------------------------------------------------------

def event_as_dict(event) -> dict[str, Any]:
    """An ``AuditEvent`` (or a named row of its fields) as it appears in a bundle."""
    return {
        "id": str(event.id), "seq": event.seq, "prev_hash": event.prev_hash, "hash": event.hash,
        "occurred_at": event.occurred_at.isoformat(), "actor_id": event.actor_id,
        "actor_label": event.actor_label, "action": event.action, "target_type": event.target_type,
        "target_id": event.target_id, "request_id": event.request_id, "data": event.data,
    }


def audit_events_related(*, targets: Mapping[str, Iterable[str]], data_refs: Mapping[str, Iterable[str]],
                         since: datetime | None = None):
    """Events whose target is one of ``targets`` (target type → ids) or whose ``data`` holds one
    of ``data_refs`` (key → ids) at the top level, in seq order. ``since`` bounds the data
    search (nothing can refer to a record before it existed): the target branch uses
    ``auditevent_target_idx``, the data branch the ``occurred_at`` index."""
    from django.db.models import Q

    from governance.models import AuditEvent

    query = Q(pk__in=[])
    for target_type, ids in targets.items():
        ids = [str(i) for i in ids]
        if ids:
            query |= Q(target_type=target_type, target_id__in=ids)
    data_query = Q(pk__in=[])
    for key, ids in data_refs.items():
        ids = [str(i) for i in ids]
        if ids:
            data_query |= Q(**{f"data__{key}__in": ids})
    if since is not None:
        data_query &= Q(occurred_at__gte=since)
    return AuditEvent.objects.filter(query | data_query).order_by("seq")


def events_chain_status(events) -> dict[int, dict[str, Any]]:
    """Per event seq: its hash recomputed, and its link to the previous event (one query for
    the hashes of the events just before). ``{"hash_ok", "link_ok", "verified"}``."""
    from governance.audit import event_hash
    from governance.models import AuditEvent

    events = list(events)
    wanted = {e.seq - 1 for e in events if e.seq > 1}
    previous = dict(AuditEvent.objects.filter(seq__in=wanted).values_list("seq", "hash")) if wanted else {}
    status = {}
    for e in events:
        recomputed = event_hash(seq=e.seq, prev_hash=e.prev_hash, occurred_at=e.occurred_at, actor_id=e.actor_id,
                                actor_label=e.actor_label, action=e.action, target_type=e.target_type,
                                target_id=e.target_id, request_id=e.request_id, data=e.data)
        expected_prev = GENESIS if e.seq == 1 else previous.get(e.seq - 1)
        hash_ok, link_ok = recomputed == e.hash, expected_prev is not None and expected_prev == e.prev_hash
        status[e.seq] = {"hash_ok": hash_ok, "link_ok": link_ok, "verified": hash_ok and link_ok}
    return status


def checkpoint_as_dict(checkpoint) -> dict[str, Any]:
    from governance.audit import CHECKPOINT_FORMAT

    return {
        "format": CHECKPOINT_FORMAT, "alg": "HMAC-SHA256", "seq": checkpoint.seq, "hash": checkpoint.hash,
        "signed_at": checkpoint.signed_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "signature": checkpoint.signature,
    }


def chain_proof_build(*, highest_seq: int | None) -> dict[str, Any]:
    """The recipe, the newest signed checkpoint covering ``highest_seq`` (if one exists), and the
    verification of the whole chain, genesis to head, links and stored checkpoints."""
    from governance.models import AuditCheckpoint, AuditEvent
    from governance.selectors import audit_chain_verify

    head = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
    checkpoint = AuditCheckpoint.objects.order_by("-seq").first()
    if checkpoint is not None and highest_seq is not None and checkpoint.seq < highest_seq:
        checkpoint = None
    report = audit_chain_verify()
    return {
        "recipe": HASH_RECIPE,
        "genesis_hash": GENESIS,
        "checkpoint": checkpoint_as_dict(checkpoint) if checkpoint else None,
        "verification": {
            "scope": "whole chain, from genesis to the head at export time, and every stored signed checkpoint",
            "verified_at": datetime.now(UTC).isoformat(),
            "head_seq": head[0] if head else 0,
            "head_hash": head[1] if head else GENESIS,
            "ok": report.ok,
            "checked": report.checked,
            "checkpoints_confirmed": report.checkpoints,
            "first_broken_seq": report.first_broken_seq,
            "reason": report.reason,
        },
    }
