"""Retention policies, legal holds, audited purges and erasure requests.

A policy says what happens to one kind of data (``governance.retention_registry``: messages,
AI turns, uploaded files, audit payloads) some days after it became eligible: delete it or
anonymise it. Beat runs every enabled policy daily (``governance.retention_run_due``). A legal
hold on a customer, a conversation or a date range suspends every policy for the data it covers:
those rows are counted as held back and left alone. An erasure request (``data_erase``) anonymises
everything of one customer or conversation at once, and is refused, with nothing changed and the
refusal audited, when any of that data is under a hold.

Every change is audited in its transaction: ``retention.policy_set``, ``retention.hold_placed``,
``retention.hold_released``, and one ``retention.purged`` event per run or erasure with its counts
and which rows it touched (id ranges; for audit payloads the seq ranges that ``audit_verify``
requires). Runs, erasures and hold changes take one advisory lock, so a hold placed during a run
applies to the next one, never half of it.

Only compliance officers and administrators manage retention; the scheduler runs policies as the
system.
"""

from __future__ import annotations

import logging
import sys
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Sequence

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from governance.audit import PURGE_LISTING_ACTION, canonical_json, purge_marker, seq_ranges
from governance.exceptions import GovernanceError
from governance.models import (
    AuditEvent,
    HoldScope,
    LegalHold,
    RetentionAction,
    RetentionPolicy,
    RetentionRun,
    RetentionRunStatus,
)
from governance.permissions import user_has_role
from governance.retention_registry import (
    RANGE,
    DataKindHandler,
    Hold,
    PurgeCounts,
    PurgeMarker,
    Subject,
    data_kind,
    data_kind_register,
    data_kinds,
    subject_type,
)
from governance.roles import Role
from governance.services import audit_event_record

logger = logging.getLogger(__name__)

# Serialises runs, erasures and hold changes (transaction-scoped advisory lock).
RETENTION_LOCK_KEY = 727_002
MAX_AFTER_DAYS = 36_500  # a hundred years: anything longer is a typo
RETENTION_ROLES = frozenset({Role.COMPLIANCE, Role.ADMINISTRATOR})
ERASURE_SUBJECTS = (HoldScope.CONTACT, HoldScope.CONVERSATION)
PAST = {RetentionAction.DELETE: "deleted", RetentionAction.ANONYMISE: "anonymised"}


class RetentionError(GovernanceError):
    """Base of the retention refusals; the message says why in words a compliance officer can act on."""

    def __init__(self, message: str, *, code: str = "invalid", field: str = ""):
        super().__init__(message)
        self.code = code
        self.field = field  # the form field the message belongs to, if any


class RetentionInvalid(RetentionError):
    """Bad input (an unknown kind, 0 days, a hold without a reason...): nothing changed."""


class RetentionRefused(RetentionError):
    """An act the rules do not allow (erasing held data, or a live conversation): nothing changed,
    and the refusal was audited (``retention.refused``)."""


def can_manage_retention(user) -> bool:
    """Compliance officers and administrators set policies, place and release holds and erase."""
    return user_has_role(user, RETENTION_ROLES)


def _require_manager(actor) -> None:
    if not can_manage_retention(actor):
        raise PermissionDenied("Retention and legal holds are managed by compliance officers and administrators.")


def batch_size_setting() -> int:
    return max(1, int(getattr(settings, "RETENTION_BATCH_SIZE", 500)))


def run_max_rows_setting() -> int:
    return max(1, int(getattr(settings, "RETENTION_RUN_MAX_ROWS", 50_000)))


def _lock() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [RETENTION_LOCK_KEY])


def _user(actor):
    return actor if getattr(actor, "is_authenticated", False) else None


def _actor_label(actor) -> str:
    return actor.get_username() if getattr(actor, "is_authenticated", False) else "the scheduler"


def holds_active() -> list[Hold]:
    """The active holds as handlers see them."""
    return [Hold(id=str(h.pk), name=h.name, subject_type=h.subject_type, subject_id=h.subject_id,
                 from_date=h.from_date, to_date=h.to_date)
            for h in LegalHold.objects.filter(released_at__isnull=True).order_by("created_at")]


