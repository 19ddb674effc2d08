"""JSON shapes of the review API (plain dicts: the API only reads and calls services), and the
checks of what a request may send."""

from __future__ import annotations

import logging
import uuid

from django.core.exceptions import ValidationError
from django.urls import NoReverseMatch
from django.utils import timezone

from review.models import ItemKind, ItemStatus, ReviewEvent, ReviewItem
from review.registry import item_url

LIVE = (ItemStatus.OPEN, ItemStatus.CLAIMED)
logger = logging.getLogger(__name__)


class BadRequest(Exception):
    """A request the API cannot read; the message says what to send instead."""


def _iso(value):
    return value.isoformat() if value else None


def _url(item: ReviewItem) -> str | None:
    # A subject the owning app cannot link (e.g. an id of the wrong shape) costs its link, not the page.
    try:
        return item_url(item) or None
    except (NoReverseMatch, ValueError, ValidationError):
        logger.warning("no link for review item %s (%s:%s)", item.pk, item.subject_type, item.subject_id)
        return None


def item_as_dict(item: ReviewItem, *, now=None) -> dict:
    """An item from ``review_item_list_for_user``/``review_item_get_for_user`` (team and
    claimer already joined: no query here, except what a subject's URL handler does)."""
    now = now or timezone.now()
    breached = item.sla_breached_at is not None or bool(
        item.status in LIVE and item.sla_due_at and item.sla_due_at < now)
    return {
        "id": str(item.pk), "kind": item.kind, "kind_label": item.get_kind_display(),
        "title": item.title, "summary": item.summary,
        "reason": item.reason, "reason_label": item.get_reason_display() if item.reason else "",
        "priority": item.priority, "status": item.status,
        "team": {"id": str(item.team_id), "name": item.team.name} if item.team_id else None,
        "sla_due_at": _iso(item.sla_due_at), "sla_breached": breached,
        "claimed_by": item.claimed_by.get_username() if item.claimed_by_id and item.claimed_by else None,
        "claim_expires_at": _iso(item.claim_expires_at),
        "version": item.version, "created_at": _iso(item.created_at),
        "subject_type": item.subject_type, "subject_id": item.subject_id,
        "url": _url(item),
    }


def event_as_dict(event: ReviewEvent) -> dict:
    return {"kind": event.kind, "actor": event.actor.get_username() if event.actor_id and event.actor else None,
            "data": event.data, "created_at": _iso(event.created_at)}


# --- what requests send -----------------------------------------------------------------------

def _choices(raw: str | None, allowed, what: str) -> list[str] | None:
    if raw is None or not raw.strip():
        return None
    values = [v.strip() for v in raw.split(",") if v.strip()]
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise BadRequest(f"Unknown {what} {', '.join(unknown)!s}; choose among {', '.join(allowed)}.")
    return values


def list_filters_parse(params) -> dict:
    """``status``, ``kind`` (comma-separated), ``team`` (an id) and ``mine`` (1/0) from the query."""
    filters: dict = {}
    statuses = _choices(params.get("status"), ItemStatus.values, "status")
    if statuses:
        filters["statuses"] = statuses
    kinds = _choices(params.get("kind"), ItemKind.values, "kind")
    if kinds:
        filters["kinds"] = kinds
    team = (params.get("team") or "").strip()
    if team:
        try:
            filters["team_id"] = uuid.UUID(team)
        except ValueError:
            raise BadRequest("team must be a team id.") from None
    mine = (params.get("mine") or "").strip().lower()
    if mine not in ("", "0", "1", "true", "false"):
        raise BadRequest("mine must be 1 or 0.")
    filters["mine"] = mine in ("1", "true")
    return filters


def body_dict(data) -> dict:
    """The JSON object of a request body; an empty body is an empty object."""
    if data is None or data == "":
        return {}
    if hasattr(data, "dict") and not isinstance(data, dict):  # an empty QueryDict
        data = data.dict()
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object.")
    return data


def version_parse(data) -> int | None:
    """The optional ``version`` the page showed (stale pages are refused with 409)."""
    version = body_dict(data).get("version")
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BadRequest("version must be the item's version, a positive whole number.")
    return version


def kinds_parse(data) -> list[str] | None:
    kinds = body_dict(data).get("kinds")
    if kinds is None:
        return None
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise BadRequest("kinds must be a list of item kinds.")
    unknown = [k for k in kinds if k not in ItemKind.values]
    if unknown:
        raise BadRequest(f"Unknown kind {', '.join(unknown)}; choose among {', '.join(ItemKind.values)}.")
    return kinds or None


def needed_human_parse(data) -> bool:
    value = body_dict(data).get("needed_human")
    if not isinstance(value, bool):
        raise BadRequest("needed_human must be true or false.")
    return value
