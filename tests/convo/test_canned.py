"""Canned responses: who gets which (teams are object permissions), placeholders filled safely,
the workspace's JSON endpoint (roles, visibility, query count), the admin and the demo set."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from guardian.shortcuts import assign_perm

from convo.demo.canned import DEMO_CANNED_RESPONSES, load_canned_responses
from convo.models import CannedResponse, Contact
from convo.selectors import canned_responses_for_user
from convo.services import canned_response_render, conversation_escalate, conversation_start
from governance.roles import Role as StaffRole
from review.models import EscalationReason, Team
from review.services import team_default

CANNED_URL = "/office/canned/"


@pytest.fixture
def billing(demo):
    return Team.objects.create(name="Billing")


@pytest.fixture
def billing_agent(billing, django_user_model):
    """An agent of another team."""
    user = django_user_model.objects.create_user(username="billing-agent", password="x-billing-pass", is_staff=True)
    user.groups.add(Group.objects.get(name=StaffRole.AGENT))
    assign_perm("review.work_team", user, billing)
    return user


@pytest.fixture
def responses(users, billing):
    """A known set instead of the demo's (which the demo loader adds)."""
    CannedResponse.objects.all().delete()
    support = team_default()
    make = CannedResponse.objects.create
    return {
        "everyone": make(title="Greeting", shortcut="greeting", text="Hi {customer_name}, {agent_name} here."),
        "support": make(title="Refund timeline", shortcut="refund-timeline", text="Refunds take 5 days.",
                        team=support),
        "billing": make(title="Invoice copy", shortcut="invoice-copy", text="Here is your invoice.", team=billing),
        "inactive": make(title="Old policy", shortcut="old-policy", text="Gone.", active=False),
    }


def escalated(name: str = "") -> object:
    """A conversation in the Support team's queue."""
    conversation = conversation_start(contact=Contact.objects.create(name=name))
    with transaction.atomic():
        conversation_escalate(conversation=conversation, reason=EscalationReason.CUSTOMER_REQUEST,
                              summary="Customer asked for a person.", title="Customer asked for a person")
    return conversation


def shortcuts(user) -> list[str]:
    return list(canned_responses_for_user(user=user).values_list("shortcut", flat=True))


# --- selector -------------------------------------------------------------------------------

def test_agents_get_their_teams_responses_and_those_for_everyone(users, billing_agent, responses):
    # Ordered by title; inactive ones never.
    assert shortcuts(users["agent"]) == ["greeting", "refund-timeline"]
    assert shortcuts(users["supervisor"]) == ["greeting", "refund-timeline"]
    assert shortcuts(billing_agent) == ["greeting", "invoice-copy"]


def test_compliance_and_administrators_get_every_team(users, responses):
    assert shortcuts(users["admin"]) == ["greeting", "invoice-copy", "refund-timeline"]
    assert shortcuts(users["compliance"]) == ["greeting", "invoice-copy", "refund-timeline"]


def test_people_without_a_role_get_nothing(outsider, responses):
    assert shortcuts(outsider) == []


def test_shortcuts_are_unique_per_team_and_among_those_for_everyone(responses, billing):
    CannedResponse.objects.create(title="Greeting", shortcut="greeting", text="Billing hello", team=billing)
    with pytest.raises(IntegrityError), transaction.atomic():
        CannedResponse.objects.create(title="Greeting 2", shortcut="greeting", text="Again")
    with pytest.raises(IntegrityError), transaction.atomic():
        CannedResponse.objects.create(title="Invoice 2", shortcut="invoice-copy", text="Again", team=billing)


# --- rendering ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "customer", "expected"), [
    ("Hi {customer_name}, this is {agent_name}.", "Anna Lindqvist", "Hi Anna Lindqvist, this is Alex."),
    ("Hi {customer_name}!", "", "Hi there!"),
    ("Hi {customer_name}!", "   ", "Hi there!"),
    ("Order {order_id} for {customer_name}", "Anna", "Order {order_id} for Anna"),
    ("{agent.password} {agent_name.__class__} {0} {} { customer_name }", "Anna",
     "{agent.password} {agent_name.__class__} {0} {} { customer_name }"),
    ("Unbalanced { and } braces, {customer_name", "Anna", "Unbalanced { and } braces, {customer_name"),
    ("No placeholders at all.", "Anna", "No placeholders at all."),
])
def test_placeholders_are_filled_safely(users, text, customer, expected):
    conversation = conversation_start(contact=Contact.objects.create(name=customer))
    response = CannedResponse(title="t", shortcut="t", text=text)
    assert canned_response_render(response=response, conversation=conversation, agent=users["agent"]) == expected


def test_an_agent_without_a_first_name_is_named_by_username(users, django_user_model):
    nameless = django_user_model.objects.create_user(username="jo", password="x-jo-pass")
    conversation = conversation_start()
    response = CannedResponse(title="t", shortcut="t", text="{agent_name} for {customer_name}")
    assert canned_response_render(response=response, conversation=conversation, agent=nameless) == "jo for there"


# --- the endpoint ---------------------------------------------------------------------------

# The session, the user, their roles, their teams (read once per request: the conversation's
# visibility and the responses share it), the conversation with its contact, and the responses.
CANNED_QUERIES = 6