# --- policies ---------------------------------------------------------------------------------

def _clean_days(after_days: Any) -> int:
    try:
        days = int(after_days)
    except (TypeError, ValueError):
        raise RetentionInvalid("Enter the number of days as a whole number, e.g. 365.", field="after_days") from None
    if days < 1:
        raise RetentionInvalid("Keep data at least 1 day: 0 or fewer days is not a retention period.",
                               field="after_days")
    if days > MAX_AFTER_DAYS:
        raise RetentionInvalid(f"At most {MAX_AFTER_DAYS:,} days (a hundred years); to keep data for ever, "
                               "disable the policy instead.", field="after_days")
    return days


def _handler_for(kind: str) -> DataKindHandler:
    handler = data_kind(kind)
    if handler is None:
        known = ", ".join(data_kinds()) or "none"
        raise RetentionInvalid(f"Unknown kind of data {kind!r} (known: {known}).", field="data_kind")
    return handler


def retention_policy_set(*, actor, data_kind: str, action: str, after_days: Any, enabled: bool = True
                         ) -> RetentionPolicy:
    """Create or change the policy of one kind of data (one per kind). Audited
    (``retention.policy_set``, with the previous values); saving the same values changes nothing."""
    _require_manager(actor)
    handler = _handler_for(data_kind)
    if action not in handler.actions:
        allowed = " or ".join(PAST[a] for a in handler.actions)
        raise RetentionInvalid(f"{handler.label} can only be {allowed}, not {action!r}.", field="action")
    days = _clean_days(after_days)
    enabled = bool(enabled)
    with transaction.atomic(durable=True):
        _lock()
        policy = RetentionPolicy.objects.select_for_update().filter(data_kind=handler.name).first()
        previous = None
        if policy is None:
            policy = RetentionPolicy.objects.create(data_kind=handler.name, action=action, after_days=days,
                                                    enabled=enabled, created_by=_user(actor), updated_by=_user(actor))
        else:
            previous = {"action": policy.action, "after_days": policy.after_days, "enabled": policy.enabled}
            if previous == {"action": action, "after_days": days, "enabled": enabled}:
                return policy
            policy.action, policy.after_days, policy.enabled = action, days, enabled
            policy.updated_by = _user(actor)
            policy.save(update_fields=["action", "after_days", "enabled", "updated_by", "updated_at"])
        audit_event_record(actor=actor, action="retention.policy_set", target=policy,
                           data={"kind": handler.name, "action": action, "after_days": days, "enabled": enabled,
                                 "previous": previous})
    return policy


# --- legal holds ------------------------------------------------------------------------------

def _subject_label(kind: str, subject_id: str) -> str:
    registered = subject_type(kind)
    if registered is None:
        raise RetentionInvalid(f"Holds on {kind!r} are not available (no app registered that kind of subject).",
                               field="subject_type")
    label = registered.labels([subject_id]).get(subject_id)
    if label is None:
        raise RetentionInvalid(f"No {registered.label.lower()} with the id {subject_id!r}. Copy the id from its "
                               "page in the back office.", field="subject_id")
    return label


