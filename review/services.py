"""Writes of the review queue. Every transition appends a ReviewEvent and bumps ``version``.

Items change state only here: open → claimed → resolved (or back to open when a claim is
released or expires), and open/claimed → cancelled. Listeners registered in
``review.registry`` hear of each change after commit.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from governance.permissions import can_work_conversations
from governance.services import audit_event_record
from review.exceptions import ItemAlreadyClaimed, ItemClosed, ItemStale, ReviewNotAllowed
from review.models import ItemStatus, ReviewEvent, ReviewItem, Team
from review.permissions import may_work_item, team_ids_for
from review.registry import ItemChange, item_listeners, kind_handler

DEFAULT_TEAM = "Support"
LIVE = (ItemStatus.OPEN, ItemStatus.CLAIMED)


def claim_ttl() -> timedelta:
    return timedelta(minutes=settings.REVIEW_CLAIM_TTL_MINUTES)


def team_default() -> Team:
    team, _ = Team.objects.get_or_create(name=DEFAULT_TEAM)
    return team


def _notify(item: ReviewItem, event: str) -> None:
    change = ItemChange(item_id=str(item.pk), team_id=str(item.team_id) if item.team_id else None, kind=item.kind,
                        event=event, status=item.status, subject_type=item.subject_type,
                        subject_id=item.subject_id)
    for listener in item_listeners():
        transaction.on_commit(lambda fn=listener: fn(change))


def _event(item: ReviewItem, kind: str, *, actor=None, data: dict | None = None) -> None:
    ReviewEvent.objects.create(item=item, kind=kind, actor=actor, data=data or {})
    _notify(item, kind)


def _check_version(item: ReviewItem, expected_version) -> None:
    if expected_version in (None, ""):
        return
    try:
        expected = int(expected_version)
    except (TypeError, ValueError):
        raise ItemStale("This page is out of date. Reload it and try again.") from None
    if expected != item.version:
        raise ItemStale("This item changed since you opened it (someone else acted on it). "
                        "Look at its current state before deciding.")


def _save(item: ReviewItem, fields: list[str]) -> None:
    item.version += 1
    item.save(update_fields=[*fields, "version", "updated_at"])


def review_item_open(*, kind: str, subject_type: str, subject_id: str, title: str, summary: str = "",
                     reason: str = "", priority: int = 2, sla_minutes: int | None = None,
                     data: dict | None = None, team: Team | None = None, actor=None) -> tuple[ReviewItem, bool]:
    """Open an item, or return the open one for the same subject (adding an event to it).

    Runs inside the caller's transaction; returns (item, created). The SLA deadline is the
    team's own SLA when it has one, else ``sla_minutes`` from now."""
    existing = (
        ReviewItem.objects.select_for_update()
        .filter(kind=kind, subject_type=subject_type, subject_id=subject_id, status__in=LIVE)
        .first()
    )
    if existing:
        if priority < existing.priority:
            existing.priority = priority
            _save(existing, ["priority"])
        _event(existing, "reopened", actor=actor, data={"reason": reason})
        return existing, False
    team = team or team_default()
    minutes = team.sla_minutes or sla_minutes
    now = timezone.now()
    try:
        with transaction.atomic():
            item = ReviewItem.objects.create(
                kind=kind, subject_type=subject_type, subject_id=subject_id, title=title[:200], summary=summary,
                reason=reason, priority=priority, team=team, data=data or {},
                sla_due_at=now + timedelta(minutes=minutes) if minutes else None,
            )
    except IntegrityError:
        # A concurrent turn opened it first: use that one.
        item = ReviewItem.objects.get(kind=kind, subject_type=subject_type, subject_id=subject_id, status__in=LIVE)
        return item, False
    _event(item, "opened", actor=actor, data={"reason": reason})
    audit_event_record(actor=actor, action="review.opened", target=item,
                       data={"kind": kind, "reason": reason, "subject": f"{subject_type}:{subject_id}"})
    return item, True


def _require_worker(actor, item: ReviewItem) -> None:
    if not may_work_item(actor, item):
        raise ReviewNotAllowed("You may not work on this item: it belongs to another team, or your role reads only.")


def _locked(item_id) -> ReviewItem:
    return ReviewItem.objects.select_for_update(of=("self",)).select_related("team").get(pk=item_id)


def _claim(item: ReviewItem, actor, now) -> None:
    item.status = ItemStatus.CLAIMED
    item.claimed_by = actor
    item.claim_expires_at = now + claim_ttl()
    _save(item, ["status", "claimed_by", "claim_expires_at"])
    _event(item, "claimed", actor=actor)
    audit_event_record(actor=actor, action="review.claimed", target=item)


