"""The queue pane of the agent workspace, and the review-item acts behind its buttons.

The pane is the same on every workspace page: the items the person may see (their teams', or
every team's for compliance officers and administrators), most urgent first, with "Claim next".
"""

from __future__ import annotations

from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from governance.permissions import can_read_conversations, can_work_conversations, user_has_role
from governance.roles import Role
from review.exceptions import ReviewError
from review.models import ItemKind, ItemStatus, ReviewItem
from review.registry import item_url
from review.selectors import review_item_get_for_user, review_item_list_for_user, review_queue_counts
from review.services import review_item_claim, review_item_claim_next, review_item_needed_human_set, review_item_release

QUEUE_SIZE = 50
QUEUE_TABS = [
    ("", "All"),
    (ItemKind.ESCALATION, "Escalations"),
    (ItemKind.ACTION_APPROVAL, "Approvals"),
    (ItemKind.FLAGGED_ANSWER, "Flagged"),
]


def item_link(item: ReviewItem) -> str:
    """Where working on an item happens: its subject's page (registered by the app that owns it)."""
    return item_url(item)


def queue_context(request: HttpRequest, *, current_item_ids=(), current_conversation_id=None) -> dict:
    """The queue pane: three queries (teams, counts, the first items)."""
    user = request.user
    kind = request.GET.get("kind", "")
    kinds = [kind] if kind in {value for value, _ in QUEUE_TABS if value} else None
    items = list(review_item_list_for_user(user=user, kinds=kinds)[:QUEUE_SIZE])
    now = timezone.now()
    current = {str(i) for i in current_item_ids}
    rows = []
    for item in items:
        link = item_link(item)
        # The tab stays when an item is opened; the filter goes before the link's anchor.
        base, hash_, anchor = link.partition("#")
        href = f"{base}?kind={kind}{hash_}{anchor}" if link and kinds else link
        rows.append({
            "item": item, "link": link, "href": href,
            "current": str(item.pk) in current or (current_conversation_id is not None and str(
                item.data.get("conversation_id") or item.subject_id) == str(current_conversation_id)),
            "breached": bool(item.sla_due_at and item.sla_due_at < now),
            "mine": item.claimed_by_id == user.pk,
        })
    return {
        "queue": rows,
        "queue_counts": review_queue_counts(user=user),
        "queue_kind": kind if kinds else "",
        "queue_tabs": QUEUE_TABS,
        "queue_more": len(items) == QUEUE_SIZE,
        "is_supervisor": user_has_role(user, {Role.SUPERVISOR, Role.ADMINISTRATOR}),
        "now": now,
    }


def _back(request: HttpRequest, fallback: str) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                   require_https=request.is_secure()):
        return target
    return fallback


def _item_for_worker(request: HttpRequest, item_id) -> ReviewItem:
    if not can_read_conversations(request.user):
        raise PermissionDenied("The back office is for Tandem staff.")
    try:
        item = review_item_get_for_user(user=request.user, item_id=item_id)
    except ReviewItem.DoesNotExist:
        raise Http404("No such item, or it is not in your teams.") from None
    if not can_work_conversations(request.user):
        raise PermissionDenied("Your role can read the queue but not change it.")
    return item


@login_required
@require_POST
def queue_claim_next(request: HttpRequest) -> HttpResponse:
    """Claim the most urgent waiting item of one's teams and open it."""
    if not can_work_conversations(request.user):
        raise PermissionDenied("Your role can read the queue but not work it.")
    kind = request.POST.get("kind", "")
    kinds = [kind] if kind in {value for value, _ in QUEUE_TABS if value} else None
    try:
        item = review_item_claim_next(actor=request.user, kinds=kinds)
    except ReviewError as exc:
        flash.error(request, str(exc))
        return redirect("office:inbox")
    if item is None:
        flash.info(request, "Nothing is waiting in your teams' queue. New items appear here as they come in.")
        return redirect("office:inbox")
    flash.success(request, f"You claimed “{item.title}”. It is yours for the next "
                           f"{int(item.claim_expires_at.timestamp() - timezone.now().timestamp()) // 60 + 1} minutes.")
    return redirect(item_link(item) or "office:inbox")


@login_required
@require_POST
def item_claim(request: HttpRequest, item_id) -> HttpResponse:
    item = _item_for_worker(request, item_id)
    try:
        item = review_item_claim(item_id=item.pk, actor=request.user, expected_version=request.POST.get("version"))
        flash.success(request, "You claimed this item. Others see that you are on it.")
    except ReviewError as exc:
        flash.error(request, str(exc))
    return redirect(_back(request, item_link(item) or reverse("office:inbox")))


@login_required
@require_POST
def item_release(request: HttpRequest, item_id) -> HttpResponse:
    item = _item_for_worker(request, item_id)
    try:
        review_item_release(item_id=item.pk, actor=request.user, expected_version=request.POST.get("version"))
        flash.success(request, "Released: the item is back in the queue for anyone in the team.")
    except ReviewError as exc:
        flash.error(request, str(exc))
    return redirect(_back(request, reverse("office:inbox")))


@login_required
@require_POST
def item_needed_human(request: HttpRequest, item_id) -> HttpResponse:
    """Answer "did this escalation need a person?" on a closed escalation."""
    item = _item_for_worker(request, item_id)
    answer = request.POST.get("needed_human")
    if answer not in ("yes", "no"):
        flash.error(request, "Answer yes or no.")
    elif item.status != ItemStatus.RESOLVED:
        flash.error(request, "Answer this once the conversation is closed.")
    else:
        try:
            review_item_needed_human_set(item_id=item.pk, actor=request.user, needed_human=answer == "yes")
            flash.success(request, "Thanks, noted.")
        except ReviewError as exc:
            flash.error(request, str(exc))
    return redirect(_back(request, item_link(item) or reverse("office:inbox")))
