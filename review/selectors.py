"""Reads of the review queue for a person."""

from __future__ import annotations

from django.db.models import QuerySet

from governance.permissions import can_read_conversations, user_has_role
from governance.roles import Role
from review.models import ItemStatus, ReviewItem


def review_item_list_for_user(*, user, statuses=(ItemStatus.OPEN, ItemStatus.CLAIMED)) -> QuerySet[ReviewItem]:
    """Agents see their teams' items; supervisors, compliance and administrators see all."""
    if not can_read_conversations(user):
        return ReviewItem.objects.none()
    qs = ReviewItem.objects.filter(status__in=statuses).select_related("team", "claimed_by")
    if not user_has_role(user, {Role.SUPERVISOR, Role.COMPLIANCE, Role.ADMINISTRATOR}):
        qs = qs.filter(team__members=user)
    return qs.order_by("priority", "created_at")