def review_item_claim(*, item_id, actor, expected_version=None) -> ReviewItem:
    """Claim an item for ``actor`` (or renew their own claim); refuses when someone else holds
    a live claim. Runs in the caller's transaction when there is one."""
    now = timezone.now()
    with transaction.atomic():
        item = _locked(item_id)
        _require_worker(actor, item)
        if item.status in (ItemStatus.RESOLVED, ItemStatus.CANCELLED):
            raise ItemClosed("This item is already closed.")
        if item.status == ItemStatus.CLAIMED and item.claimed_by_id != actor.pk and item.claim_expires_at > now:
            raise ItemAlreadyClaimed(f"{item.claimed_by} is already working on this.")
        _check_version(item, expected_version)
        _claim(item, actor, now)
    return item


def review_item_claim_next(*, actor, kinds: list[str] | None = None) -> ReviewItem | None:
    """Claim the most urgent unclaimed item of the actor's teams, oldest first, or None.

    Concurrent callers skip rows another transaction has locked, so twenty agents pressing
    "Claim next" at once get twenty different items and never wait on each other's rows."""
    if not can_work_conversations(actor):
        raise ReviewNotAllowed("Your role can read the queue but not work it.")
    team_ids = team_ids_for(actor, codenames=("work_team", "supervise_team"))
    if not team_ids:
        return None
    now = timezone.now()
    with transaction.atomic(durable=True):
        qs = ReviewItem.objects.filter(status=ItemStatus.OPEN, team_id__in=team_ids)
        if kinds:
            qs = qs.filter(kind__in=kinds)
        item = (qs.select_for_update(skip_locked=True, of=("self",)).select_related("team")
                .order_by("priority", "created_at").first())
        if item is None:
            return None
        _require_worker(actor, item)
        _claim(item, actor, now)
    return item


def review_item_release(*, item_id, actor, expected_version=None) -> ReviewItem:
    """Give a claimed item back to the queue (its claimer, or a supervisor/administrator)."""
    from governance.permissions import user_has_role
    from governance.roles import Role

    with transaction.atomic():
        item = _locked(item_id)
        _require_worker(actor, item)
        if item.status != ItemStatus.CLAIMED:
            raise ItemClosed("This item is not claimed.")
        if item.claimed_by_id != actor.pk and not user_has_role(actor, {Role.SUPERVISOR, Role.ADMINISTRATOR}):
            raise ItemAlreadyClaimed(f"{item.claimed_by} is working on this; only they or a supervisor can release it.")
        _check_version(item, expected_version)
        previous = item.claimed_by
        item.status, item.claimed_by, item.claim_expires_at = ItemStatus.OPEN, None, None
        _save(item, ["status", "claimed_by", "claim_expires_at"])
        _event(item, "released", actor=actor, data={"from": previous.get_username() if previous else ""})
        audit_event_record(actor=actor, action="review.released", target=item)
    return item


def review_item_resolve(*, item_id, actor, outcome: str, note: str = "", needed_human: bool | None = None,
                        expected_version=None, check_claim: bool = False) -> ReviewItem:
    """Close an item with an outcome. Runs in the caller's transaction when there is one.

    ``needed_human`` records, for escalations, whether a person was really needed (escalation
    accuracy). With ``check_claim`` an item claimed by someone else is refused."""
    with transaction.atomic():
        item = _locked(item_id)
        if actor is not None:  # None is the system (e.g. a conversation closed by a task)
            _require_worker(actor, item)
        if item.status in (ItemStatus.RESOLVED, ItemStatus.CANCELLED):
            raise ItemClosed("This item was already decided.")
        _check_version(item, expected_version)
        if (check_claim and actor is not None and item.status == ItemStatus.CLAIMED
                and item.claimed_by_id != actor.pk
                and item.claim_expires_at and item.claim_expires_at > timezone.now()):
            raise ItemAlreadyClaimed(f"{item.claimed_by} is working on this.")
        handler = kind_handler(item.kind)
        if handler and handler.outcomes and outcome not in {value for value, _ in handler.outcomes}:
            raise ReviewNotAllowed(f"“{outcome}” is not a decision for this kind of item.")
        item.status = ItemStatus.RESOLVED
        item.resolved_at = timezone.now()
        item.outcome = outcome[:40]
        item.needed_human = needed_human
        _save(item, ["status", "resolved_at", "outcome", "needed_human"])
        _event(item, "resolved", actor=actor, data={"outcome": outcome, "note": note, "needed_human": needed_human})
        audit_event_record(actor=actor, action="review.resolved", target=item,
                           data={"outcome": outcome, "needed_human": needed_human})
        if handler and handler.on_resolved:
            handler.on_resolved(item=item, actor=actor, outcome=outcome, note=note)
    return item


