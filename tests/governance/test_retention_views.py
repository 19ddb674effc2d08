"""The retention page: every URL × every role, form errors (never a 500) for bad input, and a
fixed number of queries however many policies, holds and runs there are."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from convo.models import Contact
from governance.models import AuditEvent, HoldScope, LegalHold, RetentionPolicy, RetentionRun
from governance.retention import legal_hold_place, legal_hold_release, retention_policy_set, retention_run

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "outsider", "agent", "supervisor", "modelowner", "compliance", "admin"]
MANAGERS = {"compliance", "admin"}
INDEX = reverse("governance:retention_index")


@pytest.fixture
def people(users, outsider):
    return {**users, "outsider": outsider, "anonymous": None}


@pytest.fixture
def setup(users):
    """A policy, an active hold and a customer with no conversation (erasable)."""
    officer = users["compliance"]
    policy = retention_policy_set(actor=officer, data_kind="messages", action="anonymise", after_days=365)
    hold = legal_hold_place(actor=officer, name="Inspection", reason="Regulator's visit", subject_type=HoldScope.RANGE,
                            from_date=timezone.localdate() - timedelta(days=30))
    contact = Contact.objects.create(name="Erin Erasable", email="erin@example.com")
    return {"policy": policy, "hold": hold, "contact": contact}


def _snapshot() -> tuple:
    return (
        sorted(RetentionPolicy.objects.values_list("data_kind", "action", "after_days", "enabled")),
        sorted(LegalHold.objects.values_list("pk", "released_at")),
        RetentionRun.objects.count(),
        AuditEvent.objects.count(),
        sorted(Contact.objects.values_list("pk", "name", "email")),
    )


def _requests(setup) -> dict[str, tuple[str, str, dict]]:
    return {
        "index": ("get", INDEX, {}),
        "policy": ("post", reverse("governance:retention_policy"),
                   {"data_kind": "turns", "action": "delete", "after_days": "400", "enabled": "on"}),
        "preview": ("post", reverse("governance:retention_preview"), {"data_kind": "messages"}),
        "hold_place": ("post", reverse("governance:retention_hold_place"),
                       {"name": "Case 9", "subject_type": "contact", "subject_id": str(setup["contact"].pk),
                        "reason": "Litigation"}),
        "hold_release": ("post", reverse("governance:retention_hold_release", args=[setup["hold"].pk]),
                         {"reason": "Visit over"}),
        "erase": ("post", reverse("governance:retention_erase"),
                  {"subject_type": "contact", "subject_id": str(setup["contact"].pk), "reason": "Request #12",
                   "confirm": "on"}),
    }


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", ["index", "policy", "preview", "hold_place", "hold_release", "erase"])
def test_role_matrix(client, people, setup, role, endpoint):
    method, url, data = _requests(setup)[endpoint]
    if people[role] is not None:
        client.force_login(people[role])
    before = _snapshot()
    response = getattr(client, method)(url, data)
    if role == "anonymous":
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    elif role not in MANAGERS:
        assert response.status_code == 403
    elif method == "get":
        assert response.status_code == 200
        assert b"Retention and legal holds" in response.content
    else:
        assert response.status_code == 302, response.content.decode()[:2000]
        assert response["Location"].startswith(INDEX)
        assert _snapshot() != before
        return
    assert _snapshot() == before, "a refused request changes nothing"


def test_posts_did_what_they_said(client, users, setup):
    client.force_login(users["admin"])
    requests = _requests(setup)
    for endpoint in ("policy", "preview", "hold_place", "hold_release", "erase"):
        _, url, data = requests[endpoint]
        response = client.post(url, data, follow=True)
        assert response.status_code == (400 if endpoint == "erase" else 200)
    assert RetentionPolicy.objects.get(data_kind="turns").after_days == 400
    assert RetentionRun.objects.get(dry_run=True).started_by == users["admin"]
    assert LegalHold.objects.get(name="Case 9").subject_id == str(setup["contact"].pk)
    assert LegalHold.objects.get(pk=setup["hold"].pk).release_reason == "Visit over"
    # Erasure came after the customer hold: refused (their data is held), with the reason on the page.
    assert Contact.objects.get(pk=setup["contact"].pk).name == "Erin Erasable"
    assert "is under legal hold (“Case 9”)" in response.content.decode()
    assert AuditEvent.objects.filter(action="retention.refused").count() == 1


def test_erasure_success_message(client, users, setup):
    client.force_login(users["compliance"])
    _, url, data = _requests(setup)["erase"]
    response = client.post(url, data, follow=True)
    assert "Customer Erin Erasable: erased" in response.content.decode()
    contact = Contact.objects.get(pk=setup["contact"].pk)
    assert (contact.name, contact.email) == ("", "")


def test_get_only_and_post_only(client, users, setup):
    client.force_login(users["compliance"])
    assert client.post(INDEX).status_code == 405
    for endpoint in ("policy", "preview", "hold_place", "erase"):
        assert client.get(_requests(setup)[endpoint][1]).status_code == 405


# --- bad input: form errors, nothing stored -------------------------------------------------------

@pytest.mark.parametrize(("url_name", "data", "message"), [
    ("retention_policy", {"data_kind": "messages", "action": "delete", "after_days": "0"}, "at least 1 day"),
    ("retention_policy", {"data_kind": "messages", "action": "delete", "after_days": "-3"}, "at least 1 day"),
    ("retention_policy", {"data_kind": "messages", "action": "delete", "after_days": "soon"}, "whole number"),
    ("retention_policy", {"data_kind": "messages", "action": "delete", "after_days": ""}, "Enter the number of days"),
    ("retention_policy", {"data_kind": "emails", "action": "delete", "after_days": "30"}, "Unknown kind of data"),
    ("retention_policy", {"data_kind": "uploaded_files", "action": "anonymise", "after_days": "30"},
     "Uploaded files can only be deleted"),
    ("retention_policy", {"data_kind": "messages", "action": "shred", "after_days": "30"}, "Choose delete or anonymise"),
    ("retention_preview", {"data_kind": "turns"}, "Save a policy for this kind first"),
    ("retention_preview", {"data_kind": "emails"}, "Unknown kind of data"),
    ("retention_hold_place", {"name": "X", "subject_type": "contact", "subject_id": "4d7c1f3e-0000-7000-8000-00000000",
                              "reason": "r"}, "No customer with the id"),
    ("retention_hold_place", {"name": "X", "subject_type": "conversation",
                              "subject_id": "0190a8f2-1111-7000-8000-000000000000", "reason": "r"},
     "No conversation with the id"),
    ("retention_hold_place", {"name": "X", "subject_type": "range", "reason": "r"}, "needs a start date"),
    ("retention_hold_place", {"name": "X", "subject_type": "range", "from_date": "2026-13-40", "reason": "r"},
     "Enter a date as YYYY-MM-DD"),
    ("retention_hold_place", {"name": "X", "subject_type": "range", "from_date": "2026-05-02", "to_date": "2026-05-01",
                              "reason": "r"}, "The start date is after the end date"),
    ("retention_hold_place", {"name": "", "subject_type": "range", "from_date": "2026-05-02", "reason": "r"},
     "Give the hold a name"),
    ("retention_hold_place", {"name": "X", "subject_type": "moon", "reason": "r"}, "Select a valid choice"),
    ("retention_erase", {"subject_type": "contact", "subject_id": "x", "reason": "r"}, "Tick the box to confirm"),
    ("retention_erase", {"subject_type": "contact", "subject_id": "nope", "reason": "r", "confirm": "on"},
     "No customer with the id"),
    ("retention_erase", {"subject_type": "range", "subject_id": "x", "reason": "r", "confirm": "on"},
     "Select a valid choice"),
])
def test_bad_input_is_a_form_error(client, users, setup, url_name, data, message):
    client.force_login(users["compliance"])
    before = _snapshot()
    response = client.post(reverse(f"governance:{url_name}"), data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert _snapshot() == before


def test_release_errors(client, users, setup):
    client.force_login(users["compliance"])
    url = reverse("governance:retention_hold_release", args=[setup["hold"].pk])
    response = client.post(url, {"reason": "  "})
    assert response.status_code == 400 and "Say why the hold can be released" in response.content.decode()
    legal_hold_release(actor=users["admin"], hold_id=setup["hold"].pk, reason="Over")
    before = _snapshot()
    response = client.post(url, {"reason": "Over again"})
    assert response.status_code == 400
    assert "“Inspection” was already released on" in response.content.decode()
    assert _snapshot() == before
    unknown = reverse("governance:retention_hold_release", args=["0190a8f2-1111-7000-8000-000000000000"])
    assert client.post(unknown, {"reason": "x"}).status_code == 404
    assert client.post(f"{INDEX}holds/not-a-uuid/release/", {"reason": "x"}).status_code == 404


def test_erasure_refusal_is_shown_and_audited(client, users, setup):
    legal_hold_place(actor=users["compliance"], name="Erin's complaint", reason="Open complaint",
                     subject_type=HoldScope.CONTACT, subject_id=str(setup["contact"].pk))
    client.force_login(users["compliance"])
    before = _snapshot()
    _, url, data = _requests(setup)["erase"]
    response = client.post(url, data)
    assert response.status_code == 400
    assert "Customer Erin Erasable is under legal hold (“Erin’s complaint”): nothing was erased." in \
        response.content.decode().replace("&#x27;", "’").replace("'", "’")
    after = _snapshot()
    assert after[4] == before[4] and after[3] == before[3] + 1
    assert AuditEvent.objects.get(action="retention.refused").actor_label == "compliance"


# --- the page -----------------------------------------------------------------------------------

def _grow(users, n: int) -> None:
    officer = users["compliance"]
    for i in range(n):
        contact = Contact.objects.create(name=f"Customer {i}")
        legal_hold_place(actor=officer, name=f"Case {i}", reason="r", subject_type=HoldScope.CONTACT,
                         subject_id=str(contact.pk))
        hold = legal_hold_place(actor=officer, name=f"Range {i}", reason="r", subject_type=HoldScope.RANGE,
                                to_date=timezone.localdate())
        legal_hold_release(actor=officer, hold_id=hold.pk, reason="done")
    for kind, action in (("turns", "delete"), ("audit_payloads", "anonymise"), ("uploaded_files", "delete")):
        retention_policy_set(actor=officer, data_kind=kind, action=action, after_days=30)
    for policy in RetentionPolicy.objects.all():
        retention_run(policy=policy, dry_run=True, actor=officer)
        retention_run(policy=policy)


# session, user, the user's groups (role check); policies, each kind's latest run and preview
# (DISTINCT ON), holds with their people, the held customers' labels, the run history.
PAGE_QUERIES = 8


def test_page_query_count_does_not_grow(client, users, setup, django_assert_num_queries):
    client.force_login(users["compliance"])
    _grow(users, 1)
    with django_assert_num_queries(PAGE_QUERIES):
        assert client.get(INDEX).status_code == 200
    _grow(users, 4)
    with django_assert_num_queries(PAGE_QUERIES):
        response = client.get(INDEX)
    page = response.content.decode()
    assert page.count('class="rt-card"') == 4
    assert "Customer Customer 3" in page and "Released holds (" in page
    assert response.context["runs"] and len(response.context["holds"]) == 6  # 5 customers + the setup range


def test_page_shows_policies_last_runs_and_previews(client, users, setup):
    officer = users["compliance"]
    retention_run(policy=setup["policy"], dry_run=True, actor=officer)
    retention_run(policy=setup["policy"])
    client.force_login(officer)
    page = client.get(INDEX).content.decode()
    assert "Anonymise after 365 days" in page
    assert "No policy: kept for ever" in page  # turns, uploads, audit payloads
    assert "Not previewed yet" in page and "eligible" in page
    assert "Inspection" in page and "Everything" in page
    assert "Preview</span>" in page and "System" in page