def legal_hold_place(*, actor, name: str, reason: str, subject_type: str, subject_id: str = "",  # noqa: PLR0913
                     from_date: date | None = None, to_date: date | None = None) -> LegalHold:
    """Suspend every policy (and erasure) for a customer's data, a conversation's, or everything
    created in a date range (a customer or conversation hold may be narrowed by dates). Audited."""
    _require_manager(actor)
    name, reason, subject_id = (name or "").strip(), (reason or "").strip(), (subject_id or "").strip()
    if not name:
        raise RetentionInvalid("Give the hold a name, e.g. the case it is for.", field="name")
    if len(name) > LegalHold._meta.get_field("name").max_length:
        raise RetentionInvalid("The name is too long (120 characters at most).", field="name")
    if not reason:
        raise RetentionInvalid("Say why the data must be kept (the reason is recorded).", field="reason")
    if subject_type not in HoldScope.values:
        raise RetentionInvalid(f"Unknown scope {subject_type!r}: a customer, a conversation or a date range.",
                               field="subject_type")
    if from_date and to_date and from_date > to_date:
        raise RetentionInvalid("The start date is after the end date.", field="to_date")
    if subject_type == RANGE:
        if subject_id:
            raise RetentionInvalid("A date-range hold covers everything in its dates: leave the id empty.",
                                   field="subject_id")
        if not (from_date or to_date):
            raise RetentionInvalid("A date-range hold needs a start date, an end date or both.", field="from_date")
    else:
        if not subject_id:
            raise RetentionInvalid(f"Enter the id of the {HoldScope(subject_type).label.lower()[2:]} to hold.",
                                   field="subject_id")
        _subject_label(subject_type, subject_id)  # refuses an id that names nothing
    with transaction.atomic(durable=True):
        _lock()
        hold = LegalHold.objects.create(name=name, reason=reason, subject_type=subject_type, subject_id=subject_id,
                                        from_date=from_date, to_date=to_date, created_by=_user(actor))
        audit_event_record(actor=actor, action="retention.hold_placed", target=hold,
                           data={"name": name, "scope": subject_type, "subject_id": subject_id,
                                 "from": from_date.isoformat() if from_date else None,
                                 "to": to_date.isoformat() if to_date else None, "reason": reason})
    return hold


def legal_hold_release(*, actor, hold_id, reason: str) -> LegalHold:
    """End a hold; the policies apply to its data again from their next run. Audited."""
    _require_manager(actor)
    reason = (reason or "").strip()
    if not reason:
        raise RetentionInvalid("Say why the hold can be released (the reason is recorded).", field="reason")
    with transaction.atomic(durable=True):
        _lock()
        hold = LegalHold.objects.select_for_update().filter(pk=hold_id).first()
        if hold is None:
            raise RetentionInvalid("No such legal hold.", code="not_found")
        if hold.released_at is not None:
            who = hold.released_by.get_username() if hold.released_by_id else "someone"
            raise RetentionInvalid(f"“{hold.name}” was already released on {hold.released_at:%d %b %Y} by {who}.",
                                   code="released", field="reason")
        hold.released_at, hold.released_by, hold.release_reason = timezone.now(), _user(actor), reason
        hold.save(update_fields=["released_at", "released_by", "release_reason", "updated_at"])
        audit_event_record(actor=actor, action="retention.hold_released", target=hold,
                           data={"name": hold.name, "scope": hold.subject_type, "subject_id": hold.subject_id,
                                 "reason": reason})
    return hold


# --- runs -------------------------------------------------------------------------------------

def _event_data(counts: PurgeCounts) -> dict[str, Any]:
    """Counts for the audit event; the audit seqs go at the top level, where ``audit_verify`` reads them."""
    data = counts.as_dict()
    refs = dict(data.pop("refs", {}))
    seqs = refs.pop("audit_seqs", None)
    if refs:
        data["refs"] = refs
    if seqs:
        data["audit_seqs"] = seqs
    return data