def review_items_resolve_for_subject(*, subject_type: str, subject_id: str, actor, outcome: str,
                                     kinds: list[str] | None = None, needed_human: bool | None = None) -> int:
    qs = ReviewItem.objects.filter(subject_type=subject_type, subject_id=subject_id, status__in=LIVE)
    if kinds:
        qs = qs.filter(kind__in=kinds)
    count = 0
    for item_id in qs.order_by("pk").values_list("pk", flat=True):
        review_item_resolve(item_id=item_id, actor=actor, outcome=outcome, needed_human=needed_human)
        count += 1
    return count


def review_item_needed_human_set(*, item_id, actor, needed_human: bool) -> ReviewItem:
    """Answer "did this escalation need a person?" after the fact (e.g. by a supervisor)."""
    with transaction.atomic():
        item = _locked(item_id)
        _require_worker(actor, item)
        if item.status != ItemStatus.RESOLVED:
            raise ItemClosed("Answer this once the item is closed.")
        item.needed_human = needed_human
        _save(item, ["needed_human"])
        _event(item, "needed_human_set", actor=actor, data={"needed_human": needed_human})
        audit_event_record(actor=actor, action="review.needed_human_set", target=item,
                           data={"needed_human": needed_human})
    return item


def review_claims_release_expired() -> int:
    """Return items whose claim lapsed to the queue (periodic)."""
    now = timezone.now()
    with transaction.atomic():
        items = list(
            ReviewItem.objects.select_for_update(skip_locked=True)
            .filter(status=ItemStatus.CLAIMED, claim_expires_at__lt=now)
        )
        for item in items:
            previous = item.claimed_by_id
            item.status, item.claimed_by, item.claim_expires_at = ItemStatus.OPEN, None, None
            _save(item, ["status", "claimed_by", "claim_expires_at"])
            _event(item, "claim_expired", data={"claimed_by": str(previous)})
    return len(items)


def review_sla_breaches_escalate() -> int:
    """Mark live items past their SLA deadline as breached, raise them to the top priority and
    tell the team's supervisors (periodic; each item is escalated once)."""
    now = timezone.now()
    with transaction.atomic():
        items = list(
            ReviewItem.objects.select_for_update(skip_locked=True)
            .filter(status__in=LIVE, sla_due_at__lt=now, sla_breached_at__isnull=True)
            .order_by("sla_due_at")[:500]
        )
        for item in items:
            item.sla_breached_at = now
            previous = item.priority
            item.priority = 1
            _save(item, ["sla_breached_at", "priority"])
            _event(item, "sla_breached", data={"due": item.sla_due_at.isoformat(), "priority_was": previous})
            audit_event_record(action="review.sla_breached", target=item,
                               data={"due": item.sla_due_at.isoformat(), "team": str(item.team_id or "")})
    return len(items)


def review_claim_renew(*, item_id, actor) -> ReviewItem:
    """Keep one's own claim alive while working (the workspace calls this as the agent types)."""
    with transaction.atomic():
        item = _locked(item_id)
        if item.status != ItemStatus.CLAIMED or item.claimed_by_id != actor.pk:
            raise ItemAlreadyClaimed("You no longer hold this item.")
        # Not a transition: the version stays, so the agent's open page is not made stale.
        item.claim_expires_at = timezone.now() + claim_ttl()
        item.save(update_fields=["claim_expires_at", "updated_at"])
    return item


def review_claims_renew_for_subject(*, subject_type: str, subject_id: str, actor) -> int:
    """Extend the actor's live claims on a subject's items (called as they work on it, e.g.
    with every reply), so a claim lapses only when its holder stops working. Not a transition:
    versions stay. Runs in the caller's transaction."""
    return ReviewItem.objects.filter(subject_type=subject_type, subject_id=subject_id, status=ItemStatus.CLAIMED,
                                     claimed_by=actor).update(claim_expires_at=timezone.now() + claim_ttl())


__all__ = [
    "review_item_open", "review_item_claim", "review_item_claim_next", "review_item_release",
    "review_item_resolve", "review_items_resolve_for_subject", "review_item_needed_human_set",
    "review_claims_release_expired", "review_sla_breaches_escalate", "review_claim_renew",
    "review_claims_renew_for_subject",
]
