"""The agent workspace as people use it: what the queue, context and action panes show, and
what each button changes (convo/views.py, convo/views_queue.py). The role x status-code matrix
lives in tests/test_role_matrix.py; these tests look at content and state."""

from __future__ import annotations

import html
import json
import re
import uuid
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from convo import services
from convo.agent_actions import agent_action_propose
from convo.models import Conversation, ConversationStatus, Message, Role
from integrations.models import ActionRun, RunStatus
from review.models import EscalationReason, ItemKind, ItemStatus, ReviewEvent, ReviewItem

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_lookup_cache():
    """Backend lookups are cached a minute; every test starts from the backend's answers."""
    cache.clear()
    yield
    cache.clear()


def escalate(*texts: str, title: str = "Customer wants a person", priority: int = 2,
             reason: str = EscalationReason.CUSTOMER_REQUEST) -> Conversation:
    """A conversation in which the customer wrote ``texts`` (no AI turns) and the assistant
    then handed it to the Support team."""
    conversation = services.conversation_start()
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        for text in texts:
            services.message_append(conversation=locked, role=Role.CUSTOMER, text=text)
        services.conversation_escalate(conversation=locked, reason=reason, summary=f"{title}.", title=title,
                                       priority=priority)
    conversation.refresh_from_db()
    return conversation


def escalation_of(conversation: Conversation) -> ReviewItem:
    return ReviewItem.objects.get(kind=ItemKind.ESCALATION, subject_id=str(conversation.pk))


def text_of(response) -> str:
    return html.unescape(response.content.decode())