def retention_run(*, policy: RetentionPolicy, dry_run: bool = False, actor=None, batch_size: int | None = None,
                  limit: int | None = None) -> RetentionRun:
    """Run one policy now (``actor`` None: the scheduler). A dry run (the page's preview) counts
    what a run would do and changes nothing. A real run purges at most ``limit`` rows
    (``RETENTION_RUN_MAX_ROWS``), ``batch_size`` per statement, in one transaction with its
    ``retention.purged`` audit event; the rest is left for the next run (``remaining``).
    Idempotent: purged rows no longer match. A failure rolls the purge back and leaves a failed
    run with the error (audited ``retention.failed``), then raises."""
    if actor is not None:
        _require_manager(actor)
    handler = _handler_for(policy.data_kind)
    batch_size = batch_size or batch_size_setting()
    limit = limit or run_max_rows_setting()
    started = timezone.now()
    if dry_run:
        with transaction.atomic(durable=True):
            cutoff = started - timedelta(days=policy.after_days)
            counts = handler.count(cutoff=cutoff, holds=holds_active(), action=policy.action)
            return RetentionRun.objects.create(
                policy=policy, data_kind=policy.data_kind, action=policy.action, cutoff=cutoff, started_at=started,
                finished_at=timezone.now(), status=RetentionRunStatus.DONE, dry_run=True, started_by=_user(actor),
                matched=counts.matched, held_back=counts.held_back, detail=counts.detail)
    with transaction.atomic(durable=True):
        run = RetentionRun.objects.create(
            policy=policy, data_kind=policy.data_kind, action=policy.action, started_at=started,
            cutoff=started - timedelta(days=policy.after_days), started_by=_user(actor))
    try:
        with transaction.atomic(durable=True):
            _lock()
            locked = RetentionPolicy.objects.select_for_update().get(pk=policy.pk)
            cutoff = started - timedelta(days=locked.after_days)  # as it is now, if it changed meanwhile
            if locked.action not in handler.actions:
                raise RetentionInvalid(f"{handler.label} can no longer be {PAST.get(locked.action, locked.action)}.")
            counts = handler.purge(cutoff=cutoff, holds=holds_active(), action=locked.action,
                                   batch_size=batch_size, limit=limit,
                                   marker=PurgeMarker(policy=f"retention:{locked.data_kind}", at=started))
            event = audit_event_record(
                actor=actor or "retention", action=PURGE_LISTING_ACTION, target=locked,
                data={"trigger": "policy", "kind": locked.data_kind, "action": locked.action,
                      "after_days": locked.after_days, "cutoff": cutoff.isoformat(), "run": str(run.pk),
                      **_event_data(counts)})
            finished = timezone.now()
            RetentionRun.objects.filter(pk=run.pk).update(
                status=RetentionRunStatus.DONE, finished_at=finished, action=locked.action, cutoff=cutoff,
                matched=counts.matched, purged=counts.purged, held_back=counts.held_back, remaining=counts.remaining,
                detail={**counts.detail, **counts.refs}, audit_seq=event.seq, updated_at=finished)
            RetentionPolicy.objects.filter(pk=locked.pk).update(last_run_at=started)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        logger.exception("retention run of %s failed", policy.data_kind)
        with transaction.atomic(durable=True):
            RetentionRun.objects.filter(pk=run.pk).update(status=RetentionRunStatus.FAILED, finished_at=timezone.now(),
                                                          error=error, updated_at=timezone.now())
            audit_event_record(actor=actor or "retention", action="retention.failed", target=policy,
                               data={"kind": policy.data_kind, "run": str(run.pk), "error": type(exc).__name__})
        raise
    run.refresh_from_db()
    return run


def retention_run_due(*, actor=None) -> list[RetentionRun]:
    """Run every enabled policy (beat, daily). One failing policy does not stop the others: its
    run is recorded as failed and logged."""
    runs = []
    for policy in RetentionPolicy.objects.filter(enabled=True).order_by("data_kind"):
        if data_kind(policy.data_kind) is None:
            logger.error("retention policy %s names a kind no app registers; skipped", policy.data_kind)
            continue
        try:
            runs.append(retention_run(policy=policy, actor=actor))
        except Exception:  # noqa: BLE001 (recorded as a failed run and logged by retention_run)
            runs.append(RetentionRun.objects.filter(policy=policy).order_by("-started_at").first())
    return runs


# --- erasure ----------------------------------------------------------------------------------

@dataclass
class ErasureResult:
    subject_type: str
    subject_id: str
    label: str
    counts: dict[str, PurgeCounts] = field(default_factory=dict)
    audit_seq: int | None = None

    @property
    def purged(self) -> int:
        return sum(c.purged for c in self.counts.values())


