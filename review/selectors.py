"""Reads of the review queue for a person."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from review.models import ItemKind, ItemStatus, ReviewEvent, ReviewItem
from review.permissions import items_visible_filter

LIVE = (ItemStatus.OPEN, ItemStatus.CLAIMED)


def review_item_list_for_user(*, user, statuses=LIVE, kinds=None, team_id=None,
                              mine: bool = False) -> QuerySet[ReviewItem]:
    """The queue as ``user`` may see it: agents their teams' items, supervisors the teams they
    supervise, compliance officers and administrators everything; most urgent, then oldest first."""
    visible = items_visible_filter(user)
    qs = ReviewItem.objects.filter(status__in=statuses)
    if visible is not None:
        qs = qs.filter(visible)
    if kinds:
        qs = qs.filter(kind__in=kinds)
    if team_id:
        qs = qs.filter(team_id=team_id)
    if mine:
        qs = qs.filter(claimed_by=user)
    return qs.select_related("team", "claimed_by").order_by("priority", "created_at")


def review_item_get_for_user(*, user, item_id) -> ReviewItem:
    """Raises ReviewItem.DoesNotExist for unknown ids and for items the user may not see."""
    visible = items_visible_filter(user)
    qs = ReviewItem.objects.select_related("team", "claimed_by")
    if visible is not None:
        qs = qs.filter(visible)
    try:
        return qs.get(pk=item_id)
    except (ValidationError, ValueError):
        raise ReviewItem.DoesNotExist from None


def review_events_for_item(*, item: ReviewItem) -> list[ReviewEvent]:
    return list(item.events.select_related("actor").order_by("created_at"))


@dataclass(frozen=True)
class QueueCounts:
    open: int
    claimed: int
    mine: int
    breached: int


def review_queue_counts(*, user) -> QueueCounts:
    """Counts for the queue header, in one query."""
    visible = items_visible_filter(user)
    qs = ReviewItem.objects.filter(status__in=LIVE)
    if visible is not None:
        qs = qs.filter(visible)
    row = qs.aggregate(
        open=Count("pk", filter=Q(status=ItemStatus.OPEN)),
        claimed=Count("pk", filter=Q(status=ItemStatus.CLAIMED)),
        mine=Count("pk", filter=Q(claimed_by=user)),
        breached=Count("pk", filter=Q(sla_due_at__lt=timezone.now())),
    )
    return QueueCounts(**row)


def escalation_accuracy(*, user, since=None) -> dict:
    """Of the closed escalations someone answered "did this need a person?" for: how many did."""
    visible = items_visible_filter(user)
    qs = ReviewItem.objects.filter(kind=ItemKind.ESCALATION, status=ItemStatus.RESOLVED)
    if visible is not None:
        qs = qs.filter(visible)
    if since is not None:
        qs = qs.filter(resolved_at__gte=since)
    row = qs.aggregate(answered=Count("pk", filter=Q(needed_human__isnull=False)),
                       needed=Count("pk", filter=Q(needed_human=True)), total=Count("pk"))
    row["rate"] = row["needed"] / row["answered"] if row["answered"] else None
    return row
