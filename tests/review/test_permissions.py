"""Who sees and works which review items: teams as django-guardian object permissions, held
directly or through a group, read-only roles, and the selectors that apply them."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group
from guardian.shortcuts import assign_perm

from governance.models import AuditEvent
from governance.roles import Role
from review.models import ItemStatus, ReviewItem
from review.permissions import (
    items_visible_filter,
    may_see_item,
    may_work_item,
    team_ids_for,
    team_members,
    team_membership_set,
    teams_for,
)
from review.selectors import review_item_get_for_user, review_item_list_for_user, review_queue_counts
from review.services import review_item_claim
from tests.review.factories import make_item, make_user

pytestmark = pytest.mark.django_db


def fresh(user):
    return get_user_model().objects.get(pk=user.pk)


def visible(user) -> set:
    return set(review_item_list_for_user(user=user, statuses=list(ItemStatus.values)).values_list("pk", flat=True))


def test_who_sees_and_works_what(people, support, billing):
    mine, theirs = make_item(support), make_item(billing)
    expected = {
        # name: (sees, may work Support's item, may work Billing's item)
        "agent": ({mine.pk}, True, False),
        "supervisor": ({mine.pk}, True, False),
        "other_agent": ({theirs.pk}, False, True),
        "compliance": ({mine.pk, theirs.pk}, False, False),
        "admin": ({mine.pk, theirs.pk}, True, True),
        "modelowner": (set(), False, False),
        "norole": (set(), False, False),
    }
    for name, (sees, works_mine, works_theirs) in expected.items():
        user = people[name]
        assert visible(user) == sees, name
        assert (may_work_item(user, mine), may_work_item(user, theirs)) == (works_mine, works_theirs), name
        assert may_see_item(user, mine) == (mine.pk in sees), name
    anonymous = AnonymousUser()
    assert visible(anonymous) == set() and not may_work_item(anonymous, mine)
    with pytest.raises(ReviewItem.DoesNotExist):
        review_item_get_for_user(user=people["other_agent"], item_id=mine.pk)
    with pytest.raises(ReviewItem.DoesNotExist):
        review_item_get_for_user(user=people["agent"], item_id="not-a-uuid")


def test_model_wide_grants_give_no_team(support):
    agent = make_user("global-agent", Role.AGENT)
    assign_perm("review.work_team", agent)  # the permission on the model, not on a team
    make_item(support)
    assert team_ids_for(fresh(agent)) == [] and visible(fresh(agent)) == set()


def test_membership_through_a_group(support):
    group = Group.objects.create(name="support-night-shift")
    assign_perm("review.work_team", group, support)
    agent = make_user("night", Role.AGENT)
    agent.groups.add(group)
    item = make_item(support)

    agent = fresh(agent)
    assert [str(t) for t in team_ids_for(agent)] == [str(support.pk)]
    assert visible(agent) == {item.pk}
    assert review_item_claim(item_id=item.pk, actor=agent).claimed_by_id == agent.pk


def test_membership_set_grants_revokes_and_is_audited(support, billing):
    agent = make_user("newcomer", Role.AGENT)
    assert team_ids_for(agent) == []

    team_membership_set(actor=None, team=billing, user=agent, work=True, supervise=True)
    # The remembered team ids are dropped with the change.
    assert [str(t) for t in team_ids_for(agent)] == [str(billing.pk)]
    assert list(team_members(billing)) == [agent]
    assert list(team_members(billing, "supervise_team")) == [agent]
    assert list(teams_for(agent)) == [billing]

    team_membership_set(actor=None, team=billing, user=agent, work=False)
    assert team_ids_for(agent) == []
    assert list(AuditEvent.objects.filter(action="review.team_membership_set").values_list("data", flat=True)) == [
        {"user": "newcomer", "work": True, "supervise": True},
        {"user": "newcomer", "work": False, "supervise": False},
    ]


def test_deactivated_accounts_see_nothing(people, support):
    make_item(support)
    agent = people["agent"]
    agent.is_active = False
    agent.save()
    agent = fresh(agent)
    assert items_visible_filter(agent) is not None
    assert visible(agent) == set()


def test_queue_counts_follow_visibility(people, support, billing):
    claimed = make_item(support)
    review_item_claim(item_id=claimed.pk, actor=people["agent"])
    make_item(support)
    make_item(billing)

    supervised = review_queue_counts(user=people["supervisor"])
    assert (supervised.open, supervised.claimed, supervised.mine) == (1, 1, 0)
    counts = review_queue_counts(user=people["agent"])
    assert (counts.open, counts.claimed, counts.mine, counts.breached) == (1, 1, 1, 0)
    every = review_queue_counts(user=people["compliance"])
    assert (every.open, every.claimed, every.mine) == (2, 1, 0)
    nothing = review_queue_counts(user=people["modelowner"])
    assert (nothing.open, nothing.claimed) == (0, 0)
