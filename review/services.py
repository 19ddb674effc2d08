"""Writes of the review queue. Every transition appends a ReviewEvent."""

from __future__ import annotations

from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from governance.services import audit_event_record
from review.exceptions import ItemAlreadyClaimed, ItemClosed
from review.models import ItemStatus, ReviewEvent, ReviewItem, Team

CLAIM_TTL = timedelta(minutes=30)
DEFAULT_TEAM = "Support"


def team_default() -> Team:
    team, _ = Team.objects.get_or_create(name=DEFAULT_TEAM)
    return team


def review_item_open(*, kind: str, subject_type: str, subject_id: str, title: str, summary: str = "",
                     reason: str = "", priority: int = 2, sla_minutes: int | None = None,
                     data: dict | None = None, team: Team | None = None, actor=None) -> tuple[ReviewItem, bool]:
    """Open an item, or return the open one for the same subject (adding an event to it).

    Runs inside the caller's transaction; returns (item, created)."""
    existing = (
        ReviewItem.objects.select_for_update()
        .filter(kind=kind, subject_type=subject_type, subject_id=subject_id,
                status__in=[ItemStatus.OPEN, ItemStatus.CLAIMED])
        .first()
    )
    if existing:
        ReviewEvent.objects.create(item=existing, kind="reopened", actor=actor, data={"reason": reason})
        if priority < existing.priority:
            ReviewItem.objects.filter(pk=existing.pk).update(priority=priority)
            existing.priority = priority
        return existing, False
    now = timezone.now()
    try:
        with transaction.atomic():
            item = ReviewItem.objects.create(
                kind=kind, subject_type=subject_type, subject_id=subject_id, title=title[:200], summary=summary,
                reason=reason, priority=priority, team=team or team_default(), data=data or {},
                sla_due_at=now + timedelta(minutes=sla_minutes) if sla_minutes else None,
            )
    except IntegrityError:
        # A concurrent turn opened it first: use that one.
        item = ReviewItem.objects.get(kind=kind, subject_type=subject_type, subject_id=subject_id,
                                      status__in=[ItemStatus.OPEN, ItemStatus.CLAIMED])
        return item, False
    ReviewEvent.objects.create(item=item, kind="opened", actor=actor, data={"reason": reason})
    audit_event_record(actor=actor, action="review.opened", target=item,
                       data={"kind": kind, "reason": reason, "subject": f"{subject_type}:{subject_id}"})
    return item, True


def review_item_claim(*, item_id, actor) -> ReviewItem:
    """Claim an item for ``actor``; refuses when someone else holds a live claim."""
    now = timezone.now()
    with transaction.atomic():
        item = ReviewItem.objects.select_for_update().get(pk=item_id)
        if item.status in (ItemStatus.RESOLVED, ItemStatus.CANCELLED):
            raise ItemClosed("This item is already closed.")
        if item.status == ItemStatus.CLAIMED and item.claimed_by_id != actor.pk and item.claim_expires_at > now:
            raise ItemAlreadyClaimed(f"{item.claimed_by} is already working on this.")
        item.status = ItemStatus.CLAIMED
        item.claimed_by = actor
        item.claim_expires_at = now + CLAIM_TTL
        item.save(update_fields=["status", "claimed_by", "claim_expires_at", "updated_at"])
        ReviewEvent.objects.create(item=item, kind="claimed", actor=actor)
        audit_event_record(actor=actor, action="review.claimed", target=item)
    return item


def review_item_resolve(*, item_id, actor, outcome: str, note: str = "") -> ReviewItem:
    """Close an item with an outcome. Runs in the caller's transaction when there is one."""
    with transaction.atomic():
        item = ReviewItem.objects.select_for_update().get(pk=item_id)
        if item.status in (ItemStatus.RESOLVED, ItemStatus.CANCELLED):
            raise ItemClosed("This item was already decided.")
        item.status = ItemStatus.RESOLVED
        item.resolved_at = timezone.now()
        item.save(update_fields=["status", "resolved_at", "updated_at"])
        ReviewEvent.objects.create(item=item, kind="resolved", actor=actor, data={"outcome": outcome, "note": note})
        audit_event_record(actor=actor, action="review.resolved", target=item, data={"outcome": outcome})
    return item


def review_items_resolve_for_subject(*, subject_type: str, subject_id: str, actor, outcome: str,
                                     kinds: list[str] | None = None) -> int:
    qs = ReviewItem.objects.filter(subject_type=subject_type, subject_id=subject_id,
                                   status__in=[ItemStatus.OPEN, ItemStatus.CLAIMED])
    if kinds:
        qs = qs.filter(kind__in=kinds)
    count = 0
    for item_id in qs.values_list("pk", flat=True):
        review_item_resolve(item_id=item_id, actor=actor, outcome=outcome)
        count += 1
    return count


def review_claims_release_expired() -> int:
    """Return items whose claim lapsed to the queue."""
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            ReviewItem.objects.select_for_update(skip_locked=True)
            .filter(status=ItemStatus.CLAIMED, claim_expires_at__lt=now)
            .values_list("pk", flat=True)
        )
        ReviewItem.objects.filter(pk__in=ids).update(status=ItemStatus.OPEN, claimed_by=None, claim_expires_at=None,
                                                     updated_at=now)
        ReviewEvent.objects.bulk_create([ReviewEvent(item_id=i, kind="claim_expired") for i in ids])
    return len(ids)


__all__ = ["review_item_open", "review_item_claim", "review_item_resolve", "review_claims_release_expired"]
