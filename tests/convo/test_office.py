"""The agent back office: who may see and do what, approvals end to end, and query counts."""

from __future__ import annotations

import html

import pytest
from django.contrib.auth.models import Group
from django.db import transaction
from django.urls import reverse
from guardian.shortcuts import assign_perm

from convo.models import Conversation, ConversationStatus, Decision, Message, Role
from convo.services import conversation_escalate, conversation_start
from governance.models import AuditEvent
from governance.roles import Role as StaffRole
from integrations.models import ActionRun, RunStatus
from review.models import EscalationReason, ItemKind, ItemStatus, ReviewItem, Team

pytestmark = pytest.mark.django_db

REFUND_REQUEST = ("I want my money back for order BW-10003, 40 euros", "The zip broke after a week")


@pytest.fixture
def escalated(say, customer_conversation):
    """A conversation the assistant handed to people (the Support team's queue)."""
    say("Where is my order BW-10001?")
    turn = say("I want to talk to a real person please")
    assert turn.decision == Decision.ESCALATE
    customer_conversation.refresh_from_db()
    return customer_conversation


@pytest.fixture
def pending_refund(say, customer_conversation):
    """A refund the assistant proposed, waiting for a person's approval."""
    say(REFUND_REQUEST[0])
    turn = say(REFUND_REQUEST[1])
    assert turn.decision == Decision.APPROVAL
    return ActionRun.objects.get(pk=turn.action_run_id)


@pytest.fixture
def escalated_with_refund(pending_refund, say, customer_conversation):
    """A refund waiting for approval, after which the customer asked for a person."""
    assert say("I want to talk to a real person please").decision == Decision.ESCALATE
    customer_conversation.refresh_from_db()
    return customer_conversation, pending_refund


@pytest.fixture
def billing_agent(demo, django_user_model):
    """An agent of another team, who must not see the Support team's conversations."""
    user = django_user_model.objects.create_user(username="billing-agent", password="x-billing-pass", is_staff=True)
    user.groups.add(Group.objects.get(name=StaffRole.AGENT))
    assign_perm("review.work_team", user, Team.objects.create(name="Billing"))
    return user


def snapshot(conversation: Conversation) -> dict:
    """Everything a POST from the office could change."""
    conversation.refresh_from_db()
    return {
        "conversation": (conversation.status, conversation.assigned_agent_id, conversation.last_seq,
                         conversation.resolution, conversation.closed_at),
        "messages": list(Message.objects.filter(conversation=conversation).values_list("seq", "role", "text")),
        "runs": list(ActionRun.objects.filter(subject_id=str(conversation.pk))
                     .values_list("pk", "status", "params", "approved_by_id")),
        "items": list(ReviewItem.objects.order_by("created_at").values_list("pk", "status", "claimed_by_id")),
        "audit": AuditEvent.objects.count(),
    }


def page(client, user, url):
    client.force_login(user)
    return client.get(url)


def post_actions(conversation, run) -> list[tuple[str, str, dict]]:
    """Every POST the office offers on a conversation and its action run."""
    return [
        ("takeover", reverse("office:takeover", args=[conversation.pk]), {}),
        ("reply", reverse("office:reply", args=[conversation.pk]), {"text": "Hello from the office"}),
        ("hand_back", reverse("office:hand_back", args=[conversation.pk]), {}),
        ("close", reverse("office:close", args=[conversation.pk]), {"resolution": "resolved"}),
        ("approve", reverse("office:action_decide", args=[run.pk]), {"decision": "approve"}),
        ("reject", reverse("office:action_decide", args=[run.pk]), {"decision": "reject", "reason": "No"}),
    ]


# --- who may see what ------------------------------------------------------------------------

def test_anonymous_visitors_are_sent_to_login(client, pending_refund, customer_conversation,
                                              django_capture_on_commit_callbacks):
    conversation = customer_conversation
    for url in (reverse("office:inbox"), reverse("office:conversation", args=[conversation.pk])):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(f"{reverse('login')}?next=")
    before = snapshot(conversation)
    with django_capture_on_commit_callbacks(execute=True):
        for _, url, data in post_actions(conversation, pending_refund):
            response = client.post(url, data)
            assert response.status_code == 302
            assert response["Location"].startswith(reverse("login"))
    assert snapshot(conversation) == before