def _holds_covering(subject: Subject, holds: list[Hold], handlers: list[DataKindHandler], now) -> list[Hold]:
    """The active holds that cover some of the subject's data (each checked alone: few holds)."""
    covering = [h for h in holds if (h.subject_type, h.subject_id) == (subject.type, subject.id)]
    for hold in holds:
        if hold in covering:
            continue
        if any(h.count(cutoff=now, holds=[hold], action=RetentionAction.ANONYMISE, subject=subject).held_back
               for h in handlers):
            covering.append(hold)
    return covering


def _refuse_audited(*, actor, subject: Subject, label: str, message: str, code: str, data: dict | None = None):
    """Audit the refusal in its own transaction (retention events are never purged, so the event
    names the subject by id, never by the label the person sees), then raise it."""
    with transaction.atomic(durable=True):
        audit_event_record(actor=actor, action="retention.refused", target_type=subject.type,
                           target_id=subject.id,
                           data={"service": "data_erase", "code": code, "reason": message.replace(label, subject.type),
                                 **(data or {})})
    raise RetentionRefused(message, code=code)


def data_erase(*, actor, subject_type: str, subject_id: str, reason: str) -> ErasureResult:
    """The right to erasure: anonymise every stored message, AI turn and audit payload of one
    customer (``contact``) or one conversation, and the customer's own name and e-mail, through
    the registered handlers, in one transaction with one ``retention.purged`` event.

    Refused (``RetentionRefused``; nothing changed; audited ``retention.refused`` in its own
    transaction) while any of that data is under a legal hold or a conversation is still open."""
    _require_manager(actor)
    subject_id, reason = (subject_id or "").strip(), (reason or "").strip()
    if subject_type not in ERASURE_SUBJECTS:
        raise RetentionInvalid("Erase a customer or a conversation.", field="subject_type")
    if not subject_id:
        raise RetentionInvalid("Enter the id of the customer or conversation to erase.", field="subject_id")
    if not reason:
        raise RetentionInvalid("Say why the data is erased, e.g. the request's reference.", field="reason")
    label = _subject_label(subject_type, subject_id)
    registered = subject_type_or_fail(subject_type)
    subject = Subject(type=subject_type, id=subject_id)
    handlers = [h for h in data_kinds().values() if h.erasable]
    now = timezone.now()
    refusal = None
    with transaction.atomic(durable=True):
        _lock()
        holds = holds_active()
        covering = _holds_covering(subject, holds, handlers, now)
        live = registered.open_count(subject_id)
        if covering:
            names = ", ".join(f"“{h.name}”" for h in covering)
            refusal = (f"{label} is under legal hold ({names}): nothing was erased. The hold must be released "
                       "before the data can be erased.", "held", {"holds": [h.id for h in covering]})
        elif live:
            if subject_type == HoldScope.CONVERSATION:
                message = f"{label} is still open: nothing was erased. Close it first (a live chat is never erased)."
            else:
                several = live != 1
                message = (f"{label} has {live} conversation{'s' if several else ''} still open: nothing was erased. "
                           f"Close {'them' if several else 'it'} first (a live chat is never erased).")
            refusal = (message, "open", {"open": live})
        else:
            marker = PurgeMarker(policy="erasure", at=now)
            result = ErasureResult(subject_type=subject_type, subject_id=subject_id, label=label)
            for handler in handlers:
                result.counts[handler.name] = handler.purge(
                    cutoff=now, holds=holds, action=RetentionAction.ANONYMISE, batch_size=batch_size_setting(),
                    limit=sys.maxsize, marker=marker, subject=subject)
            own = registered.anonymise(subject_id, marker) if registered.anonymise else 0
            event = audit_event_record(
                actor=actor, action=PURGE_LISTING_ACTION, target_type=registered.target_type, target_id=subject_id,
                data={"trigger": "erasure", "subject_type": subject_type, "reason": reason,
                      "kinds": {name: {k: v for k, v in c.as_dict().items() if k != "refs"}
                                for name, c in result.counts.items()},
                      "subject_rows": own,
                      "refs": {name: {k: v for k, v in c.refs.items() if k != "audit_seqs"}
                               for name, c in result.counts.items() if c.refs},
                      "audit_seqs": [r for c in result.counts.values() for r in c.refs.get("audit_seqs", [])]})
            result.audit_seq = event.seq
    if refusal is not None:
        message, code, data = refusal
        _refuse_audited(actor=actor, subject=subject, label=label, message=message, code=code, data=data)
    return result


