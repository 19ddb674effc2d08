"""Review API: the queue as the caller may see it, and the acts on an item (claim, claim next,
release, "did this need a person?").

Session authentication, as the office pages. Every call needs a role with a queue (agent,
supervisor, compliance officer, administrator): anyone else gets 403 whatever they ask. An id
the caller may not see answers 404 exactly like an unknown one; a visible item the caller may
not change (a compliance officer) answers 403; an item someone else holds, a closed item or a
stale ``version`` answer 409 with the reason. Nothing here writes a model: services do.
"""

from __future__ import annotations

from django.utils import timezone
from rest_framework import status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.permissions import can_read_conversations, can_work_conversations
from review import services
from review.api.serializers import (
    BadRequest,
    event_as_dict,
    item_as_dict,
    kinds_parse,
    list_filters_parse,
    needed_human_parse,
    version_parse,
)
from review.exceptions import ItemAlreadyClaimed, ItemClosed, ItemStale, ReviewError, ReviewNotAllowed
from review.models import ReviewItem
from review.selectors import review_events_for_item, review_item_get_for_user, review_item_list_for_user

CONFLICT_CODES = {ItemAlreadyClaimed: "already_claimed", ItemClosed: "closed", ItemStale: "stale"}


class HasReviewQueue(BasePermission):
    """Roles with a queue: agents, supervisors, compliance officers (read only), administrators.
    (Here rather than in review/permissions.py, which holds the team rules, not DRF classes.)"""

    message = "The review queue is for agents, supervisors, compliance officers and administrators."

    def has_permission(self, request, view) -> bool:
        return can_read_conversations(request.user)


class Page(LimitOffsetPagination):
    default_limit = 50
    max_limit = 100


class ReviewAPIView(APIView):
    permission_classes = [IsAuthenticated, HasReviewQueue]
    parser_classes = [JSONParser]

    def handle_exception(self, exc):
        # Domain refusals become answers with the reason, never a 500.
        if isinstance(exc, BadRequest):
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        if isinstance(exc, ReviewNotAllowed):
            exc = PermissionDenied(str(exc))
        elif isinstance(exc, ReviewError):
            code = next((c for cls, c in CONFLICT_CODES.items() if isinstance(exc, cls)), "conflict")
            return Response({"detail": str(exc), "code": code}, status=status.HTTP_409_CONFLICT)
        return super().handle_exception(exc)


def _item(request, item_id) -> ReviewItem:
    try:
        return review_item_get_for_user(user=request.user, item_id=item_id)
    except ReviewItem.DoesNotExist:
        raise NotFound("No review item with that id, or it is not in your teams.") from None


def _fresh(item_id) -> ReviewItem:
    """The item as the service left it, with its team and claimer (one query)."""
    return ReviewItem.objects.select_related("team", "claimed_by").get(pk=item_id)


class ItemListView(ReviewAPIView):
    """GET: the caller's visible items, most urgent then oldest first. Query: ``status`` and
    ``kind`` (comma-separated; default the live statuses open,claimed), ``team`` (an id),
    ``mine=1`` (claimed by the caller), ``limit`` (at most 100) and ``offset``."""

    def get(self, request):
        filters = list_filters_parse(request.query_params)
        items = review_item_list_for_user(user=request.user, **filters)
        page = Page()
        rows = page.paginate_queryset(items, request, view=self)
        now = timezone.now()
        return page.get_paginated_response([item_as_dict(item, now=now) for item in rows])


class ItemDetailView(ReviewAPIView):
    """GET: one item with its history."""

    def get(self, request, item_id):
        item = _item(request, item_id)
        return Response({**item_as_dict(item), "events": [event_as_dict(e) for e in review_events_for_item(item=item)]})


class ItemClaimNextView(ReviewAPIView):
    """POST (optional ``{"kinds": [...]}``): claim the most urgent waiting item of the caller's
    teams → 200 with the item, or 204 when nothing waits."""

    def post(self, request):
        kinds = kinds_parse(request.data)
        if not can_work_conversations(request.user):
            # The service hands nothing to a read-only role; say why rather than "nothing waits".
            raise PermissionDenied("Your role reads the queue only.")
        item = services.review_item_claim_next(actor=request.user, kinds=kinds)
        if item is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(item_as_dict(_fresh(item.pk)))


class ItemClaimView(ReviewAPIView):
    """POST (optional ``{"version": n}``): claim the item, or renew one's own claim."""

    def post(self, request, item_id):
        item = _item(request, item_id)
        version = version_parse(request.data)
        services.review_item_claim(item_id=item.pk, actor=request.user, expected_version=version)
        return Response(item_as_dict(_fresh(item.pk)))


class ItemReleaseView(ReviewAPIView):
    """POST (optional ``{"version": n}``): give the item back to the queue (its claimer, or a
    supervisor or administrator)."""

    def post(self, request, item_id):
        item = _item(request, item_id)
        version = version_parse(request.data)
        services.review_item_release(item_id=item.pk, actor=request.user, expected_version=version)
        return Response(item_as_dict(_fresh(item.pk)))


class ItemNeededHumanView(ReviewAPIView):
    """POST ``{"needed_human": true|false}``: record whether a closed escalation needed a person."""

    def post(self, request, item_id):
        item = _item(request, item_id)
        needed_human = needed_human_parse(request.data)
        services.review_item_needed_human_set(item_id=item.pk, actor=request.user, needed_human=needed_human)
        return Response(item_as_dict(_fresh(item.pk)))