@pytest.mark.parametrize("who", ["outsider", "modelowner"])
def test_staff_without_a_conversation_role_get_403(client, who, outsider, users, pending_refund,
                                                   customer_conversation, django_capture_on_commit_callbacks):
    user = outsider if who == "outsider" else users[who]
    conversation = customer_conversation
    assert page(client, user, reverse("office:inbox")).status_code == 403
    assert page(client, user, reverse("office:conversation", args=[conversation.pk])).status_code == 403
    before = snapshot(conversation)
    with django_capture_on_commit_callbacks(execute=True):
        for name, url, data in post_actions(conversation, pending_refund):
            assert client.post(url, data).status_code == 403, name
    assert snapshot(conversation) == before


def test_compliance_reads_everything_and_changes_nothing(client, users, escalated_with_refund, demo_backend,
                                                         django_capture_on_commit_callbacks):
    conversation, pending_refund = escalated_with_refund
    inbox = page(client, users["compliance"], reverse("office:inbox"))
    assert inbox.status_code == 200
    assert "can read conversations and the queue but not act on them" in inbox.content.decode()
    assert 'id="claim-next"' not in inbox.content.decode()
    detail = client.get(reverse("office:conversation", args=[conversation.pk]))
    assert detail.status_code == 200
    body = detail.content.decode()
    assert "I want to talk to a real person please" in body
    assert reverse("office:takeover", args=[conversation.pk]) not in body
    assert reverse("office:action_decide", args=[pending_refund.pk]) not in body

    before = snapshot(conversation)
    with django_capture_on_commit_callbacks(execute=True):
        for name, url, data in post_actions(conversation, pending_refund):
            assert client.post(url, data).status_code == 403, name
    assert snapshot(conversation) == before
    assert demo_backend.execution_counts == {}


@pytest.mark.parametrize("who", ["agent", "supervisor", "admin"])
def test_workers_see_the_queue_and_the_conversation(client, users, who, escalated):
    inbox = page(client, users[who], reverse("office:inbox"))
    assert inbox.status_code == 200
    assert [r["item"].subject_id for r in inbox.context["queue"]] == [str(escalated.pk)]
    assert [c.pk for c in inbox.context["live"]] == [escalated.pk]
    content = inbox.content.decode()
    assert reverse("office:conversation", args=[escalated.pk]) in content
    assert "Customer asked for a person" in content

    detail = client.get(reverse("office:conversation", args=[escalated.pk]))
    assert detail.status_code == 200
    assert reverse("office:takeover", args=[escalated.pk]) in detail.content.decode()


def test_agent_of_another_team_cannot_see_or_touch_the_conversation(client, billing_agent, escalated_with_refund,
                                                                     demo_backend, django_capture_on_commit_callbacks):
    conversation, pending_refund = escalated_with_refund
    inbox = page(client, billing_agent, reverse("office:inbox"))
    assert inbox.status_code == 200
    assert inbox.context["queue"] == [] and inbox.context["live"] == []
    assert str(conversation.pk) not in inbox.content.decode()
    assert client.get(reverse("office:conversation", args=[conversation.pk])).status_code == 404

    before = snapshot(conversation)
    with django_capture_on_commit_callbacks(execute=True):
        for name, url, data in post_actions(conversation, pending_refund):
            assert client.post(url, data).status_code == 404, name
    assert snapshot(conversation) == before
    assert demo_backend.execution_counts == {}


def test_unknown_and_malformed_ids_are_404(client, users):
    client.force_login(users["supervisor"])
    assert client.get("/office/conversations/01a21000-0000-7000-8000-000000000000/").status_code == 404
    assert client.get("/office/conversations/not-a-uuid/").status_code == 404
    assert client.post("/office/actions/01a21000-0000-7000-8000-000000000000/decide/",
                       {"decision": "approve"}).status_code == 404


def test_pages_refuse_the_wrong_method(client, users, escalated):
    client.force_login(users["agent"])
    assert client.post(reverse("office:inbox")).status_code == 405
    assert client.get(reverse("office:takeover", args=[escalated.pk])).status_code == 405
    assert escalated.status == ConversationStatus.HANDOFF


