"""The review queue's services: claim order and team scoping, concurrent claims, claims that
expire, the SLA sweep, stale pages, read-only roles, the append-only history and listeners."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db import connection, transaction
from django.db.utils import ProgrammingError
from django.utils import timezone

from governance.models import AuditEvent
from review import registry
from review import services as review_services
from review.exceptions import ItemAlreadyClaimed, ItemClosed, ItemStale, ReviewNotAllowed
from review.models import ItemKind, ItemStatus, ReviewEvent, ReviewItem, Team
from review.services import (
    review_claim_renew,
    review_claims_release_expired,
    review_item_claim,
    review_item_claim_next,
    review_item_needed_human_set,
    review_item_release,
    review_item_resolve,
    review_items_resolve_for_subject,
    review_sla_breaches_escalate,
)
from tests.review.factories import join, make_item, make_team, snapshot

pytestmark = pytest.mark.django_db


def events(item) -> list[str]:
    return list(ReviewEvent.objects.filter(item_id=item.pk).order_by("created_at").values_list("kind", flat=True))


def fresh(user):
    """The same person as a new object (team ids and roles are remembered on the instance)."""
    return get_user_model().objects.get(pk=user.pk)


# --- claim next: order and scope -------------------------------------------------------------

def test_claim_next_takes_the_most_urgent_then_the_oldest(people, support):
    newer_urgent = make_item(support, priority=1, age_minutes=5)
    older_urgent = make_item(support, priority=1, age_minutes=50)
    oldest_normal = make_item(support, priority=2, age_minutes=500)
    low = make_item(support, priority=3, age_minutes=5000)

    agent = people["agent"]
    taken = [review_item_claim_next(actor=agent).pk for _ in range(4)]

    assert taken == [older_urgent.pk, newer_urgent.pk, oldest_normal.pk, low.pk]
    assert review_item_claim_next(actor=agent) is None
    for item in ReviewItem.objects.all():
        assert (item.status, item.claimed_by_id, item.version) == (ItemStatus.CLAIMED, agent.pk, 2)
        assert item.claim_expires_at > timezone.now()
        assert events(item) == ["opened", "claimed"]


def test_claim_next_never_hands_out_another_teams_item(people, support, billing):
    billing_urgent = make_item(billing, priority=1, age_minutes=500)
    support_item = make_item(support, priority=3)

    assert review_item_claim_next(actor=people["agent"]).pk == support_item.pk
    assert review_item_claim_next(actor=people["agent"]) is None
    billing_urgent.refresh_from_db()
    assert (billing_urgent.status, billing_urgent.version) == (ItemStatus.OPEN, 1)
    # The Billing agent gets Billing's item and nothing of Support's.
    assert review_item_claim_next(actor=people["other_agent"]).pk == billing_urgent.pk
    assert review_item_claim_next(actor=people["other_agent"]) is None


def test_claim_next_skips_claimed_items_and_filters_kinds(people, support):
    claimed = make_item(support, priority=1)
    review_item_claim(item_id=claimed.pk, actor=people["agent2"])
    approval = make_item(support, kind=ItemKind.ACTION_APPROVAL, subject_type="integrations.actionrun", priority=3)
    escalation = make_item(support, priority=2)

    assert review_item_claim_next(actor=people["agent"], kinds=[ItemKind.ACTION_APPROVAL]).pk == approval.pk
    assert review_item_claim_next(actor=people["agent"]).pk == escalation.pk
    assert review_item_claim_next(actor=people["agent"]) is None


def test_supervisors_claim_their_teams_items_and_roles_that_cannot_work_are_refused(people, support):
    item = make_item(support)
    for name in ("compliance", "modelowner", "norole"):
        with pytest.raises(ReviewNotAllowed):
            review_item_claim_next(actor=people[name])
    assert snapshot(item)[:2] == (ItemStatus.OPEN, 1)
    assert review_item_claim_next(actor=people["supervisor"]).pk == item.pk


def test_a_team_member_without_a_working_role_is_refused(people, support):
    """A compliance officer given a team by mistake still changes nothing."""
    join(people["compliance"], support)
    item = make_item(support)
    before = snapshot(item)
    with pytest.raises(ReviewNotAllowed):
        review_item_claim_next(actor=fresh(people["compliance"]))
    assert snapshot(item) == before


# --- two agents at once ---------------------------------------------------------------------

def _race(people, monkeypatch) -> tuple[list, list]:
    """Two agents call claim-next at the same moment, each in its own thread and connection.

    Every thread meets the other exactly once at a barrier: inside ``_claim`` (holding its row
    lock) or right after claim-next returned without an item. If claim-next waited on the other's
    locked row instead of skipping it, the barrier would time out and the test fail."""
    barrier = threading.Barrier(2, timeout=10)
    original = review_services._claim

    def claim_meeting_the_other(item, actor, now):
        barrier.wait()
        original(item, actor, now)

    monkeypatch.setattr(review_services, "_claim", claim_meeting_the_other)
    results: list = []
    errors: list = []

    def agent(name: str) -> None:
        try:
            user = fresh(people[name])
            item = review_item_claim_next(actor=user)
            if item is None:
                barrier.wait()
            results.append((name, item.pk if item else None))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=agent, args=(name,)) for name in ("agent", "agent2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results, errors


@pytest.mark.django_db(transaction=True)
def test_two_agents_claiming_at_once_get_different_items(support, billing, monkeypatch):
    from tests.review.factories import make_people

    people = make_people(support, billing)
    first, second = make_item(support, priority=1), make_item(support, priority=1)

    results, errors = _race(people, monkeypatch)

    assert not errors, errors
    assert sorted(pk for _, pk in results) == sorted([first.pk, second.pk])
    for item in (first, second):
        assert events(item) == ["opened", "claimed"]
        assert ReviewItem.objects.get(pk=item.pk).version == 2
    owners = {name: pk for name, pk in results}
    assert ReviewItem.objects.get(pk=owners["agent"]).claimed_by_id == people["agent"].pk
    assert ReviewItem.objects.get(pk=owners["agent2"]).claimed_by_id == people["agent2"].pk


@pytest.mark.django_db(transaction=True)
def test_two_agents_and_one_item_one_gets_it_and_the_other_none(support, billing, monkeypatch):
    from tests.review.factories import make_people

    people = make_people(support, billing)
    only = make_item(support)

    results, errors = _race(people, monkeypatch)

    assert not errors, errors
    assert sorted((pk is None) for _, pk in results) == [False, True]
    winner = next(name for name, pk in results if pk is not None)
    only.refresh_from_db()
    assert (only.status, only.claimed_by_id, only.version) == (ItemStatus.CLAIMED, people[winner].pk, 2)
    assert events(only) == ["opened", "claimed"]


# --- claims ---------------------------------------------------------------------------------

def test_claiming_an_item_someone_else_holds_is_refused_and_changes_nothing(people, support):
    item = make_item(support)
    review_item_claim(item_id=item.pk, actor=people["agent"])
    before = snapshot(item)
    audit_before = AuditEvent.objects.count()

    with pytest.raises(ItemAlreadyClaimed, match="agent is already working on this"):
        review_item_claim(item_id=item.pk, actor=people["agent2"])
    with pytest.raises(ItemAlreadyClaimed):
        review_item_release(item_id=item.pk, actor=people["agent2"])

    assert snapshot(item) == before
    assert AuditEvent.objects.count() == audit_before


def test_own_claim_is_renewed_without_making_the_page_stale(people, support):
    item = review_item_claim(item_id=make_item(support).pk, actor=people["agent"])
    ReviewItem.objects.filter(pk=item.pk).update(claim_expires_at=timezone.now() + timedelta(minutes=1))

    renewed = review_claim_renew(item_id=item.pk, actor=people["agent"])

    assert renewed.claim_expires_at > timezone.now() + timedelta(minutes=20)
    assert renewed.version == item.version
    with pytest.raises(ItemAlreadyClaimed):
        review_claim_renew(item_id=item.pk, actor=people["agent2"])
    # Claiming again one's own item also renews it (a transition: the version moves).
    again = review_item_claim(item_id=item.pk, actor=people["agent"], expected_version=item.version)
    assert (again.claimed_by_id, again.version) == (people["agent"].pk, item.version + 1)


def test_an_expired_claim_may_be_taken_by_a_teammate(people, support):
    item = review_item_claim(item_id=make_item(support).pk, actor=people["agent"])
    ReviewItem.objects.filter(pk=item.pk).update(claim_expires_at=timezone.now() - timedelta(seconds=1))

    taken = review_item_claim(item_id=item.pk, actor=people["agent2"])

    assert taken.claimed_by_id == people["agent2"].pk


def test_expired_claims_go_back_to_the_queue(people, support):
    lapsed = review_item_claim(item_id=make_item(support).pk, actor=people["agent"])
    live = review_item_claim(item_id=make_item(support).pk, actor=people["agent2"])
    ReviewItem.objects.filter(pk=lapsed.pk).update(claim_expires_at=timezone.now() - timedelta(minutes=1))

    assert review_claims_release_expired() == 1

    lapsed.refresh_from_db()
    assert (lapsed.status, lapsed.claimed_by_id, lapsed.claim_expires_at) == (ItemStatus.OPEN, None, None)
    assert lapsed.version == 3
    assert events(lapsed) == ["opened", "claimed", "claim_expired"]
    assert ReviewEvent.objects.get(item=lapsed, kind="claim_expired").data == {"claimed_by": str(people["agent"].pk)}
    assert snapshot(live)[:3] == (ItemStatus.CLAIMED, 2, people["agent2"].pk)
    assert review_claims_release_expired() == 0
    # Back in the queue: the next claim hands it out again.
    assert review_item_claim_next(actor=people["agent2"]).pk == lapsed.pk


def test_release_puts_the_item_back_and_a_supervisor_may_release_anyones(people, support):
    item = review_item_claim(item_id=make_item(support).pk, actor=people["agent"])
    released = review_item_release(item_id=item.pk, actor=people["supervisor"], expected_version=item.version)

    assert (released.status, released.claimed_by_id, released.version) == (ItemStatus.OPEN, None, 3)
    assert ReviewEvent.objects.get(item=item, kind="released").data == {"from": "agent"}
    with pytest.raises(ItemClosed):
        review_item_release(item_id=item.pk, actor=people["agent"])


# --- SLA ------------------------------------------------------------------------------------

def test_sla_breach_sweep_raises_priority_once(people, support):
    late = make_item(support, priority=3, sla_minutes=10)
    on_time = make_item(support, priority=3, sla_minutes=10)
    closed_late = make_item(support, priority=3, sla_minutes=10)
    review_item_resolve(item_id=closed_late.pk, actor=people["agent"], outcome="answered")
    past = timezone.now() - timedelta(minutes=1)
    ReviewItem.objects.filter(pk__in=[late.pk, closed_late.pk]).update(sla_due_at=past)

    assert review_sla_breaches_escalate() == 1

    late.refresh_from_db()
    assert late.priority == 1 and late.sla_breached_at is not None and late.version == 2
    assert events(late) == ["opened", "sla_breached"]
    assert ReviewEvent.objects.get(item=late, kind="sla_breached").data["priority_was"] == 3
    assert AuditEvent.objects.filter(action="review.sla_breached", target_id=str(late.pk)).count() == 1
    assert snapshot(on_time)[:2] == (ItemStatus.OPEN, 1) and snapshot(on_time)[6] == 3
    assert events(closed_late) == ["opened", "resolved"]

    breached_at = late.sla_breached_at
    assert review_sla_breaches_escalate() == 0
    late.refresh_from_db()
    assert (late.sla_breached_at, late.version) == (breached_at, 2)
    assert events(late) == ["opened", "sla_breached"]


def test_team_sla_sets_the_deadline(people):
    fast = make_team("Fast lane", sla_minutes=5)
    item = make_item(fast, sla_minutes=60)
    assert timedelta(minutes=4) < item.sla_due_at - item.created_at <= timedelta(minutes=5, seconds=1)
    no_sla = make_item(make_team("Backlog"), sla_minutes=None)
    assert no_sla.sla_due_at is None


# --- resolving ------------------------------------------------------------------------------

def test_resolving_twice_is_refused(people, support):
    item = review_item_resolve(item_id=make_item(support).pk, actor=people["agent"], outcome="answered")
    before = snapshot(item)
    with pytest.raises(ItemClosed):
        review_item_resolve(item_id=item.pk, actor=people["agent2"], outcome="other")
    with pytest.raises(ItemClosed):
        review_item_claim(item_id=item.pk, actor=people["agent2"])
    assert snapshot(item) == before
    assert before[0] == ItemStatus.RESOLVED and before[5] == "answered"


def test_a_stale_version_is_refused_and_changes_nothing(people, support):
    item = make_item(support)
    page_version = item.version
    review_item_claim(item_id=item.pk, actor=people["agent"])
    review_item_release(item_id=item.pk, actor=people["agent"])
    before = snapshot(item)

    for call in (
        lambda: review_item_claim(item_id=item.pk, actor=people["agent2"], expected_version=page_version),
        lambda: review_item_resolve(item_id=item.pk, actor=people["agent2"], outcome="x", expected_version=page_version),
        lambda: review_item_claim(item_id=item.pk, actor=people["agent2"], expected_version="not a number"),
    ):
        with pytest.raises(ItemStale):
            call()
    assert snapshot(item) == before


def test_resolve_with_check_claim_refuses_another_persons_claim(people, support):
    item = review_item_claim(item_id=make_item(support).pk, actor=people["agent"])
    before = snapshot(item)
    with pytest.raises(ItemAlreadyClaimed):
        review_item_resolve(item_id=item.pk, actor=people["agent2"], outcome="x", check_claim=True)
    assert snapshot(item) == before
    done = review_item_resolve(item_id=item.pk, actor=people["agent"], outcome="done", check_claim=True)
    assert done.status == ItemStatus.RESOLVED


@pytest.mark.parametrize("name", ["compliance", "modelowner", "norole", "other_agent"])
def test_people_who_may_not_work_the_item_cannot_claim_release_or_resolve(people, support, name):
    item = review_item_claim(item_id=make_item(support).pk, actor=people["agent"])
    before = snapshot(item)
    audit_before = AuditEvent.objects.count()

    for call in (
        lambda: review_item_claim(item_id=item.pk, actor=people[name]),
        lambda: review_item_release(item_id=item.pk, actor=people[name]),
        lambda: review_item_resolve(item_id=item.pk, actor=people[name], outcome="x"),
        lambda: review_item_needed_human_set(item_id=item.pk, actor=people[name], needed_human=True),
    ):
        with pytest.raises(ReviewNotAllowed):
            call()
    assert snapshot(item) == before
    assert AuditEvent.objects.count() == audit_before


def test_needed_human_is_stored_when_resolving_and_afterwards(people, support):
    item = review_item_resolve(item_id=make_item(support).pk, actor=people["agent"], outcome="answered",
                               needed_human=False, note="the bot had it")
    item.refresh_from_db()
    assert (item.needed_human, item.outcome, item.version) == (False, "answered", 2)
    assert ReviewEvent.objects.get(item=item, kind="resolved").data == {
        "outcome": "answered", "note": "the bot had it", "needed_human": False}

    changed = review_item_needed_human_set(item_id=item.pk, actor=people["supervisor"], needed_human=True)
    changed.refresh_from_db()
    assert (changed.needed_human, changed.version) == (True, 3)
    assert events(item) == ["opened", "resolved", "needed_human_set"]
    assert AuditEvent.objects.filter(action="review.needed_human_set", target_id=str(item.pk)).exists()

    still_open = make_item(support)
    with pytest.raises(ItemClosed):
        review_item_needed_human_set(item_id=still_open.pk, actor=people["agent"], needed_human=True)


def test_resolve_for_subject_closes_the_live_items_of_that_subject(people, support):
    first = make_item(support, subject_id="conv-1")
    other_kind = make_item(support, kind=ItemKind.SHADOW_DISAGREEMENT, subject_id="conv-1")
    other_subject = make_item(support, subject_id="conv-2")

    assert review_items_resolve_for_subject(subject_type="convo.conversation", subject_id="conv-1",
                                            actor=people["agent"], outcome="closed") == 2

    assert snapshot(first)[0] == snapshot(other_kind)[0] == ItemStatus.RESOLVED
    assert snapshot(other_subject)[0] == ItemStatus.OPEN


def test_a_kind_with_registered_outcomes_refuses_any_other(people, support):
    """convo registers approved/rejected for action approvals (review.registry.register_kind)."""
    item = make_item(support, kind=ItemKind.ACTION_APPROVAL, subject_type="integrations.actionrun")
    before = snapshot(item)
    with pytest.raises(ReviewNotAllowed, match="not a decision"), transaction.atomic():
        review_item_resolve(item_id=item.pk, actor=people["agent"], outcome="closed")
    assert snapshot(item) == before
    assert review_item_resolve(item_id=item.pk, actor=people["agent"], outcome="approved").outcome == "approved"


def test_system_resolution_without_a_person_is_allowed(people, support):
    item = review_item_resolve(item_id=make_item(support).pk, actor=None, outcome="conversation_closed")
    assert item.status == ItemStatus.RESOLVED


def test_an_anonymous_actor_cannot_resolve(people, support):
    item = make_item(support)
    before = snapshot(item)
    with pytest.raises(ReviewNotAllowed), transaction.atomic():
        review_item_resolve(item_id=item.pk, actor=AnonymousUser(), outcome="x")
    assert snapshot(item) == before


# --- history --------------------------------------------------------------------------------

def test_events_are_append_only_in_the_database(people, support):
    item = review_item_claim(item_id=make_item(support).pk, actor=people["agent"])
    event = ReviewEvent.objects.filter(item=item).first()

    # insufficient_privilege (SQLSTATE 42501) is a ProgrammingError in psycopg and Django.
    with pytest.raises(ProgrammingError, match="append-only"), transaction.atomic():
        ReviewEvent.objects.filter(pk=event.pk).update(kind="tampered")
    with pytest.raises(ProgrammingError, match="append-only"), transaction.atomic():
        event.data = {"x": 1}
        event.save()
    assert ReviewEvent.objects.get(pk=event.pk).kind == "opened"


def test_events_are_in_order(people, support):
    item = make_item(support)
    review_item_claim(item_id=item.pk, actor=people["agent"])
    review_item_release(item_id=item.pk, actor=people["agent"])
    review_item_claim(item_id=item.pk, actor=people["agent2"])
    review_item_resolve(item_id=item.pk, actor=people["agent2"], outcome="done", needed_human=True)

    history = list(item.events.select_related("actor"))  # Meta.ordering
    assert [e.kind for e in history] == ["opened", "claimed", "released", "claimed", "resolved"]
    assert [e.actor.username if e.actor else None for e in history] == [None, "agent", "agent", "agent2", "agent2"]
    assert [e.created_at for e in history] == sorted(e.created_at for e in history)
    item.refresh_from_db()
    assert item.version == 5


# --- listeners ------------------------------------------------------------------------------

def test_listeners_hear_of_changes_only_after_commit(people, support, monkeypatch,
                                                       django_capture_on_commit_callbacks):
    heard: list[registry.ItemChange] = []
    monkeypatch.setattr(registry, "_listeners", [])
    registry.on_item_changed(heard.append)
    registry.on_item_changed(heard.append)  # registering twice changes nothing

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        item = make_item(support)
        review_item_claim(item_id=item.pk, actor=people["agent"])
    assert heard == [] and len(callbacks) == 2

    for callback in callbacks:
        callback()
    assert [(c.event, c.status) for c in heard] == [("opened", "open"), ("claimed", "claimed")]
    assert heard[1] == registry.ItemChange(item_id=str(item.pk), team_id=str(support.pk), kind=ItemKind.ESCALATION,
                                           event="claimed", status="claimed", subject_type="convo.conversation",
                                           subject_id=item.subject_id)


def test_a_refused_change_tells_no_listener(people, support, monkeypatch, django_capture_on_commit_callbacks):
    heard: list = []
    monkeypatch.setattr(registry, "_listeners", [heard.append])
    item = review_item_claim(item_id=make_item(support).pk, actor=people["agent"])

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(ItemAlreadyClaimed):
            review_item_claim(item_id=item.pk, actor=people["agent2"])
    assert callbacks == [] and heard == []


def test_a_demo_agent_works_the_demo_teams_queue(users):
    item = make_item(Team.objects.get(name="Support"))
    with pytest.raises(ReviewNotAllowed):
        review_item_claim_next(actor=users["compliance"])
    assert review_item_claim_next(actor=users["agent"]).pk == item.pk