def subject_type_or_fail(name: str):
    registered = subject_type(name)
    if registered is None:
        raise RetentionInvalid(f"{name!r} is not a subject apps registered.", field="subject_type")
    return registered


# --- audit payloads: governance's own kind ---------------------------------------------------------

def _audit_base(cutoff, subject: Subject | None) -> Any:
    query = (AuditEvent.objects.filter(occurred_at__lt=cutoff)
             .exclude(action__startswith="retention.").exclude(data={}).exclude(data__has_key="_purged"))
    if subject is not None:
        query = query.filter(subject_type_or_fail(subject.type).audit_filter([subject.id]))
    return query


def _audit_held_q(holds: Sequence[Hold]) -> Q | None:
    """Events a hold covers: a date range by when they happened; a customer or conversation by
    the registered subject's audit filter (its events and its records' events), within the dates."""
    if not holds:
        return None
    query = Q(pk__in=[])
    undated: dict[str, list[str]] = {}
    for hold in holds:
        if hold.subject_type == RANGE:
            query |= hold.dates_q("occurred_at")
        elif not (hold.from_date or hold.to_date):
            undated.setdefault(hold.subject_type, []).append(hold.subject_id)
        else:
            query |= subject_type_or_fail(hold.subject_type).audit_filter([hold.subject_id]) & hold.dates_q(
                "occurred_at")
    for kind, ids in undated.items():
        query |= subject_type_or_fail(kind).audit_filter(ids)
    return query


def _audit_count(*, cutoff, holds: Sequence[Hold], action: str = RetentionAction.ANONYMISE,
                 subject: Subject | None = None) -> PurgeCounts:
    base = _audit_base(cutoff, subject)
    held = _audit_held_q(holds)
    return PurgeCounts(matched=base.count(), held_back=base.filter(held).count() if held is not None else 0)


def _audit_purge(*, cutoff, holds: Sequence[Hold], action: str, batch_size: int, limit: int, marker: PurgeMarker,
                 subject: Subject | None = None) -> PurgeCounts:
    """Replace each eligible payload by its purge marker (the trigger of migration 0007 allows
    exactly that, with ``tandem.audit_purge`` on for this transaction). Retention events keep
    their payloads: they are the listing ``audit_verify`` needs."""
    if action != RetentionAction.ANONYMISE:
        raise RetentionInvalid("Audit events cannot be deleted (the chain would break); anonymise their payloads.")
    counts = _audit_count(cutoff=cutoff, holds=holds, subject=subject)
    base = _audit_base(cutoff, subject)
    held = _audit_held_q(holds)
    if held is not None:
        # NOT IN over ids, not exclude(held): a JSON key missing from a payload is NULL, and
        # NOT (NULL) would drop that row from the purge as well as from the held ones.
        base = base.exclude(pk__in=_audit_base(cutoff, subject).filter(held).values("pk"))
    purged: list[int] = []
    last = 0
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL tandem.audit_purge = 'on'")
        try:
            while len(purged) < limit:
                rows = list(base.filter(seq__gt=last).order_by("seq")
                            .values_list("seq", "data")[:min(batch_size, limit - len(purged))])
                if not rows:
                    break
                markers = {str(seq): purge_marker(data=data, policy=marker.policy, at=marker.at) for seq, data in rows}
                cursor.execute(
                    f"UPDATE {AuditEvent._meta.db_table} AS e SET data = m.value "  # noqa: S608 (the model's table)
                    "FROM jsonb_each(%s::jsonb) AS m WHERE e.seq = m.key::bigint",
                    [canonical_json(markers)])
                purged += [seq for seq, _ in rows]
                last = rows[-1][0]
        finally:
            cursor.execute("SET LOCAL tandem.audit_purge = 'off'")
    counts.purged = len(purged)
    counts.remaining = max(0, counts.matched - counts.held_back - counts.purged)
    if purged:
        counts.refs = {"audit_seqs": seq_ranges(purged)}
    return counts