# --- what agents do ---------------------------------------------------------------------------

def test_agent_takes_over_replies_hands_back_and_closes(client, users, escalated,
                                                        django_capture_on_commit_callbacks):
    agent = users["agent"]
    client.force_login(agent)
    conversation = escalated
    url = reverse("office:conversation", args=[conversation.pk])

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("office:takeover", args=[conversation.pk]), follow=True)
    assert response.redirect_chain == [(url, 302)]
    assert "You are now in the chat" in response.content.decode()
    conversation.refresh_from_db()
    assert (conversation.status, conversation.assigned_agent) == (ConversationStatus.HUMAN, agent)
    item = ReviewItem.objects.get(kind=ItemKind.ESCALATION, subject_id=str(conversation.pk))
    assert (item.status, item.claimed_by) == (ItemStatus.CLAIMED, agent)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("office:reply", args=[conversation.pk]),
                               {"text": "Hi, Alex here. BW-10001 ships tomorrow."}, follow=True)
    assert "Hi, Alex here. BW-10001 ships tomorrow." in response.content.decode()
    reply = conversation.messages.order_by("-seq").first()
    assert (reply.role, reply.author, reply.text) == (Role.AGENT, agent, "Hi, Alex here. BW-10001 ships tomorrow.")

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("office:hand_back", args=[conversation.pk]), follow=True)
    assert "Handed back to the assistant." in response.content.decode()
    conversation.refresh_from_db()
    assert (conversation.status, conversation.assigned_agent) == (ConversationStatus.BOT, None)
    item.refresh_from_db()
    assert item.status == ItemStatus.RESOLVED

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("office:close", args=[conversation.pk]), {"resolution": "answered"},
                               follow=True)
    assert "Conversation closed." in response.content.decode()
    conversation.refresh_from_db()
    assert (conversation.status, conversation.resolution) == (ConversationStatus.CLOSED, "answered")
    actions = set(AuditEvent.objects.filter(target_id=str(conversation.pk)).values_list("action", flat=True))
    assert {"conversation.taken_over", "conversation.agent_replied", "conversation.handed_back",
            "conversation.closed"} <= actions


def test_reply_without_taking_over_is_refused_with_a_message(client, users, escalated):
    client.force_login(users["agent"])
    before = snapshot(escalated)
    response = client.post(reverse("office:reply", args=[escalated.pk]), {"text": "Hello"}, follow=True)
    assert response.status_code == 200
    assert "Take over the conversation before replying." in html.unescape(response.content.decode())
    assert snapshot(escalated) == before


def test_second_agent_cannot_take_over_a_handled_conversation(client, users, escalated):
    from convo.services import conversation_takeover

    conversation_takeover(conversation_id=escalated.pk, agent=users["agent"])
    before = snapshot(escalated)
    client.force_login(users["agent2"])
    response = client.post(reverse("office:takeover", args=[escalated.pk]), follow=True)
    assert "is already handling this conversation" in response.content.decode()
    assert snapshot(escalated) == before


# --- approvals -------------------------------------------------------------------------------

def test_approval_is_listed_and_offered(client, users, pending_refund, customer_conversation):
    inbox = page(client, users["agent"], reverse("office:inbox"))
    [item] = [r["item"] for r in inbox.context["queue"] if r["item"].kind == ItemKind.ACTION_APPROVAL]
    assert item.subject_id == str(pending_refund.pk)
    assert "Issue a refund" in inbox.content.decode()
    detail = client.get(reverse("office:conversation", args=[customer_conversation.pk]))
    assert reverse("office:action_decide", args=[pending_refund.pk]) in detail.content.decode()


