"""Small builders for the review tests: people with a role, teams, items opened by the service.

The demo company (``tests.conftest.demo``) loads knowledge and embeddings; these tests only
need people and teams, so they build them directly (and a few tests check the demo's own)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from governance.roles import Role
from review.models import EscalationReason, ItemKind, ReviewEvent, ReviewItem, Team
from review.permissions import team_membership_set
from review.services import review_item_open

_counter = {"n": 0}


def make_user(username: str, role: str | None = None, *, superuser: bool = False):
    user = get_user_model().objects.create_user(username=username, password=f"x-{username}-pass", is_staff=True,
                                                is_superuser=superuser)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def make_team(name: str, *, sla_minutes: int | None = None) -> Team:
    return Team.objects.create(name=name, sla_minutes=sla_minutes)


def join(user, team: Team, *, work: bool = True, supervise: bool = False):
    """Membership through the real helper (an audit event, guardian object permissions)."""
    team_membership_set(actor=None, team=team, user=user, work=work, supervise=supervise)
    return user


def make_item(team: Team, *, kind: str = ItemKind.ESCALATION, priority: int = 2, age_minutes: float | None = None,
              subject_type: str = "convo.conversation", subject_id: str | None = None,
              sla_minutes: int | None = 30, title: str | None = None) -> ReviewItem:
    """An item opened by ``review_item_open``; ``age_minutes`` moves its creation back in time."""
    _counter["n"] += 1
    n = _counter["n"]
    with transaction.atomic():
        item, created = review_item_open(
            kind=kind, subject_type=subject_type, subject_id=subject_id or str(uuid.uuid4()),
            title=title or f"Item {n}", summary=f"Summary {n}", reason=EscalationReason.CUSTOMER_REQUEST,
            priority=priority, sla_minutes=sla_minutes, team=team)
    assert created
    if age_minutes is not None:
        ReviewItem.objects.filter(pk=item.pk).update(created_at=timezone.now() - timedelta(minutes=age_minutes))
        item.refresh_from_db()
    return item


def snapshot(item: ReviewItem) -> tuple:
    """What a refused call must leave as it was."""
    item = ReviewItem.objects.get(pk=item.pk)
    return (item.status, item.version, item.claimed_by_id, item.claim_expires_at, item.needed_human, item.outcome,
            item.priority, ReviewEvent.objects.filter(item_id=item.pk).count())


ROLES = {
    "agent": Role.AGENT,
    "agent2": Role.AGENT,
    "supervisor": Role.SUPERVISOR,
    "compliance": Role.COMPLIANCE,
    "modelowner": Role.MODEL_OWNER,
    "admin": Role.ADMINISTRATOR,
    "other_agent": Role.AGENT,
    "norole": None,
}


def make_people(support: Team, billing: Team) -> dict:
    """One person per role, as in the demo: agent and agent2 work Support, the supervisor
    supervises it, other_agent works Billing only, norole has an account and no role."""
    people = {name: make_user(name, role, superuser=name == "admin") for name, role in ROLES.items()}
    join(people["agent"], support)
    join(people["agent2"], support)
    join(people["supervisor"], support, work=False, supervise=True)
    join(people["other_agent"], billing)
    return people