def test_an_agent_gets_the_responses_rendered_for_the_conversation(client, users, responses,
                                                                   django_assert_num_queries):
    conversation = escalated("Anna")
    client.force_login(users["agent"])
    # django-guardian caches permission content types per process after their first use.
    client.get(CANNED_URL, {"conversation": str(conversation.pk)})
    with django_assert_num_queries(CANNED_QUERIES):
        response = client.get(CANNED_URL, {"conversation": str(conversation.pk)})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {"responses": [
        {"id": str(responses["everyone"].pk), "title": "Greeting", "shortcut": "greeting",
         "text": "Hi Anna, Alex here."},
        {"id": str(responses["support"].pk), "title": "Refund timeline", "shortcut": "refund-timeline",
         "text": "Refunds take 5 days."},
    ]}


def test_the_query_count_does_not_grow_with_the_responses(client, users, responses, django_assert_num_queries):
    for i in range(10):
        CannedResponse.objects.create(title=f"Extra {i}", shortcut=f"extra-{i}", text="Hello {customer_name}")
    conversation = escalated()
    client.force_login(users["agent"])
    client.get(CANNED_URL, {"conversation": str(conversation.pk)})
    with django_assert_num_queries(CANNED_QUERIES):
        response = client.get(CANNED_URL, {"conversation": str(conversation.pk)})
    assert len(response.json()["responses"]) == 12


@pytest.mark.parametrize("username", ["compliance", "modelowner"])
def test_roles_that_do_not_work_conversations_are_refused(client, users, responses, username):
    conversation = escalated()
    client.force_login(users[username])
    assert client.get(CANNED_URL, {"conversation": str(conversation.pk)}).status_code == 403


def test_no_role_is_refused_and_anonymous_is_sent_to_log_in(client, outsider, users, responses):
    conversation = escalated()
    response = client.get(CANNED_URL, {"conversation": str(conversation.pk)})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    client.force_login(outsider)
    assert client.get(CANNED_URL, {"conversation": str(conversation.pk)}).status_code == 403


@pytest.mark.parametrize("conversation_id", ["00000000-0000-7000-8000-000000000000", "not-a-uuid"])
def test_unknown_conversations_are_404(client, users, responses, conversation_id):
    client.force_login(users["agent"])
    assert client.get(CANNED_URL, {"conversation": conversation_id}).status_code == 404


def test_a_conversation_outside_the_agents_teams_is_404(client, billing_agent, responses):
    conversation = escalated()  # in the Support team's queue
    client.force_login(billing_agent)
    assert client.get(CANNED_URL, {"conversation": str(conversation.pk)}).status_code == 404


def test_the_conversation_is_required(client, users, responses):
    client.force_login(users["agent"])
    assert client.get(CANNED_URL).status_code == 400


def test_only_get(client, users, responses):
    conversation = escalated()
    client.force_login(users["agent"])
    assert client.post(f"{CANNED_URL}?conversation={conversation.pk}").status_code == 405


# --- admin and roles ------------------------------------------------------------------------

def test_supervisors_manage_responses_in_the_admin_and_agents_only_read(client, users, responses, billing):
    supervisor = users["supervisor"]
    assert supervisor.has_perms(["convo.add_cannedresponse", "convo.change_cannedresponse",
                                 "convo.delete_cannedresponse", "convo.view_cannedresponse"])
    assert users["agent"].has_perm("convo.view_cannedresponse")
    assert not users["agent"].has_perm("convo.change_cannedresponse")

    client.force_login(supervisor)
    listing = client.get("/admin/convo/cannedresponse/")
    assert listing.status_code == 200
    shown = {r.shortcut for r in listing.context["cl"].result_list}
    assert shown == {"greeting", "refund-timeline", "old-policy"}  # not the Billing team's
    created = client.post("/admin/convo/cannedresponse/add/", {
        "title": "Exchange sizes", "shortcut": "exchange-sizes", "team": str(team_default().pk),
        "text": "Happy to swap the size for you, {customer_name}.", "active": "on",
    })
    assert created.status_code == 302, created.context["adminform"].errors if created.context else created
    assert CannedResponse.objects.get(shortcut="exchange-sizes").created_by == supervisor
    # Another team's responses cannot be reached, and a team of theirs cannot be chosen.
    assert client.get(f"/admin/convo/cannedresponse/{responses['billing'].pk}/change/").status_code == 302
    refused = client.post("/admin/convo/cannedresponse/add/", {
        "title": "Sneaky", "shortcut": "sneaky", "team": str(billing.pk), "text": "x", "active": "on"})
    assert refused.status_code == 200 and not CannedResponse.objects.filter(shortcut="sneaky").exists()


# --- demo -----------------------------------------------------------------------------------

def test_demo_responses_load_once_and_follow_the_help_centre(demo):
    first = load_canned_responses()
    assert first in (0, len(DEMO_CANNED_RESPONSES))  # 0 when the demo loader already loads them
    assert load_canned_responses() == 0
    demo_rows = CannedResponse.objects.filter(shortcut__in=[d.shortcut for d in DEMO_CANNED_RESPONSES])
    assert demo_rows.count() == len(DEMO_CANNED_RESPONSES) == 4
    assert all(r.created_by and r.created_by.username == "supervisor" for r in demo_rows)
    texts = " ".join(demo_rows.values_list("text", flat=True))
    assert "30 days" in texts and "5 working days" in texts and "2 to 4 working days" in texts
    assert demo_rows.get(shortcut="refund-timeline").team == team_default()