def flashes(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []



def snapshot(conversation: Conversation | None = None) -> dict:
    """Everything a refused POST from the workspace must leave alone."""
    state = {
        "items": list(ReviewItem.objects.order_by("created_at").values_list(
            "pk", "status", "claimed_by_id", "version", "outcome", "needed_human", "priority")),
        "events": ReviewEvent.objects.count(),
        "runs": list(ActionRun.objects.order_by("created_at").values_list("pk", "status", "params", "approved_by_id")),
    }
    if conversation is not None:
        conversation.refresh_from_db()
        state["conversation"] = (conversation.status, conversation.assigned_agent_id, conversation.resolution,
                                 conversation.closed_at, conversation.csat_requested_at)
        state["messages"] = list(conversation.messages.order_by("seq").values_list("seq", "role", "text"))
    return state


def queue_row(content: str, item: ReviewItem) -> tuple[list[str], str] | None:
    """The classes and the inner HTML of ``item``'s row in the queue pane, or None."""
    match = re.search(rf'<li class="([^"]*)" data-item="{item.pk}">(.*?)</li>', content, re.DOTALL)
    return (match.group(1).split(), match.group(2)) if match else None


def approval_item(run: ActionRun) -> ReviewItem:
    return ReviewItem.objects.get(kind=ItemKind.ACTION_APPROVAL, subject_id=str(run.pk))


def propose(conversation: Conversation, by, *, amount=40, order_id="BW-10003", reason="The zip broke") -> ActionRun:
    """A refund proposed from the workspace by ``by``, through the service the view calls."""
    return agent_action_propose(conversation_id=conversation.pk, agent=by, action_name="refund_request",
                                params_text=json.dumps({"order_id": order_id, "amount": amount, "reason": reason}),
                                token=uuid.uuid4().hex)


# --- 1. the queue pane -----------------------------------------------------------------------------

@pytest.fixture
def queue_world(users):
    """Two escalations (one past its SLA), a refund waiting for approval on the first, and the
    second conversation claimed by agent2."""
    first = escalate("My tent arrived torn", title="Torn tent")
    second = escalate("I was charged twice", title="Charged twice")
    run = propose(first, users["supervisor"])
    from review.services import review_item_claim

    review_item_claim(item_id=escalation_of(second).pk, actor=users["agent2"])
    # The first escalation's SLA passed a minute ago (as time would have it).
    ReviewItem.objects.filter(pk=escalation_of(first).pk).update(sla_due_at=timezone.now() - timedelta(minutes=1))
    return {"first": first, "second": second, "run": run, "approval": approval_item(run),
            "torn": escalation_of(first), "charged": escalation_of(second)}


def test_queue_kind_tab_shows_only_that_kind(client, users, queue_world):
    client.force_login(users["agent"])
    response = client.get(reverse("office:inbox"), {"kind": ItemKind.ACTION_APPROVAL})
    assert response.status_code == 200
    assert [r["item"] for r in response.context["queue"]] == [queue_world["approval"]]
    content = text_of(response)
    assert queue_row(content, queue_world["approval"]) is not None
    assert queue_row(content, queue_world["torn"]) is None and queue_row(content, queue_world["charged"]) is None
    assert '<a href="?kind=action_approval" aria-current="true">Approvals</a>' in content
    # "Claim next" on this tab claims approvals only.
    assert '<input type="hidden" name="kind" value="action_approval">' in content

    everything = client.get(reverse("office:inbox"), {"kind": "no-such-kind"})
    assert {r["item"].pk for r in everything.context["queue"]} == {
        queue_world["approval"].pk, queue_world["torn"].pk, queue_world["charged"].pk}
    assert '<a href="?" aria-current="true">All</a>' in text_of(everything)


def test_queue_marks_current_breached_and_claimed_items(client, users, queue_world):
    client.force_login(users["agent"])
    content = text_of(client.get(reverse("office:conversation", args=[queue_world["first"].pk])))
    torn_classes, torn = queue_row(content, queue_world["torn"])
    approval_classes, _ = queue_row(content, queue_world["approval"])
    charged_classes, charged = queue_row(content, queue_world["charged"])
    # Both items of the open conversation are current: its escalation and its refund's approval.
    assert "current" in torn_classes and "current" in approval_classes and "current" not in charged_classes
    assert 'aria-current="page"' in torn and "Torn tent" in torn
    assert "breached" in torn_classes and "SLA breached" in torn
    assert "breached" not in charged_classes and "breached" not in approval_classes
    # Someone else's claim shows their name; nobody's is "Waiting".
    assert '<span class="q-claimed">Sam</span>' in charged and "Yours" not in charged
    assert "<span>Waiting</span>" in torn
    assert "<strong>2</strong> waiting" in content
    assert "<strong>0</strong> yours" in content
    assert "<strong>1</strong> past SLA" in content

    # agent2 sees their own claim as "Yours", and the counts from their side.
    client.force_login(users["agent2"])
    content = text_of(client.get(reverse("office:inbox")))
    charged_classes, charged = queue_row(content, queue_world["charged"])
    assert '<span class="q-claimed">Yours</span>' in charged and "current" not in charged_classes
    assert "<strong>2</strong> waiting" in content and "<strong>1</strong> yours" in content



def test_queue_links_keep_the_tab_before_the_anchor(client, users, answered):
    from review.services import review_item_open

    with transaction.atomic():
        item, _ = review_item_open(kind=ItemKind.FLAGGED_ANSWER, subject_type="convo.message",
                                   subject_id=str(answered.pk), title="Flagged: delivery time",
                                   data={"conversation_id": str(answered.conversation_id)})
    client.force_login(users["agent"])
    content = client.get(reverse("office:inbox"), {"kind": ItemKind.FLAGGED_ANSWER}).content.decode()
    _, row = queue_row(content, item)
    conversation_url = reverse("office:conversation", args=[answered.conversation_id])
    assert f'href="{conversation_url}?kind=flagged_answer#m-{answered.pk}"' in row

def test_queue_counts_without_breaches_show_no_past_sla(client, users):
    escalate("Hello?")
    client.force_login(users["agent"])
    response = client.get(reverse("office:inbox"))
    counts = response.context["queue_counts"]
    assert (counts.open, counts.claimed, counts.mine, counts.breached) == (1, 0, 0, 0)
    assert "past SLA" not in text_of(response)


def test_compliance_sees_the_queue_without_claim_next(client, users, queue_world):
    client.force_login(users["compliance"])
    for url in (reverse("office:inbox"), reverse("office:conversation", args=[queue_world["first"].pk])):
        response = client.get(url)
        assert response.status_code == 200
        content = text_of(response)
        assert queue_row(content, queue_world["torn"]) is not None
        assert 'id="claim-next"' not in content
        assert reverse("office:claim_next") not in content
    client.force_login(users["agent"])
    assert 'id="claim-next"' in text_of(client.get(reverse("office:inbox")))


# --- 2. claim next ---------------------------------------------------------------------------------

def test_claim_next_takes_the_most_urgent_then_the_oldest(client, users):
    oldest = escalate("First", title="Oldest normal")
    newer = escalate("Second", title="Newer normal")
    urgent = escalate("Third", title="Newest urgent", priority=1)
    client.force_login(users["agent"])
    claimed = []
    for _ in range(3):
        response = client.post(reverse("office:claim_next"), follow=True)
        [(location, status)] = response.redirect_chain
        assert status == 302
        claimed.append(location)
        item = ReviewItem.objects.filter(claimed_by=users["agent"]).order_by("-updated_at").first()
        assert f"You claimed “{item.title}”. It is yours for the next 30 minutes." in flashes(response)
    assert claimed == [reverse("office:conversation", args=[c.pk]) for c in (urgent, oldest, newer)]
    assert set(ReviewItem.objects.values_list("status", "claimed_by")) == {(ItemStatus.CLAIMED, users["agent"].pk)}


def test_claim_next_with_an_empty_queue_changes_nothing(client, users):
    escalated = escalate("Anyone there?")
    from review.services import review_item_claim

    review_item_claim(item_id=escalation_of(escalated).pk, actor=users["agent2"])
    before = snapshot(escalated)
    client.force_login(users["agent"])
    response = client.post(reverse("office:claim_next"), follow=True)
    assert response.redirect_chain == [(reverse("office:inbox"), 302)]
    assert ("Nothing is waiting in your teams' queue. New items appear here as they come in."
            in flashes(response))
    assert snapshot(escalated) == before


def test_claim_next_limited_to_a_kind(client, users):
    conversation = escalate("Refund please", title="Urgent escalation", priority=1)
    run = propose(conversation, users["supervisor"])
    client.force_login(users["agent"])
    response = client.post(reverse("office:claim_next"), {"kind": ItemKind.ACTION_APPROVAL})
    assert response["Location"] == reverse("office:conversation", args=[conversation.pk])
    approval = approval_item(run)
    assert (approval.status, approval.claimed_by) == (ItemStatus.CLAIMED, users["agent"])
    assert escalation_of(conversation).status == ItemStatus.OPEN  # more urgent, but another kind

    # Nothing else of that kind waits: the escalation stays in the queue.
    before = snapshot(conversation)
    response = client.post(reverse("office:claim_next"), {"kind": ItemKind.ACTION_APPROVAL}, follow=True)
    assert response.redirect_chain == [(reverse("office:inbox"), 302)]
    assert any(m.startswith("Nothing is waiting") for m in flashes(response))
    assert snapshot(conversation) == before


# --- 3. claim and release ----------------------------------------------------------------------------

def test_claim_with_the_version_shown_then_release(client, users):
    conversation = escalate("Help")
    item = escalation_of(conversation)
    client.force_login(users["agent"])
    url = reverse("office:conversation", args=[conversation.pk])
    response = client.post(reverse("office:item_claim", args=[item.pk]), {"version": item.version}, follow=True)
    assert response.redirect_chain == [(url, 302)]
    assert "You claimed this item. Others see that you are on it." in flashes(response)
    item.refresh_from_db()
    assert (item.status, item.claimed_by) == (ItemStatus.CLAIMED, users["agent"])

    response = client.post(reverse("office:item_release", args=[item.pk]), {"version": item.version}, follow=True)
    assert response.redirect_chain == [(reverse("office:inbox"), 302)]
    assert "Released: the item is back in the queue for anyone in the team." in flashes(response)
    item.refresh_from_db()
    assert (item.status, item.claimed_by) == (ItemStatus.OPEN, None)


def test_claim_with_a_stale_version_changes_nothing(client, users):
    from review.services import review_item_claim, review_item_release

    conversation = escalate("Help")
    item = escalation_of(conversation)
    shown = item.version
    # Meanwhile agent2 claimed and released it.
    review_item_claim(item_id=item.pk, actor=users["agent2"])
    review_item_release(item_id=item.pk, actor=users["agent2"])
    before = snapshot(conversation)
    client.force_login(users["agent"])
    response = client.post(reverse("office:item_claim", args=[item.pk]), {"version": shown}, follow=True)
    assert response.status_code == 200
    [message] = response.context["messages"]
    assert message.level_tag == "error" and "changed since you opened it" in str(message)
    assert snapshot(conversation) == before


def test_claiming_an_item_someone_else_holds_is_refused(client, users):
    from review.services import review_item_claim

    conversation = escalate("Help")
    item = review_item_claim(item_id=escalation_of(conversation).pk, actor=users["agent2"])
    before = snapshot(conversation)
    client.force_login(users["agent"])
    response = client.post(reverse("office:item_claim", args=[item.pk]), {"version": item.version}, follow=True)
    [message] = response.context["messages"]
    assert message.level_tag == "error" and "is already working on this" in str(message)
    assert snapshot(conversation) == before


def test_only_the_claimer_or_a_supervisor_releases_a_claim(client, users):
    from review.services import review_item_claim

    conversation = escalate("Help")
    item = review_item_claim(item_id=escalation_of(conversation).pk, actor=users["agent2"])
    before = snapshot(conversation)
    client.force_login(users["agent"])
    response = client.post(reverse("office:item_release", args=[item.pk]), {"version": item.version}, follow=True)
    [message] = response.context["messages"]
    assert message.level_tag == "error"
    assert "only they or a supervisor can release it" in str(message)
    assert snapshot(conversation) == before

    client.force_login(users["supervisor"])
    response = client.post(reverse("office:item_release", args=[item.pk]), {"version": item.version}, follow=True)
    assert "Released: the item is back in the queue for anyone in the team." in flashes(response)
    item.refresh_from_db()
    assert (item.status, item.claimed_by, item.claim_expires_at) == (ItemStatus.OPEN, None, None)
    assert item.events.order_by("-created_at").first().data == {"from": "agent2"}


@pytest.mark.parametrize(("next_url", "honoured"), [
    ("/office/?kind=escalation", True),
    ("https://evil.example/office/", False),
    ("//evil.example/office/", False),
    ("http://testserver/office/search/", True),  # the same host, absolute
])
def test_next_is_honoured_only_for_this_host(client, users, next_url, honoured):
    conversation = escalate("Help")
    item = escalation_of(conversation)
    client.force_login(users["agent"])
    response = client.post(reverse("office:item_claim", args=[item.pk]),
                           {"version": item.version, "next": next_url})
    assert response["Location"] == (next_url if honoured else reverse("office:conversation", args=[conversation.pk]))
    item.refresh_from_db()
    response = client.post(reverse("office:item_release", args=[item.pk]),
                           {"version": item.version, "next": next_url})
    assert response["Location"] == (next_url if honoured else reverse("office:inbox"))


def error_flash(response) -> str:
    [message] = response.context["messages"]
    assert message.level_tag == "error", str(message)
    return str(message)


# --- 4. closing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [{"resolution": "bogus", "needed_human": "no"}, {"needed_human": "no"}])
def test_close_needs_an_offered_resolution(client, users, data):
    conversation = escalate("Where is my parcel?")
    before = snapshot(conversation)
    client.force_login(users["agent"])
    response = client.post(reverse("office:close", args=[conversation.pk]), data, follow=True)
    assert error_flash(response) == "Choose a resolution."
    assert snapshot(conversation) == before


@pytest.mark.parametrize("needed", ["", "maybe"])
def test_closing_a_live_escalation_needs_the_needed_human_answer(client, users, needed):
    conversation = escalate("Where is my parcel?")
    before = snapshot(conversation)
    client.force_login(users["agent"])
    response = client.post(reverse("office:close", args=[conversation.pk]),
                           {"resolution": "answered", "needed_human": needed}, follow=True)
    assert error_flash(response).startswith("Say whether this escalation needed a person")
    assert snapshot(conversation) == before
    assert conversation.status == ConversationStatus.HANDOFF
    # The form asks the question.
    assert 'name="needed_human" value="yes" required' in response.content.decode()


def test_close_resolves_the_escalation_and_asks_the_customer_to_rate(client, users,
                                                                   django_capture_on_commit_callbacks):
    conversation = escalate("Where is my parcel?")
    item = escalation_of(conversation)
    client.force_login(users["agent"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("office:close", args=[conversation.pk]),
                               {"resolution": "answered", "needed_human": "no", "item_version": item.version},
                               follow=True)
    assert "Conversation closed." in flashes(response)
    conversation.refresh_from_db()
    assert (conversation.status, conversation.resolution) == (ConversationStatus.CLOSED, "answered")
    assert conversation.csat_requested_at == conversation.closed_at
    item.refresh_from_db()
    assert (item.status, item.outcome, item.needed_human) == (ItemStatus.RESOLVED, "answered", False)
    survey = Message.objects.get(conversation=conversation, data__kind="csat_request")
    assert survey.role == Role.SYSTEM
    assert list(conversation.messages.order_by("seq").values_list("data__kind", flat=True))[-2:] == [
        "closed", "csat_request"]
    content = text_of(response)
    assert "This conversation is closed (answered)." in content
    assert "Needed a person: no." in content


def test_closing_a_chat_the_customer_never_wrote_in_sends_no_survey(client, users):
    conversation = escalate()
    client.force_login(users["agent"])
    client.post(reverse("office:close", args=[conversation.pk]), {"resolution": "spam", "needed_human": "yes"})
    conversation.refresh_from_db()
    assert (conversation.status, conversation.csat_requested_at) == (ConversationStatus.CLOSED, None)
    assert not Message.objects.filter(conversation=conversation, data__kind="csat_request").exists()
    assert escalation_of(conversation).needed_human is True


def test_close_with_a_stale_item_version_is_refused(client, users):
    from review.services import review_item_claim

    conversation = escalate("Where is my parcel?")
    shown = escalation_of(conversation).version
    review_item_claim(item_id=escalation_of(conversation).pk, actor=users["agent2"])  # meanwhile
    before = snapshot(conversation)
    client.force_login(users["agent"])
    response = client.post(reverse("office:close", args=[conversation.pk]),
                           {"resolution": "resolved", "needed_human": "yes", "item_version": shown}, follow=True)
    assert "changed since you opened it" in error_flash(response)
    assert snapshot(conversation) == before


def test_hand_back_stores_the_needed_human_answer(client, users):
    conversation = escalate("Where is my parcel?")
    client.force_login(users["agent"])
    client.post(reverse("office:takeover", args=[conversation.pk]))
    response = client.post(reverse("office:hand_back", args=[conversation.pk]), {"needed_human": "yes"},
                           follow=True)
    assert "Handed back to the assistant." in flashes(response)
    item = escalation_of(conversation)
    assert (item.status, item.outcome, item.needed_human) == (ItemStatus.RESOLVED, "handed_back", True)
    conversation.refresh_from_db()
    assert (conversation.status, conversation.assigned_agent) == (ConversationStatus.BOT, None)


def test_needed_human_answered_after_the_fact(client, users):
    conversation = escalate("Where is my parcel?")
    services.conversation_close(conversation_id=conversation.pk, agent=users["agent2"], resolution="resolved")
    item = escalation_of(conversation)
    assert (item.status, item.needed_human) == (ItemStatus.RESOLVED, None)
    client.force_login(users["agent"])
    page = text_of(client.get(reverse("office:conversation", args=[conversation.pk])))
    assert reverse("office:item_needed_human", args=[item.pk]) in page

    response = client.post(reverse("office:item_needed_human", args=[item.pk]), {"needed_human": "no"},
                           follow=True)
    assert response.redirect_chain == [(reverse("office:conversation", args=[conversation.pk]), 302)]
    assert "Thanks, noted." in flashes(response)
    item.refresh_from_db()
    assert (item.status, item.outcome, item.needed_human) == (ItemStatus.RESOLVED, "resolved", False)
    assert "Needed a person: no." in text_of(response)
    assert reverse("office:item_needed_human", args=[item.pk]) not in text_of(response)


@pytest.mark.parametrize("answer", ["yes", "perhaps"])
def test_needed_human_on_an_open_escalation_is_refused(client, users, answer):
    conversation = escalate("Where is my parcel?")
    item = escalation_of(conversation)
    before = snapshot(conversation)
    client.force_login(users["agent"])
    response = client.post(reverse("office:item_needed_human", args=[item.pk]), {"needed_human": answer},
                           follow=True)
    assert error_flash(response) == ("Answer this once the conversation is closed." if answer == "yes"
                                     else "Answer yes or no.")
    assert snapshot(conversation) == before


# --- 5. the context fragment -----------------------------------------------------------------------

def context_of(client, conversation) -> str:
    response = client.get(reverse("office:context", args=[conversation.pk]))
    assert response.status_code == 200
    assert response.templates[0].name == "office/_context.html"
    return text_of(response)


def test_context_shows_the_customer_their_order_and_a_step_for_the_reason(client, users):
    conversation = escalate("Hi, where is my order BW-10002? I want to talk to a person.")
    client.force_login(users["agent"])
    content = context_of(client, conversation)
    assert "<strong>Tomás Ribeiro</strong>" in content
    assert "tomas.ribeiro@example.com" in content
    assert '<strong>BW-10002</strong><span class="chip chip-sm">on its way</span>' in content
    assert "1 × Brightwater Hollowfell 2 Tent; 1 × Hollowfell 2 Footprint" in content
    steps = re.search(r'<ol class="steps">(.*?)</ol>', content, re.DOTALL).group(1)
    assert "The customer asked for a person: greet them by name and ask what they need." in steps
    assert "Order BW-10002: on its way. It should arrive by" in steps


def test_context_reports_an_unknown_order(client, users):
    conversation = escalate("My order BW-99999 never came")
    client.force_login(users["agent"])
    content = context_of(client, conversation)
    assert '<p class="small muted">Order BW-99999: Order BW-99999 does not exist.</p>' in content
    assert "<article" not in content


def test_context_answers_when_the_backend_is_down(client, users, monkeypatch):
    conversation = escalate("Where is my order BW-10002?")
    monkeypatch.setenv("DEMO_BACKEND_URL", "http://127.0.0.1:1")
    client.force_login(users["agent"])
    content = context_of(client, conversation)
    assert "Order BW-10002: brightwater-backend could not be reached (ConnectError)" in content
    assert "Tomás Ribeiro" not in content
    # The suggested steps do not depend on the backend.
    assert "The customer asked for a person" in content


def test_context_suggests_the_internal_playbook_for_a_refund_question(client, users):
    conversation = escalate("Can you refund more than 100 EUR without a supervisor approving it?")
    client.force_login(users["agent"])
    content = context_of(client, conversation)
    steps = re.search(r'<ol class="steps">(.*?)</ol>', content, re.DOTALL).group(1)
    # The internal "Agent playbooks" collection's refund playbook, by its section.
    assert "<li>Playbook: Approval limits</li>" in steps


# --- 6. proposing an action ------------------------------------------------------------------------

REFUND_40 = {"order_id": "BW-10003", "amount": 40, "reason": "The zip broke after a week"}


def propose_post(client, conversation, *, action="refund_request", params=None, token=None):
    return client.post(reverse("office:action_propose", args=[conversation.pk]), {
        "action": action, "params": params if isinstance(params, str) else json.dumps(params or REFUND_40),
        "token": token or uuid.uuid4().hex}, follow=True)


def test_agent_proposes_an_action_for_a_colleague_to_approve(client, users):
    conversation = escalate("The zip of my sleeping bag broke, I want 40 euros back for BW-10003")
    client.force_login(users["agent"])
    token = uuid.uuid4().hex
    response = propose_post(client, conversation, token=token)
    assert response.redirect_chain == [(reverse("office:conversation", args=[conversation.pk]), 302)]
    [message] = response.context["messages"]
    assert message.level_tag == "success" and str(message).startswith("Proposed.")
    assert "you cannot approve your own proposal" in str(message)
    run = ActionRun.objects.get(subject_id=str(conversation.pk))
    assert (run.action.name, run.params, run.status) == ("refund_request", REFUND_40, RunStatus.AWAITING_APPROVAL)
    assert (run.proposed_by, run.approvals_required) == (users["agent"], 1)
    item = approval_item(run)
    assert (item.status, item.team, item.data["conversation_id"]) == (
        ItemStatus.OPEN, escalation_of(conversation).team, str(conversation.pk))
    assert item.data["proposed_by"] == "agent"

    # The same form sent twice: one run, one approval item.
    before = snapshot(conversation)
    propose_post(client, conversation, token=token)
    after = snapshot(conversation)
    assert after["runs"] == before["runs"] and [i[:2] for i in after["items"]] == [i[:2] for i in before["items"]]

    # The proposer may withdraw it but not approve it.
    content = text_of(response)
    article = re.search(r'<article class="run awaiting" aria-label="Issue a refund">(.*?)</article>', content,
                        re.DOTALL).group(1)
    assert "You proposed this; someone else must approve it." in article
    assert "Proposed by Alex" in article
    assert 'value="approve"' not in article and "Approve" not in article
    assert "<summary>Withdraw</summary>" in article

    client.force_login(users["agent2"])
    content = text_of(client.get(reverse("office:conversation", args=[conversation.pk])))
    article = re.search(r'<article class="run awaiting" aria-label="Issue a refund">(.*?)</article>', content,
                        re.DOTALL).group(1)
    assert ">Approve</button>" in article and "You proposed this" not in article


@pytest.mark.parametrize(("data", "error"), [
    ({"params": "{not json"}, "The parameters are not valid JSON"),
    ({"params": "[1, 2]"}, "The parameters must be a JSON object"),
    ({"params": ""}, "The parameters are not valid JSON"),
    ({"action": "launch_rockets"}, "Choose one of the actions offered."),
    ({"action": "order_status", "params": {"order_id": "BW-10003"}}, "Choose one of the actions offered."),
    ({"params": {"order_id": "BW-10003", "amount": -5, "reason": "Broken"}}, "amount: -5 is less than or equal to"),
    ({"params": {"order_id": "BW-10003", "amount": 5}}, "'reason' is a required property"),
    ({"params": {**REFUND_40, "order_id": "10003"}}, "order_id: '10003' does not match"),
    ({"token": "short"}, "This form is out of date."),
])
def test_bad_proposals_record_nothing(client, users, data, error):
    conversation = escalate("Refund please")
    before = snapshot(conversation)
    client.force_login(users["agent"])
    response = propose_post(client, conversation, **data)
    assert error in error_flash(response)
    assert snapshot(conversation) == before
    assert not ActionRun.objects.exists()


def test_a_proposal_on_a_closed_conversation_is_refused(client, users):
    conversation = escalate("Refund please")
    services.conversation_close(conversation_id=conversation.pk, agent=users["agent"], needed_human=True)
    before = snapshot(conversation)
    client.force_login(users["agent"])
    assert error_flash(propose_post(client, conversation)) == "This conversation is closed."
    assert snapshot(conversation) == before


def test_a_colleague_approves_the_proposal_and_it_runs_once(client, users, demo_backend,
                                                            django_capture_on_commit_callbacks):
    conversation = escalate("Refund please")
    client.force_login(users["agent"])
    propose_post(client, conversation)
    run = ActionRun.objects.get(subject_id=str(conversation.pk))
    assert demo_backend.execution_counts == {}

    client.force_login(users["agent2"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("office:action_decide", args=[run.pk]),
                               {"decision": "approve", "params_hash": run.params_hash}, follow=True)
    assert "Approved. The action is running." in flashes(response)
    run.refresh_from_db()
    assert (run.status, run.approved_by, run.proposed_by) == (RunStatus.SUCCEEDED, users["agent2"], users["agent"]), \
        run.error
    assert demo_backend.execution_counts == {run.idempotency_key: 1}
    assert approval_item(run).status == ItemStatus.RESOLVED
    assert approval_item(run).outcome == "approved"
    told = Message.objects.get(conversation=conversation, data__kind="action_done")
    assert told.text == f"Refund {run.result['refund_id']} of 40.00 EUR for order BW-10003 has been issued."


# --- 7. four eyes through the office ---------------------------------------------------------------

@pytest.fixture
def big_refund(users):
    """A 150 EUR refund (above ACTION_FOUR_EYES_ABOVE = 100) the supervisor proposed."""
    conversation = escalate("The sleeping bag is torn, please refund 150 euros for BW-10003")
    run = propose(conversation, users["supervisor"], amount=150)
    assert (run.status, run.approvals_required) == (RunStatus.AWAITING_APPROVAL, 2)
    return conversation, run


def decide(client, run, **data):
    return client.post(reverse("office:action_decide", args=[run.pk]),
                       {"decision": "approve", "params_hash": run.params_hash, **data}, follow=True)


def test_four_eyes_needs_two_different_people(client, users, big_refund, demo_backend,
                                              django_capture_on_commit_callbacks):
    conversation, run = big_refund
    client.force_login(users["agent"])
    with django_capture_on_commit_callbacks(execute=True):
        response = decide(client, run)
    assert ("Approved (1 of 2 approvals). A second person must approve it before it runs."
            in flashes(response))
    run.refresh_from_db()
    assert (run.status, run.approved_by, run.approver_ids) == (RunStatus.AWAITING_APPROVAL, None,
                                                               {users["agent"].pk})
    assert approval_item(run).status == ItemStatus.OPEN
    assert demo_backend.execution_counts == {}
    content = text_of(response)
    assert "Four eyes</span> 1 of 2 approvals: Alex" in content
    assert "You approved this. It waits for a second person." in content
    assert "Approve (2nd of 2)" not in content

    # Approving twice is refused and changes nothing.
    before = snapshot(conversation)
    with django_capture_on_commit_callbacks(execute=True):
        response = decide(client, run)
    assert error_flash(response) == "You already approved this; a second person must approve it."
    assert snapshot(conversation) == before
    assert demo_backend.execution_counts == {}

    client.force_login(users["agent2"])
    assert "Approve (2nd of 2)" in text_of(client.get(reverse("office:conversation", args=[conversation.pk])))
    with django_capture_on_commit_callbacks(execute=True):
        response = decide(client, run)
    assert "Approved. The action is running." in flashes(response)
    run.refresh_from_db()
    assert (run.status, run.approved_by) == (RunStatus.SUCCEEDED, users["agent2"]), run.error
    assert run.approver_ids == {users["agent"].pk, users["agent2"].pk}
    assert demo_backend.execution_counts == {run.idempotency_key: 1}
    item = approval_item(run)
    assert (item.status, item.outcome) == (ItemStatus.RESOLVED, "approved")


@pytest.mark.parametrize(("data", "error"), [
    ({"params_hash": "0" * 64}, "The parameters changed since you opened this; review them again."),
    ({"params": json.dumps({"order_id": "BW-10003", "amount": "lots", "reason": "Torn"})},
     "amount: 'lots' is not of type 'number'"),
    ({"params": json.dumps({"order_id": "BW-10003", "amount": 150})}, "'reason' is a required property"),
    ({"params": "{not json"}, "The edited parameters are not valid JSON."),
])
def test_stale_or_invalid_approvals_are_refused(client, users, big_refund, data, error, demo_backend,
                                                django_capture_on_commit_callbacks):
    conversation, run = big_refund
    before = snapshot(conversation)
    client.force_login(users["agent"])
    with django_capture_on_commit_callbacks(execute=True):
        response = decide(client, run, **data)
    assert error in error_flash(response)
    assert snapshot(conversation) == before
    run.refresh_from_db()
    assert (run.status, run.approver_ids) == (RunStatus.AWAITING_APPROVAL, set())
    assert demo_backend.execution_counts == {}


def test_a_changed_run_makes_the_shown_hash_stale(client, users, big_refund, django_capture_on_commit_callbacks):
    conversation, run = big_refund
    shown = run.params_hash
    # agent2 corrects the amount (their edit is their approval) while agent's page is open.
    client.force_login(users["agent2"])
    decide(client, run, params=json.dumps({"order_id": "BW-10003", "amount": 120, "reason": "Torn"}))
    run.refresh_from_db()
    assert run.params["amount"] == 120 and run.status == RunStatus.AWAITING_APPROVAL
    before = snapshot(conversation)
    client.force_login(users["agent"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("office:action_decide", args=[run.pk]),
                               {"decision": "approve", "params_hash": shown}, follow=True)
    assert "The parameters changed since you opened this" in error_flash(response)
    assert snapshot(conversation) == before


# --- 8. flagging an AI answer ----------------------------------------------------------------------

QUESTION = "How long does standard delivery take within Germany?"
CORRECT = "Standard delivery within Germany takes 2 to 4 working days; express arrives the next working day."


@pytest.fixture
def answered(say, customer_conversation):
    """The assistant answered a help-centre question, then the conversation went to the Support
    team (so its agents see it)."""
    from convo.models import Decision

    turn = say(QUESTION)
    assert turn.decision == Decision.ANSWER
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=customer_conversation.pk)
        services.conversation_escalate(conversation=locked, reason=EscalationReason.CUSTOMER_REQUEST,
                                       summary="Wants a person.", title="Wants a person")
    return turn.reply


def flag_form(content: str, message: Message) -> str:
    """The flag form of ``message`` in the page, from its <details> to the end of its form."""
    match = re.search(rf'<details class="why flag" id="flag-{message.pk}"( open)?>(.*?)</details>', content,
                      re.DOTALL)
    assert match, "no flag form for this message"
    return match.group(0)


def flag_state() -> tuple:
    from governance.models import EvaluationCase
    from knowledge.models import Document

    return (ReviewItem.objects.count(), ReviewEvent.objects.count(), Document.objects.count(),
            EvaluationCase.objects.count(), list(Message.objects.filter(data__has_key="flag").values_list("pk")))


BAD_FLAGS = [
    pytest.param({"category": "", "correct_answer": CORRECT}, "category", "Choose what is wrong with the answer.",
                 id="missing-category"),
    pytest.param({"category": "incomplete", "correct_answer": "Too short"}, "correct_answer",
                 "The answer is too short: at least 10 characters.", id="short-answer"),
]


@pytest.mark.parametrize(("data", "field", "error"), BAD_FLAGS)
def test_a_bad_flag_reopens_the_form_of_that_message(client, users, answered, data, field, error):
    before = flag_state()
    client.force_login(users["agent"])
    response = client.post(reverse("office:message_flag", args=[answered.pk]), data)
    assert response.status_code == 400
    assert response.templates[0].name == "office/conversation.html"
    content = text_of(response)
    form = flag_form(content, answered)
    assert form.startswith(f'<details class="why flag" id="flag-{answered.pk}" open>')
    widget = {"category": f'id="flag-cat-{answered.pk}" name="category" required aria-invalid="true"',
              "correct_answer": f'id="flag-a-{answered.pk}" name="correct_answer" rows="4" required aria-invalid="true"'}
    assert widget[field] in form
    # Only that message's form is open.
    assert len(re.findall(r'<details class="why flag" id="flag-[^"]+" open>', content)) == 1
    assert flag_state() == before


@pytest.mark.parametrize(("data", "field", "error"), BAD_FLAGS)
def test_a_bad_flag_shows_the_error_and_keeps_what_was_typed(client, users, answered, data, field, error):
    client.force_login(users["agent"])
    response = client.post(reverse("office:message_flag", args=[answered.pk]),
                           {**data, "question": "Delivery time in Germany?", "note": "Says 5 days"})
    assert response.status_code == 400
    form = flag_form(text_of(response), answered)
    assert f'<p class="field-error">{error}</p>' in form
    assert re.search(rf'name="correct_answer" rows="4" required[^>]*>{re.escape(data["correct_answer"])}</textarea>',
                     form)
    assert 'value="Delivery time in Germany?"' in form and 'value="Says 5 days"' in form


def test_flagging_an_answer_marks_it_and_removes_the_form(client, users, answered):
    client.force_login(users["agent"])
    url = reverse("office:conversation", args=[answered.conversation_id])
    response = client.post(reverse("office:message_flag", args=[answered.pk]),
                           {"category": "incomplete", "correct_answer": CORRECT}, follow=True)
    assert response.redirect_chain == [(f"{url}#m-{answered.pk}", 302)]
    [message] = response.context["messages"]
    assert message.level_tag == "success"
    assert str(message).startswith("Flagged. Your answer is saved as a curated answer and as an evaluation case.")
    content = text_of(response)
    bubble = re.search(rf'<li class="t-msg t-assistant"[^>]* id="m-{answered.pk}">(.*?)</li>', content,
                       re.DOTALL).group(1)
    assert "Flagged: Incomplete</span>" in bubble
    assert f'id="flag-{answered.pk}"' not in content
    answered.refresh_from_db()
    assert answered.data["flag"]["category"] == "incomplete"
    item = ReviewItem.objects.get(kind=ItemKind.FLAGGED_ANSWER, subject_id=str(answered.pk))
    assert (item.status, item.outcome) == (ItemStatus.RESOLVED, "corrected")


# --- undo (compensation) ---------------------------------------------------------------------------

def test_an_agent_undoes_an_action_and_a_colleague_approves_the_undo(client, users, demo_backend,
                                                                   django_capture_on_commit_callbacks):
    """A succeeded address change in this conversation, undone through its compensation action:
    the agent proposes, the undo waits in the queue, agent2 approves, the old address is back."""
    from integrations.connectors import connector_call
    from integrations.models import ActionDefinition, Connector
    from integrations.services import action_run_execute, action_run_propose

    connector = Connector.objects.get(name="brightwater-backend")
    address = {"type": "string", "minLength": 10, "maxLength": 300}
    restore = ActionDefinition.objects.create(
        name="address_restore", title="Restore delivery address", description="Undo an address change.",
        connector=connector, path="/orders/{order_id}/address", approval_rule={"rule": "always"},
        parameters_schema={"type": "object", "properties": {"order_id": {"type": "string"}, "address": address},
                           "required": ["order_id", "address"]})
    address_set = ActionDefinition.objects.create(
        name="address_set", title="Set delivery address", description="Change an address.",
        connector=connector, path="/orders/{order_id}/address", approval_rule={"rule": "never"},
        parameters_schema={"type": "object", "properties": {"order_id": {"type": "string"}, "address": address,
                                                            "previous_address": address},
                           "required": ["order_id", "address"]},
        compensation_action=restore,
        compensation_params={"order_id": "result.order_id", "address": "params.previous_address"})

    def shipping_address():
        return connector_call(connector=connector, method="GET", path_template="/orders/{order_id}",
                              params={"order_id": "BW-10001"}, idempotency_key="read")[1]["shipping_address"]

    escalated = escalate("Please change my delivery address")
    old = shipping_address()
    with transaction.atomic():
        run = action_run_propose(action=address_set, idempotency_key="turn:addr", subject_type="convo.conversation",
                                 subject_id=str(escalated.pk),
                                 params={"order_id": "BW-10001", "address": "Neue Strasse 5, 10115 Berlin, Germany",
                                         "previous_address": old})
    action_run_execute(run_id=run.pk)

    client.force_login(users["agent"])
    page = client.get(reverse("office:conversation", args=[escalated.pk])).content.decode()
    assert reverse("office:action_undo", args=[escalated.pk, run.pk]) in page
    # No reason: refused, nothing proposed.
    response = client.post(reverse("office:action_undo", args=[escalated.pk, run.pk]), {"reason": " "}, follow=True)
    assert "Say why the action is being undone." in response.content.decode()
    assert not ActionRun.objects.filter(compensation_of=run).exists()

    response = client.post(reverse("office:action_undo", args=[escalated.pk, run.pk]),
                           {"reason": "The customer gave the wrong street."}, follow=True)
    assert "waits for a colleague's approval" in html.unescape(response.content.decode())
    undo = ActionRun.objects.get(compensation_of=run)
    assert (undo.status, undo.proposed_by, undo.params) == (RunStatus.AWAITING_APPROVAL, users["agent"],
                                                           {"order_id": "BW-10001", "address": old})
    item = ReviewItem.objects.get(kind=ItemKind.ACTION_APPROVAL, subject_id=str(undo.pk))
    assert item.status == ItemStatus.OPEN and item.data["conversation_id"] == str(escalated.pk)

    client.force_login(users["agent2"])
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("office:action_decide", args=[undo.pk]),
                    {"decision": "approve", "params_hash": undo.params_hash})
    undo.refresh_from_db()
    run.refresh_from_db()
    assert (undo.status, run.status) == (RunStatus.SUCCEEDED, RunStatus.COMPENSATED)
    assert shipping_address() == old
