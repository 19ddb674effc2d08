"""The review API: every endpoint for every role, refusals that change nothing, the error
shapes, filters and pagination, and a query count that does not grow with the page."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from governance.models import AuditEvent
from review.models import ItemKind, ItemStatus, ReviewItem
from review.services import review_item_claim, review_item_resolve
from tests.review.factories import make_item, snapshot

pytestmark = pytest.mark.django_db

ROLES = ["agent", "agent2", "supervisor", "compliance", "modelowner", "admin", "other_agent", "norole", "anonymous"]
NO_QUEUE = {"modelowner": 403, "norole": 403, "anonymous": 403}


def client_for(people, name: str) -> APIClient:
    client = APIClient()
    if name != "anonymous":
        client.force_login(people[name])  # session authentication, as in the office
    return client


def url(name: str, item=None) -> str:
    return reverse(name, args=[item.pk] if item is not None else [])


@pytest.fixture
def queue(people, support, billing):
    """Support: an open item, one claimed by agent, one resolved; Billing: an open item."""
    open_item = make_item(support, priority=2, age_minutes=30)
    claimed = review_item_claim(item_id=make_item(support, priority=1).pk, actor=people["agent"])
    resolved = review_item_resolve(item_id=make_item(support).pk, actor=people["agent"], outcome="answered")
    billing_item = make_item(billing, priority=3)
    return {"open": open_item, "claimed": claimed, "resolved": resolved, "billing": billing_item}


def state(queue) -> dict:
    return {name: snapshot(item) for name, item in queue.items()} | {"audit": AuditEvent.objects.count()}


# --- the list ----------------------------------------------------------------------------------

LIST_EXPECTED = {
    "agent": ["claimed", "open"], "agent2": ["claimed", "open"], "supervisor": ["claimed", "open"],
    "compliance": ["claimed", "open", "billing"], "admin": ["claimed", "open", "billing"],
    "other_agent": ["billing"],
}


@pytest.mark.parametrize("name", ROLES)
def test_list_by_role(people, queue, name):
    response = client_for(people, name).get(url("api-review-items"))

    if name in NO_QUEUE:
        assert response.status_code == 403 and "detail" in response.json()
        return
    assert response.status_code == 200
    body = response.json()
    ids = {str(item.pk): key for key, item in queue.items()}
    assert [ids[row["id"]] for row in body["results"]] == LIST_EXPECTED[name]
    assert body["count"] == len(LIST_EXPECTED[name])


def test_list_fields(people, queue, support):
    response = client_for(people, "agent").get(url("api-review-items"), {"status": "claimed"})
    [row] = response.json()["results"]
    claimed = ReviewItem.objects.get(pk=queue["claimed"].pk)
    assert row == {
        "id": str(claimed.pk), "kind": "escalation", "kind_label": "Escalation", "title": claimed.title,
        "summary": claimed.summary, "reason": "customer_request", "reason_label": "Customer asked for a person",
        "priority": 1, "status": "claimed", "team": {"id": str(support.pk), "name": "Support"},
        "sla_due_at": claimed.sla_due_at.isoformat(), "sla_breached": False, "claimed_by": "agent",
        "claim_expires_at": claimed.claim_expires_at.isoformat(), "version": 2,
        "created_at": claimed.created_at.isoformat(), "subject_type": "convo.conversation",
        "subject_id": claimed.subject_id, "url": f"/office/conversations/{claimed.subject_id}/",
    }


def test_list_filters(people, queue, support, billing):
    client = client_for(people, "admin")

    def ids(**params):
        response = client.get(url("api-review-items"), params)
        assert response.status_code == 200, response.content
        return {r["id"] for r in response.json()["results"]}

    assert ids(status="resolved") == {str(queue["resolved"].pk)}
    assert ids(status="open,resolved") == {str(queue[k].pk) for k in ("open", "resolved", "billing")}
    assert ids(team=str(billing.pk)) == {str(queue["billing"].pk)}
    assert ids(kind="action_approval") == set()
    approval = make_item(support, kind=ItemKind.ACTION_APPROVAL, subject_type="review.test")
    assert ids(kind="action_approval,flagged_answer") == {str(approval.pk)}
    assert ids(mine="1") == set()
    assert client_for(people, "agent").get(url("api-review-items"), {"mine": "1"}).json()["count"] == 1
    # An agent naming another team's id sees nothing of it.
    assert client_for(people, "agent").get(url("api-review-items"), {"team": str(billing.pk)}).json()["count"] == 0


@pytest.mark.parametrize("params", [{"status": "open,nope"}, {"kind": "escalation,boom"}, {"team": "not-an-id"},
                                    {"mine": "maybe"}])
def test_list_refuses_unknown_filters(people, queue, params):
    response = client_for(people, "agent").get(url("api-review-items"), params)
    assert response.status_code == 400 and response.json()["detail"]


def test_list_is_paginated_at_most_100(people, support):
    for n in range(105):
        make_item(support, priority=1 + n % 3)
    client = client_for(people, "agent")

    first = client.get(url("api-review-items")).json()
    assert (first["count"], len(first["results"])) == (105, 50) and first["next"]
    capped = client.get(url("api-review-items"), {"limit": 500}).json()
    assert len(capped["results"]) == 100
    rest = client.get(url("api-review-items"), {"limit": 100, "offset": 100}).json()
    assert len(rest["results"]) == 5 and rest["next"] is None
    every = [r["id"] for r in capped["results"]] + [r["id"] for r in rest["results"]]
    assert len(set(every)) == 105
    assert [r["priority"] for r in capped["results"]] == sorted(r["priority"] for r in capped["results"])


def test_list_query_count_does_not_grow_with_the_page(people, support, django_assert_num_queries):
    client = client_for(people, "agent")
    client.get(url("api-review-items"))  # content types and the like are cached once per process

    def page_with(n: int) -> None:
        ReviewItem.objects.all().delete()
        for i in range(n):
            item = make_item(support, priority=1 + i % 3)
            if i % 2:
                review_item_claim(item_id=item.pk, actor=people["agent2"])
        # session, user, roles, teams, count, page
        with django_assert_num_queries(6):
            response = client.get(url("api-review-items"))
        assert response.json()["count"] == n

    page_with(2)
    page_with(30)


def test_list_of_action_approvals_costs_the_same_queries(people, support, django_assert_num_queries):
    client = client_for(people, "agent")
    client.get(url("api-review-items"))
    for _ in range(5):
        make_item(support, kind=ItemKind.ACTION_APPROVAL, subject_type="integrations.actionrun",
                  subject_id=str(uuid.uuid4()))
    with django_assert_num_queries(6):
        client.get(url("api-review-items"))


# --- one item ------------------------------------------------------------------------------

DETAIL_EXPECTED = {"agent": 200, "agent2": 200, "supervisor": 200, "compliance": 200, "admin": 200,
                   "other_agent": 404, **NO_QUEUE}


@pytest.mark.parametrize("name", ROLES)
def test_detail_by_role(people, queue, name):
    response = client_for(people, name).get(url("api-review-item", queue["claimed"]))
    assert response.status_code == DETAIL_EXPECTED[name]
    if response.status_code == 200:
        assert [e["kind"] for e in response.json()["events"]] == ["opened", "claimed"]
        assert response.json()["events"][1]["actor"] == "agent"


@pytest.mark.parametrize("item_id", [uuid.uuid4(), "not-a-uuid"])
def test_unknown_ids_are_404(people, queue, item_id):
    client = client_for(people, "admin")
    before = state(queue)
    for name in ("api-review-item", "api-review-claim", "api-review-release", "api-review-needed-human"):
        call = client.get if name == "api-review-item" else client.post
        response = call(reverse(name, args=[item_id]), {"needed_human": True}, format="json")
        assert response.status_code == 404, name
        assert response.json() == {"detail": "No review item with that id, or it is not in your teams."}
    assert state(queue) == before


# --- acts × roles --------------------------------------------------------------------------

CLAIM_EXPECTED = {"agent": 200, "agent2": 200, "supervisor": 200, "admin": 200, "compliance": 403,
                  "other_agent": 404, **NO_QUEUE}
RELEASE_EXPECTED = {"agent": 200, "supervisor": 200, "admin": 200, "agent2": 409, "compliance": 403,
                    "other_agent": 404, **NO_QUEUE}
NEEDED_HUMAN_EXPECTED = {"agent": 200, "agent2": 200, "supervisor": 200, "admin": 200, "compliance": 403,
                         "other_agent": 404, **NO_QUEUE}


@pytest.mark.parametrize("name", ROLES)
def test_claim_by_role(people, queue, name):
    item = queue["open"]
    before = state(queue)

    response = client_for(people, name).post(url("api-review-claim", item), {"version": item.version}, format="json")

    assert response.status_code == CLAIM_EXPECTED[name], response.content
    if response.status_code == 200:
        body = response.json()
        assert (body["status"], body["claimed_by"], body["version"]) == ("claimed", people[name].username, 2)
        assert snapshot(item)[:3] == (ItemStatus.CLAIMED, 2, people[name].pk)
    else:
        assert "detail" in response.json()
        assert state(queue) == before


@pytest.mark.parametrize("name", ROLES)
def test_release_by_role(people, queue, name):
    item = queue["claimed"]
    before = state(queue)

    response = client_for(people, name).post(url("api-review-release", item), format="json")

    assert response.status_code == RELEASE_EXPECTED[name], response.content
    if response.status_code == 200:
        body = response.json()
        assert (body["status"], body["claimed_by"], body["version"]) == ("open", None, 3)
    else:
        assert "detail" in response.json()
        assert state(queue) == before


@pytest.mark.parametrize("name", ROLES)
def test_needed_human_by_role(people, queue, name):
    item = queue["resolved"]
    before = state(queue)

    response = client_for(people, name).post(url("api-review-needed-human", item), {"needed_human": True},
                                              format="json")

    assert response.status_code == NEEDED_HUMAN_EXPECTED[name], response.content
    if response.status_code == 200:
        assert ReviewItem.objects.get(pk=item.pk).needed_human is True
        assert response.json()["status"] == "resolved"
    else:
        assert state(queue) == before


CLAIM_NEXT_EXPECTED = {"agent": 200, "agent2": 200, "supervisor": 200, "other_agent": 200,
                       # Administrators see every queue but belong to no team: nothing is handed to them.
                       "admin": 204, "compliance": 403, **NO_QUEUE}


@pytest.mark.parametrize("name", ROLES)
def test_claim_next_by_role(people, queue, name):
    before = state(queue)

    response = client_for(people, name).post(url("api-review-claim-next"))

    assert response.status_code == CLAIM_NEXT_EXPECTED[name], response.content
    if response.status_code == 200:
        expected = queue["billing"] if name == "other_agent" else queue["open"]
        body = response.json()
        assert (body["id"], body["status"], body["claimed_by"]) == (str(expected.pk), "claimed", people[name].username)
    else:
        assert state(queue) == before


def test_claim_next_with_kinds_and_when_nothing_waits(people, queue, support):
    client = client_for(people, "agent")
    flagged = make_item(support, kind=ItemKind.FLAGGED_ANSWER, priority=3)

    response = client.post(url("api-review-claim-next"), {"kinds": ["flagged_answer"]}, format="json")
    assert response.status_code == 200 and response.json()["id"] == str(flagged.pk)
    assert client.post(url("api-review-claim-next"), {"kinds": ["flagged_answer"]}, format="json").status_code == 204
    assert client.post(url("api-review-claim-next"), format="json").json()["id"] == str(queue["open"].pk)
    response = client.post(url("api-review-claim-next"))
    assert response.status_code == 204 and response.content == b""


# --- conflicts and bad requests -------------------------------------------------------------

def test_claiming_someone_elses_item_is_409_and_changes_nothing(people, queue):
    before = state(queue)
    response = client_for(people, "agent2").post(url("api-review-claim", queue["claimed"]))
    assert response.status_code == 409
    assert response.json() == {"detail": "agent is already working on this.", "code": "already_claimed"}
    assert state(queue) == before


def test_stale_version_is_409_and_changes_nothing(people, queue):
    before = state(queue)
    client = client_for(people, "agent")
    response = client.post(url("api-review-release", queue["claimed"]), {"version": 1}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "stale"
    response = client.post(url("api-review-claim", queue["open"]), {"version": 7}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "stale"
    assert state(queue) == before


def test_closed_items_are_409(people, queue):
    before = state(queue)
    client = client_for(people, "agent")
    response = client.post(url("api-review-claim", queue["resolved"]))
    assert response.status_code == 409 and response.json()["code"] == "closed"
    response = client.post(url("api-review-release", queue["open"]))  # not claimed
    assert response.status_code == 409 and response.json()["code"] == "closed"
    response = client.post(url("api-review-needed-human", queue["open"]), {"needed_human": False}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "closed"
    assert state(queue) == before


@pytest.mark.parametrize("endpoint,body", [
    ("api-review-claim", '{"version": '),
    ("api-review-claim", "[1, 2]"),
    ("api-review-claim", '{"version": "two"}'),
    ("api-review-claim", '{"version": true}'),
    ("api-review-claim", '{"version": 0}'),
    ("api-review-release", '{"version": 1.5}'),
    ("api-review-needed-human", "{}"),
    ("api-review-needed-human", '{"needed_human": "yes"}'),
    ("api-review-needed-human", '{"needed_human": 1}'),
    ("api-review-claim-next", '{"kinds": "escalation"}'),
    ("api-review-claim-next", '{"kinds": ["escalation", "nope"]}'),
    ("api-review-claim-next", '"escalation"'),
])
def test_malformed_bodies_are_400_and_change_nothing(people, queue, endpoint, body):
    before = state(queue)
    item = {"api-review-claim": queue["open"], "api-review-release": queue["claimed"],
            "api-review-needed-human": queue["resolved"]}.get(endpoint)
    response = client_for(people, "agent").post(url(endpoint, item), body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert state(queue) == before


def test_other_media_types_are_refused_without_a_500(people, queue):
    before = state(queue)
    response = client_for(people, "agent").post(url("api-review-claim", queue["open"]), {"version": "1"})
    assert response.status_code == 415
    assert state(queue) == before


def test_posts_without_the_trailing_slash(people, queue):
    client = client_for(people, "agent")
    response = client.post(url("api-review-claim", queue["open"]).rstrip("/"), {"version": 1}, format="json")
    assert response.status_code == 200
    assert client.post(url("api-review-claim-next").rstrip("/")).status_code == 204


def test_session_posts_need_the_csrf_token(people, queue):
    """Session authentication: a cross-site form cannot claim on the agent's behalf."""
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(people["agent"])
    before = state(queue)
    response = client.post(url("api-review-claim", queue["open"]), {}, format="json")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    assert state(queue) == before


def test_demo_people_use_the_api(users):
    """The demo's own accounts: the agent works the Support queue, the model owner has none."""
    from review.models import Team

    item = make_item(Team.objects.get(name="Support"))
    agent = APIClient()
    agent.force_login(users["agent"])
    assert agent.post(url("api-review-claim-next")).json()["id"] == str(item.pk)
    owner = APIClient()
    owner.force_login(users["modelowner"])
    assert owner.get(url("api-review-items")).status_code == 403