def test_approve_runs_the_action_and_tells_the_customer(client, users, pending_refund, customer_conversation,
                                                        demo_backend, django_capture_on_commit_callbacks):
    agent = users["agent"]
    client.force_login(agent)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("office:action_decide", args=[pending_refund.pk]), {"decision": "approve"},
                               follow=True)
    assert "Approved. The action is running." in response.content.decode()
    pending_refund.refresh_from_db()
    assert pending_refund.status == RunStatus.SUCCEEDED
    assert pending_refund.approved_by == agent
    assert demo_backend.execution_counts == {pending_refund.idempotency_key: 1}
    refund_id = pending_refund.result["refund_id"]

    told = Message.objects.get(conversation=customer_conversation, data__kind="action_done")
    assert told.role == Role.ASSISTANT
    assert told.text == f"Refund {refund_id} of 40.00 EUR for order BW-10003 has been issued."
    assert told.data["action_run_id"] == str(pending_refund.pk)
    item = ReviewItem.objects.get(kind=ItemKind.ACTION_APPROVAL, subject_id=str(pending_refund.pk))
    assert item.status == ItemStatus.RESOLVED

    # Deciding again changes nothing and the customer is not told twice.
    before = snapshot(customer_conversation)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("office:action_decide", args=[pending_refund.pk]), {"decision": "approve"},
                               follow=True)
    assert "not awaiting approval" in response.content.decode()
    assert snapshot(customer_conversation) == before
    assert demo_backend.execution_counts == {pending_refund.idempotency_key: 1}


def test_approve_with_edited_params(client, users, pending_refund, customer_conversation, demo_backend,
                                    django_capture_on_commit_callbacks):
    client.force_login(users["agent"])
    params = '{"order_id": "BW-10003", "amount": 25, "reason": "The zip broke after a week"}'
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("office:action_decide", args=[pending_refund.pk]),
                    {"decision": "approve", "params": params})
    pending_refund.refresh_from_db()
    assert pending_refund.status == RunStatus.SUCCEEDED
    assert pending_refund.params["amount"] == 25
    told = Message.objects.get(conversation=customer_conversation, data__kind="action_done")
    assert "25.00 EUR" in told.text


@pytest.mark.parametrize(("params", "error"), [
    ('{"order_id": "BW-10003", "amount": -1, "reason": "The zip broke"}', "amount: -1 is less than or equal to"),
    ('{"order_id": "BW-10003", "amount": 40}', "&#x27;reason&#x27; is a required property"),
    ("{not json", "The edited parameters are not valid JSON."),
])
def test_approve_with_params_that_break_the_schema_changes_nothing(client, users, pending_refund, params, error,
                                                                   customer_conversation, demo_backend,
                                                                   django_capture_on_commit_callbacks):
    client.force_login(users["agent"])
    before = snapshot(customer_conversation)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("office:action_decide", args=[pending_refund.pk]),
                               {"decision": "approve", "params": params}, follow=True)
    assert response.status_code == 200
    assert error in response.content.decode()
    assert snapshot(customer_conversation) == before
    pending_refund.refresh_from_db()
    assert pending_refund.status == RunStatus.AWAITING_APPROVAL
    assert demo_backend.execution_counts == {}


def test_reject_tells_the_customer_why(client, users, pending_refund, customer_conversation, demo_backend,
                                       django_capture_on_commit_callbacks):
    client.force_login(users["agent"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("office:action_decide", args=[pending_refund.pk]),
                               {"decision": "reject", "reason": "The order is past the return window"}, follow=True)
    assert "Rejected. The customer has been told." in response.content.decode()
    pending_refund.refresh_from_db()
    assert pending_refund.status == RunStatus.REJECTED
    told = Message.objects.get(conversation=customer_conversation, data__kind="action_rejected")
    assert "The order is past the return window" in told.text
    assert demo_backend.execution_counts == {}


@pytest.mark.parametrize("data", [{"decision": "reject", "reason": "  "}, {"decision": "maybe"}, {}])
def test_undecidable_posts_change_nothing(client, users, pending_refund, customer_conversation, data,
                                          django_capture_on_commit_callbacks):
    client.force_login(users["agent"])
    before = snapshot(customer_conversation)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("office:action_decide", args=[pending_refund.pk]), data, follow=True)
    assert response.status_code == 200
    assert "notice-error" in response.content.decode()
    assert snapshot(customer_conversation) == before


# --- query counts ----------------------------------------------------------------------------

def _escalate_new_conversations(n: int) -> list[Conversation]:
    conversations = []
    for i in range(n):
        conversation = conversation_start()
        with transaction.atomic():
            conversation_escalate(conversation=conversation, reason=EscalationReason.CUSTOMER_REQUEST,
                                  summary=f"Customer {i} asked for a person.", title=f"Customer {i} wants a person")
        conversations.append(conversation)
    return conversations