AUDIT_PAYLOADS = DataKindHandler(
    name="audit_payloads",
    label="Audit payloads",
    actions=(RetentionAction.ANONYMISE,),
    count=_audit_count,
    purge=_audit_purge,
    description="The details recorded with each audit event (parameters, reasons, versions). The events "
                "themselves stay: who did what, when, to which record.",
    action_notes={RetentionAction.ANONYMISE: "Each payload is replaced by a marker that keeps its SHA-256, so "
                                             "audit_verify still verifies the whole chain. Retention events "
                                             "keep theirs."},
    erasable=True,
    position=40,
)


def audit_payloads_register() -> None:
    """Called from ``GovernanceConfig.ready``."""
    data_kind_register(AUDIT_PAYLOADS)


# --- reads (the retention page) ----------------------------------------------------------------

@dataclass
class KindRow:
    handler: DataKindHandler
    policy: RetentionPolicy | None
    last_run: RetentionRun | None
    last_preview: RetentionRun | None


@dataclass
class HoldRow:
    hold: LegalHold
    subject_label: str


@dataclass
class RetentionOverview:
    kinds: list[KindRow]
    holds: list[HoldRow]
    released: list[HoldRow]
    runs: list[RetentionRun]


def _hold_rows(holds: list[LegalHold]) -> list[HoldRow]:
    wanted: dict[str, set[str]] = {}
    for hold in holds:
        if hold.subject_type != RANGE:
            wanted.setdefault(hold.subject_type, set()).add(hold.subject_id)
    labels: dict[tuple[str, str], str] = {}
    for kind, ids in wanted.items():
        registered = subject_type(kind)
        found = registered.labels(sorted(ids)) if registered else {}
        labels.update({(kind, i): label for i, label in found.items()})
    rows = []
    for hold in holds:
        if hold.subject_type == RANGE:
            label = "Everything"
        else:
            label = labels.get((hold.subject_type, hold.subject_id), f"{hold.subject_id} (no longer exists)")
        rows.append(HoldRow(hold=hold, subject_label=label))
    return rows


def retention_overview(*, runs: int = 50, released: int = 20) -> RetentionOverview:
    """Everything the retention page shows, in a fixed number of queries (five, plus one per
    kind of subject held)."""
    policies = {p.data_kind: p for p in RetentionPolicy.objects.select_related("updated_by")}
    latest = {(r.data_kind, r.dry_run): r for r in
              RetentionRun.objects.order_by("data_kind", "dry_run", "-started_at").distinct("data_kind", "dry_run")}
    kinds = [KindRow(handler=h, policy=policies.get(name), last_run=latest.get((name, False)),
                     last_preview=latest.get((name, True))) for name, h in data_kinds().items()]
    holds = list(LegalHold.objects.select_related("created_by", "released_by").filter(
        Q(released_at__isnull=True) | Q(pk__in=LegalHold.objects.filter(released_at__isnull=False)
                                        .order_by("-released_at").values("pk")[:released]))
        .order_by("-created_at"))
    rows = _hold_rows(holds)
    return RetentionOverview(
        kinds=kinds,
        holds=[r for r in rows if r.hold.active],
        released=sorted((r for r in rows if not r.hold.active), key=lambda r: r.hold.released_at, reverse=True),
        runs=_labelled(list(RetentionRun.objects.select_related("started_by").order_by("-started_at")[:runs])),
    )


def _labelled(runs: list[RetentionRun]) -> list[RetentionRun]:
    kinds = data_kinds()
    for run in runs:
        handler = kinds.get(run.data_kind)
        run.kind_label = handler.label if handler else run.data_kind
    return runs


def legal_hold_get(*, hold_id) -> LegalHold | None:
    try:
        return LegalHold.objects.filter(pk=uuid.UUID(str(hold_id))).first()
    except ValueError:
        return None