# The session, the user, their roles, their teams, the queue's items (with team and claimer),
# the queue's counts, the live conversations (with contact and agent), escalation accuracy.
INBOX_QUERIES = 8


@pytest.mark.parametrize("escalations", [1, 5])
def test_inbox_query_count_does_not_grow_with_the_queue(client, users, escalations, django_assert_num_queries):
    from convo.services import conversation_takeover

    conversations = _escalate_new_conversations(escalations)
    from review.services import review_item_claim

    # One is being handled: its item claimed and the conversation assigned.
    conversation_takeover(conversation_id=conversations[0].pk, agent=users["agent2"])
    review_item_claim(item_id=ReviewItem.objects.get(subject_id=str(conversations[0].pk)).pk, actor=users["agent2"])
    client.force_login(users["agent"])
    with django_assert_num_queries(INBOX_QUERIES):
        response = client.get(reverse("office:inbox"))
    assert response.status_code == 200
    assert len(response.context["queue"]) == escalations
    assert len(response.context["live"]) == escalations
    content = response.content.decode()
    assert "Handled by Sam" in content and '<span class="q-claimed">Sam</span>' in content


# The session, the user, their roles, their teams, the queue's items and counts, the
# conversation (with contact and agent), its action runs and their approvals, their open
# approval items, the messages (with authors), the turns (with versions), the escalation item,
# the collections the agent may add curated answers to (shared by the flag forms), the curated
# answers saved from the conversation, and the actions an agent may propose. (Customer details
# and suggested steps load separately, after the page.)
CONVERSATION_QUERIES = 16


@pytest.mark.parametrize("extra_turns", [0, 3])
def test_conversation_page_query_count_does_not_grow_with_turns(client, users, say, customer_conversation,
                                                                 extra_turns, django_assert_num_queries):
    say(REFUND_REQUEST[0])
    say(REFUND_REQUEST[1])
    for question in ["How long does standard delivery take within Germany?", "Where is my order BW-10002?",
                     "Can I pay with a gift card?"][:extra_turns]:
        say(question)
    say("I want to talk to a real person please")
    from convo.services import agent_reply, conversation_takeover

    conversation_takeover(conversation_id=customer_conversation.pk, agent=users["agent"])
    agent_reply(conversation_id=customer_conversation.pk, agent=users["agent"], text="Hi, I'm here.")
    client.force_login(users["agent"])
    # django-guardian caches permission content types per process after their first use.
    client.get(reverse("office:conversation", args=[customer_conversation.pk]))
    with django_assert_num_queries(CONVERSATION_QUERIES):
        response = client.get(reverse("office:conversation", args=[customer_conversation.pk]))
    assert response.status_code == 200
    transcript = response.context["transcript"]
    assert len([e for e in transcript if e["turn"]]) == 3 + extra_turns
    assert [e["message"].role for e in transcript][-1] == Role.AGENT
    assert len(response.context["runs"]) == 1 + (extra_turns > 1)  # the order lookup is a run too


def test_replying_keeps_the_agents_claim_alive(users, escalated):
    """A claim lapses when its holder stops working, not while they are replying."""
    from datetime import timedelta

    from django.utils import timezone

    from convo.services import agent_reply, conversation_takeover
    from review.services import review_item_claim

    agent = users["agent"]
    item = ReviewItem.objects.get(kind=ItemKind.ESCALATION, subject_id=str(escalated.pk))
    review_item_claim(item_id=item.pk, actor=agent)
    conversation_takeover(conversation_id=escalated.pk, agent=agent)
    soon = timezone.now() + timedelta(minutes=1)
    ReviewItem.objects.filter(pk=item.pk).update(claim_expires_at=soon)
    version = ReviewItem.objects.get(pk=item.pk).version
    agent_reply(conversation_id=escalated.pk, agent=agent, text="Still on it.")
    item.refresh_from_db()
    assert item.claim_expires_at > soon + timedelta(minutes=20)
    assert (item.status, item.claimed_by, item.version) == (ItemStatus.CLAIMED, agent, version)
