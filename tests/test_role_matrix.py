"""Every role × every back-office page, API and WebSocket consumer, in one matrix.

The product's rule: agents see and work only their teams' items and the conversations behind
them (``review.work_team`` on a team); supervisors the teams they supervise
(``review.supervise_team``); compliance officers read everything and change nothing; model
owners have no queue and no conversations; people with no role and anonymous visitors get
nothing. A refused act changes nothing: every refused POST is checked against a snapshot of
everything a POST could touch.

Each cell of the tables is its own test id (``endpoint-role``). One world per test: an escalated
conversation in the Support queue with an assistant answer that can be flagged and a refund
waiting for approval (four real customer turns, well under a second once the embedding model
is loaded).

The chat and office sockets run through the real ASGI application inside the test's
transaction: the test drives them with ``async_to_sync``, so the consumers' database calls run
on the test's own thread and connection (``channels.db`` would otherwise close that connection
as "obsolete" because it is inside a transaction; the fixture ``sockets`` turns that off).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction
from django.test import Client
from django.urls import reverse
from guardian.shortcuts import assign_perm

from convo import services as convo_services
from convo.broadcast import OFFICE_GROUP, office_team_group
from convo.models import Conversation, Decision, Message
from governance.models import AuditEvent, EvaluationCase
from governance.roles import Role as StaffRole
from integrations.models import ActionApproval, ActionRun, ActionRunEvent, RunStatus
from knowledge.models import Collection, Document, DocumentVersion
from review.models import EscalationReason, ItemKind, ReviewEvent, ReviewItem, Team
from review.services import review_item_claim, review_item_open, team_default

pytestmark = [pytest.mark.django_db]

ROLES = ["anonymous", "outsider", "agent", "other_team_agent", "supervisor", "compliance", "modelowner", "admin"]
WORKERS = {"agent", "supervisor", "admin"}  # those who may act on the Support team's conversation
ORIGIN = (b"origin", b"http://127.0.0.1")

QUESTION = "How long does standard delivery take within Germany?"
REFUND_REQUEST = ("I want my money back for order BW-10003, 40 euros", "The zip broke after a week")
ESCALATE = "I want to talk to a real person please"
CORRECT_ANSWER = ("Standard delivery within Germany takes 2 to 4 working days. During the winter sale "
                  "(1 to 15 January) allow one extra day.")


# --- the world ----------------------------------------------------------------------------------

@dataclass
class World:
    conversation: Conversation
    answer: Message          # an assistant answer that can be flagged
    run: ActionRun           # the refund awaiting approval
    escalation: ReviewItem   # Support team
    approval: ReviewItem     # Support team
    users: dict              # role -> user (None for anonymous)


@pytest.fixture
def other_team_agent(demo, django_user_model):
    """An agent of the Billing team only."""
    user = django_user_model.objects.create_user(username="billing-agent", password="x-billing-pass", is_staff=True)
    user.groups.add(Group.objects.get(name=StaffRole.AGENT))
    assign_perm("review.work_team", user, Team.objects.create(name="Billing"))
    return user


@pytest.fixture
def world(say, customer_conversation, users, outsider, other_team_agent) -> World:
    answered = say(QUESTION)
    assert answered.decision == Decision.ANSWER
    say(REFUND_REQUEST[0])
    refund = say(REFUND_REQUEST[1])
    assert refund.decision == Decision.APPROVAL
    assert say(ESCALATE).decision == Decision.ESCALATE
    conversation = Conversation.objects.get(pk=customer_conversation.pk)
    run = ActionRun.objects.get(pk=refund.action_run_id)
    assert run.status == RunStatus.AWAITING_APPROVAL
    support = team_default()
    escalation = ReviewItem.objects.get(kind=ItemKind.ESCALATION, subject_id=str(conversation.pk))
    approval = ReviewItem.objects.get(kind=ItemKind.ACTION_APPROVAL, subject_id=str(run.pk))
    assert escalation.team == approval.team == support
    return World(
        conversation=conversation, answer=answered.reply, run=run, escalation=escalation, approval=approval,
        users={"anonymous": None, "outsider": outsider, "agent": users["agent"],
               "other_team_agent": other_team_agent, "supervisor": users["supervisor"],
               "compliance": users["compliance"], "modelowner": users["modelowner"], "admin": users["admin"]},
    )


def snapshot(world: World, demo_backend) -> dict:
    """Everything a POST from the office or the APIs could change."""
    conversation = Conversation.objects.get(pk=world.conversation.pk)
    return {
        "conversation": (conversation.status, conversation.assigned_agent_id, conversation.last_seq,
                         conversation.resolution, conversation.closed_at, conversation.state),
        "messages": list(Message.objects.filter(conversation=conversation).order_by("seq")
                         .values_list("seq", "role", "text", "data")),
        "items": list(ReviewItem.objects.order_by("created_at", "pk").values_list(
            "pk", "kind", "status", "version", "claimed_by_id", "needed_human", "outcome")),
        "review_events": ReviewEvent.objects.count(),
        "runs": list(ActionRun.objects.order_by("created_at", "pk").values_list(
            "pk", "status", "params", "approved_by_id")),
        "approvals": list(ActionApproval.objects.order_by("created_at", "pk").values_list(
            "pk", "approver_id", "voided_at")),
        "run_events": ActionRunEvent.objects.count(),
        "documents": list(Document.objects.order_by("pk").values_list("pk", "kind", "version", "published",
                                                                      "checksum")),
        "document_versions": DocumentVersion.objects.count(),
        "evaluation_cases": list(EvaluationCase.objects.values_list("pk", flat=True)),
        "audit": AuditEvent.objects.count(),
        "backend_calls": dict(demo_backend.execution_counts),
    }


def client_for(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


# --- setups some POSTs need -----------------------------------------------------------------------

def claimed_by_agent(world: World) -> None:
    """The escalation is claimed by the Support agent (so that releasing it means something)."""
    review_item_claim(item_id=world.escalation.pk, actor=world.users["agent"])


def closed(world: World) -> None:
    """The conversation is closed and its escalation resolved (so "did it need a person?" applies)."""
    convo_services.conversation_close(conversation_id=world.conversation.pk, agent=world.users["agent"],
                                      resolution="resolved", needed_human=True)
    world.escalation.refresh_from_db()
    assert world.escalation.status == "resolved"


# --- GET: pages, fragments, APIs, admin -----------------------------------------------------------

def _conversation_url(name):
    return lambda w: reverse(f"office:{name}", args=[w.conversation.pk])


GET_URLS = {
    "inbox": lambda w: reverse("office:inbox"),
    "conversation": _conversation_url("conversation"),
    "context": _conversation_url("context"),
    "search": lambda w: reverse("office:search"),
    "canned": lambda w: f"/office/canned/?conversation={w.conversation.pk}",
    "api_items": lambda w: "/api/review/items/",
    "api_escalation": lambda w: f"/api/review/items/{w.escalation.pk}/",
    "api_approval": lambda w: f"/api/review/items/{w.approval.pk}/",
    "api_collections": lambda w: "/api/v1/knowledge/collections/",
    # The customer API authenticates by conversation token only: a staff session is no token.
    "api_customer_messages": lambda w: f"/api/v1/conversations/{w.conversation.pk}/messages/",
    "admin_reviewitems": lambda w: "/admin/review/reviewitem/",
    "admin_reviewitem": lambda w: f"/admin/review/reviewitem/{w.escalation.pk}/change/",
    "admin_teams": lambda w: "/admin/review/team/",
    "admin_evaluationcases": lambda w: "/admin/governance/evaluationcase/",
    "admin_actionruns": lambda w: "/admin/integrations/actionrun/",
    "admin_conversations": lambda w: "/admin/convo/conversation/",
}

# Columns in ROLES order: anonymous, outsider, agent, other_team_agent, supervisor, compliance,
# modelowner, admin. Pages send anonymous visitors to the login page (302), APIs answer 403;
# the admin sends non-staff (outsider) to its own login page (302) and answers 403 to staff
# lacking the model's view permission.
GET_TABLE = {
    "inbox":                 (302, 403, 200, 200, 200, 200, 403, 200),
    "conversation":          (302, 403, 200, 404, 200, 200, 403, 200),
    "context":               (302, 403, 200, 404, 200, 200, 403, 200),
    "search":                (302, 403, 200, 200, 200, 200, 403, 200),
    "canned":                (302, 403, 200, 404, 200, 403, 403, 200),
    "api_items":             (403, 403, 200, 200, 200, 200, 403, 200),
    "api_escalation":        (403, 403, 200, 404, 200, 200, 403, 200),
    "api_approval":          (403, 403, 200, 404, 200, 200, 403, 200),
    "api_collections":       (403, 403, 200, 200, 200, 200, 200, 200),
    "api_customer_messages": (403, 403, 403, 403, 403, 403, 403, 403),
    "admin_reviewitems":     (302, 302, 403, 403, 200, 200, 403, 200),
    "admin_reviewitem":      (302, 302, 403, 403, 200, 200, 403, 200),
    "admin_teams":           (302, 302, 403, 403, 200, 403, 403, 200),
    "admin_evaluationcases": (302, 302, 403, 403, 403, 200, 200, 200),
    "admin_actionruns":      (302, 302, 403, 403, 200, 200, 403, 200),
    "admin_conversations":   (302, 302, 403, 403, 200, 200, 403, 200),
}
assert set(GET_TABLE) == set(GET_URLS) and all(len(row) == len(ROLES) for row in GET_TABLE.values())

GET_CELLS = [pytest.param(endpoint, role, code, id=f"{endpoint}-{role}")
             for endpoint, row in GET_TABLE.items() for role, code in zip(ROLES, row)]


@pytest.mark.parametrize(("endpoint", "role", "expected"), GET_CELLS)
def test_get(world, demo_backend, endpoint, role, expected):
    url = GET_URLS[endpoint](world)
    before = snapshot(world, demo_backend)
    response = client_for(world.users[role]).get(url)
    assert response.status_code == expected, response.content[:300]
    if expected == 302:
        login = "/admin/login/" if endpoint.startswith("admin_") else reverse("login")
        assert response["Location"].startswith(f"{login}?next=")
    assert snapshot(world, demo_backend) == before  # reading changes nothing


# --- POST: the office forms and the review API ----------------------------------------------------

@dataclass(frozen=True)
class Post:
    url: object              # World -> str
    data: object = None      # World -> dict (form data, or JSON for the API)
    api: bool = False
    setup: object = None     # World -> None, run before the snapshot


def _office(name, target="conversation", **data):
    def url(w):
        obj = {"conversation": w.conversation, "run": w.run, "item": w.escalation, "answer": w.answer}[target]
        return reverse(f"office:{name}", args=[obj.pk])
    return url


POSTS = {
    "takeover": Post(_office("takeover")),
    "reply": Post(_office("reply"), lambda w: {"text": "Hello from the office"}),
    "hand_back": Post(_office("hand_back"), lambda w: {"needed_human": "yes"}),
    "close": Post(_office("close"), lambda w: {"resolution": "resolved", "needed_human": "yes",
                                               "item_version": str(w.escalation.version)}),
    "curated_answer": Post(_office("curated_answer"), lambda w: {
        "question": QUESTION, "answer": CORRECT_ANSWER,
        "collection": str(Collection.objects.get(name="Curated answers").pk)}),
    "flag": Post(_office("message_flag", "answer"), lambda w: {
        "category": "incomplete", "correct_answer": CORRECT_ANSWER, "note": "Misses the winter sale."}),
    "propose": Post(_office("action_propose"), lambda w: {
        "action": "refund_request", "token": "matrix-token-0001",
        "params": '{"order_id": "BW-10002", "amount": 10, "reason": "Arrived late"}'}),
    "approve": Post(_office("action_decide", "run"), lambda w: {"decision": "approve"}),
    "reject": Post(_office("action_decide", "run"), lambda w: {"decision": "reject", "reason": "Past the window"}),
    "claim_next": Post(lambda w: reverse("office:claim_next")),
    "item_claim": Post(_office("item_claim", "item"), lambda w: {"version": str(w.escalation.version)}),
    "item_release": Post(_office("item_release", "item"), setup=claimed_by_agent),
    "item_needed_human": Post(_office("item_needed_human", "item"), lambda w: {"needed_human": "no"}, setup=closed),
    "api_claim_next": Post(lambda w: "/api/review/items/claim-next/", api=True),
    "api_claim": Post(lambda w: f"/api/review/items/{w.escalation.pk}/claim/", api=True),
    "api_release": Post(lambda w: f"/api/review/items/{w.escalation.pk}/release/", api=True, setup=claimed_by_agent),
    "api_needed_human": Post(lambda w: f"/api/review/items/{w.escalation.pk}/needed-human/",
                             lambda w: {"needed_human": False}, api=True, setup=closed),
    "api_customer_message": Post(lambda w: f"/api/v1/conversations/{w.conversation.pk}/messages/",
                                 lambda w: {"text": "Sent with a staff session"}, api=True),
}

# Same columns as GET_TABLE. Office forms answer 302 back to the page when allowed (with a
# success or error message); 403 for a role that may not act; 404 for an invisible object.
POST_TABLE = {
    "takeover":             (302, 403, 302, 404, 302, 403, 403, 302),
    "reply":                (302, 403, 302, 404, 302, 403, 403, 302),
    "hand_back":            (302, 403, 302, 404, 302, 403, 403, 302),
    "close":                (302, 403, 302, 404, 302, 403, 403, 302),
    "curated_answer":       (302, 403, 302, 404, 302, 403, 403, 302),
    "flag":                 (302, 403, 302, 404, 302, 403, 403, 302),
    "propose":              (302, 403, 302, 404, 302, 403, 403, 302),
    "approve":              (302, 403, 302, 404, 302, 403, 403, 302),
    "reject":               (302, 403, 302, 404, 302, 403, 403, 302),
    "claim_next":           (302, 403, 302, 302, 302, 403, 403, 302),
    "item_claim":           (302, 403, 302, 404, 302, 403, 403, 302),
    "item_release":         (302, 403, 302, 404, 302, 403, 403, 302),
    "item_needed_human":    (302, 403, 302, 404, 302, 403, 403, 302),
    "api_claim_next":       (403, 403, 200, 204, 200, 403, 403, 204),
    "api_claim":            (403, 403, 200, 404, 200, 403, 403, 200),
    "api_release":          (403, 403, 200, 404, 200, 403, 403, 200),
    "api_needed_human":     (403, 403, 200, 404, 200, 403, 403, 200),
    "api_customer_message": (403, 403, 403, 403, 403, 403, 403, 403),
}
assert set(POST_TABLE) == set(POSTS) and all(len(row) == len(ROLES) for row in POST_TABLE.values())

# Allowed, but with nothing to act on: "claim next" hands out items of one's own teams only, so
# the Billing agent finds nothing, nor does the administrator, who sees every queue but belongs
# to no team (as tests/review/test_api.py documents). These must change nothing either.
NOTHING_TO_DO = {("claim_next", "other_team_agent"), ("api_claim_next", "other_team_agent"),
                 ("claim_next", "admin"), ("api_claim_next", "admin")}

POST_CELLS = [pytest.param(endpoint, role, code, id=f"{endpoint}-{role}")
              for endpoint, row in POST_TABLE.items() for role, code in zip(ROLES, row)]


def refused(endpoint: str, role: str, code: int) -> bool:
    return role == "anonymous" or code in (401, 403, 404) or (endpoint, role) in NOTHING_TO_DO


@pytest.mark.parametrize(("endpoint", "role", "expected"), POST_CELLS)
def test_post(world, demo_backend, django_capture_on_commit_callbacks, endpoint, role, expected):
    post = POSTS[endpoint]
    if post.setup:
        post.setup(world)
    url, data = post.url(world), post.data(world) if post.data else {}
    client = client_for(world.users[role])
    before = snapshot(world, demo_backend)
    with django_capture_on_commit_callbacks(execute=True):
        if post.api:
            response = client.post(url, data, content_type="application/json")
        else:
            response = client.post(url, data)
    assert response.status_code == expected, response.content[:300]
    if role == "anonymous" and not post.api:
        assert response["Location"].startswith(f"{reverse('login')}?next=")
    if refused(endpoint, role, expected):
        assert snapshot(world, demo_backend) == before
    elif endpoint not in {"reply", "hand_back"}:
        # An allowed act did something (reply and hand-back need a takeover first: their
        # refusal with a message is the expected answer here, and other tests cover them).
        assert snapshot(world, demo_backend) != before


# --- what each role sees in the lists -------------------------------------------------------------

SEES_SUPPORT = {"agent", "supervisor", "compliance", "admin"}


@pytest.mark.parametrize("role", ["agent", "other_team_agent", "supervisor", "compliance", "admin"])
def test_lists_show_exactly_the_visible_items_and_conversations(world, role):
    client = client_for(world.users[role])
    expected_items = {str(world.escalation.pk), str(world.approval.pk)} if role in SEES_SUPPORT else set()
    expected_live = {world.conversation.pk} if role in SEES_SUPPORT else set()

    inbox = client.get(reverse("office:inbox"))
    assert {str(r["item"].pk) for r in inbox.context["queue"]} == expected_items
    assert {c.pk for c in inbox.context["live"]} == expected_live
    api = client.get("/api/review/items/").json()
    assert {row["id"] for row in api["results"]} == expected_items


@pytest.fixture
def billing_conversation(world) -> Conversation:
    """A conversation escalated to the Billing team's queue (the reverse direction)."""
    conversation = convo_services.conversation_start()
    with transaction.atomic():
        review_item_open(kind=ItemKind.ESCALATION, subject_type=convo_services.SUBJECT_TYPE,
                         subject_id=str(conversation.pk), title="Billing question",
                         reason=EscalationReason.CUSTOMER_REQUEST, team=Team.objects.get(name="Billing"))
    return conversation


@pytest.mark.parametrize(("role", "expected"), [
    ("agent", 404), ("other_team_agent", 200), ("supervisor", 404), ("compliance", 200), ("admin", 200),
])
def test_another_teams_conversation(world, billing_conversation, role, expected):
    client = client_for(world.users[role])
    assert client.get(reverse("office:conversation", args=[billing_conversation.pk])).status_code == expected
    item = ReviewItem.objects.get(subject_id=str(billing_conversation.pk))
    assert client.get(f"/api/review/items/{item.pk}/").status_code == expected


def test_supervisor_admin_lists_only_their_teams(world, billing_conversation):
    client = client_for(world.users["supervisor"])
    item = ReviewItem.objects.get(subject_id=str(billing_conversation.pk))
    conversations = client.get("/admin/convo/conversation/")
    assert conversations.status_code == 200
    assert world.conversation in conversations.context["cl"].result_list
    assert billing_conversation not in conversations.context["cl"].result_list
    items = client.get("/admin/review/reviewitem/")
    assert world.escalation in items.context["cl"].result_list
    assert item not in items.context["cl"].result_list
    # The change page of another team's item or conversation is not there for them either.
    assert client.get(f"/admin/review/reviewitem/{item.pk}/change/").status_code in (302, 404)
    assert client.get(f"/admin/convo/conversation/{billing_conversation.pk}/change/").status_code in (302, 404)


# --- WebSockets ----------------------------------------------------------------------------------

@pytest.fixture
def sockets(monkeypatch):
    """Run the consumers inside the test's transaction (see the module docstring)."""
    import channels.db

    from convo import dispatch

    monkeypatch.setattr(channels.db, "close_old_connections", lambda: None)
    # The consumers remember "the server's loop" for background turns; forget the test's loop.
    monkeypatch.setattr(dispatch, "_server_loop", None)
    yield
    async_to_sync(get_channel_layer().flush)()


def cookie(user) -> list[tuple[bytes, bytes]]:
    if user is None:
        return []
    client = Client()
    client.force_login(user)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    return [(b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode())]


def connect(path: str, headers) -> tuple[bool, object]:
    """(accepted, close code or subprotocol)."""
    from config.asgi import application

    async def attempt():
        communicator = WebsocketCommunicator(application, path, headers=[ORIGIN, *headers])
        result = await communicator.connect(timeout=5)
        await communicator.disconnect()
        return result

    return async_to_sync(attempt)()


ACCEPT = "accept"
# Columns in ROLES order. The office channel is for those who read conversations; the chat
# channel, as staff, for those who may see that conversation.
SOCKET_TABLE = {
    "office": (4403, 4403, ACCEPT, ACCEPT, ACCEPT, ACCEPT, 4403, ACCEPT),
    "chat_staff": (4403, 4403, ACCEPT, 4404, ACCEPT, ACCEPT, 4403, ACCEPT),
}
SOCKET_CELLS = [pytest.param(socket, role, code, id=f"{socket}-{role}")
                for socket, row in SOCKET_TABLE.items() for role, code in zip(ROLES, row)]


@pytest.mark.parametrize(("socket", "role", "expected"), SOCKET_CELLS)
def test_socket(world, sockets, socket, role, expected):
    path = "/ws/office/" if socket == "office" else f"/ws/chat/{world.conversation.pk}/"
    connected, detail = connect(path, cookie(world.users[role]))
    if expected == ACCEPT:
        assert connected, f"refused with {detail}"
    else:
        assert (connected, detail) == (False, expected)


@pytest.mark.parametrize(("whose", "expected"), [("own", ACCEPT), ("another", 4403), ("forged", 4403)])
def test_customer_socket_needs_the_token_of_that_conversation(world, sockets, whose, expected):
    token = {"own": convo_services.conversation_token(world.conversation),
             "another": convo_services.conversation_token(convo_services.conversation_start()),
             "forged": "not-a-token"}[whose]
    connected, detail = connect(f"/ws/chat/{world.conversation.pk}/?token={token}", [])
    if expected == ACCEPT:
        assert connected, f"refused with {detail}"
    else:
        assert (connected, detail) == (False, expected)


@pytest.mark.parametrize(("whose", "expected"), [("own", 200), ("another", 403), ("none", 403)])
def test_customer_api_needs_the_token_of_that_conversation(world, demo_backend, whose, expected):
    headers = {"own": {"HTTP_AUTHORIZATION": f"Bearer {convo_services.conversation_token(world.conversation)}"},
               "another": {"HTTP_AUTHORIZATION":
                           f"Bearer {convo_services.conversation_token(convo_services.conversation_start())}"},
               "none": {}}[whose]
    url = f"/api/v1/conversations/{world.conversation.pk}/messages/"
    assert Client().get(url, **headers).status_code == expected
    if expected != 200:
        before = snapshot(world, demo_backend)
        assert Client().post(url, {"text": "Hello"}, content_type="application/json", **headers).status_code == 403
        assert snapshot(world, demo_backend) == before


def test_office_events_of_the_support_queue_reach_exactly_who_may_see_it(world, sockets, users):
    """A queue event of the Support team (sent as the queue broadcasts: to everyone who sees
    every queue, and to the team) reaches its agent and supervisor, compliance and the
    administrator, never the Billing agent."""
    from config.asgi import application

    roles = ["agent", "other_team_agent", "supervisor", "compliance", "admin"]
    headers = {role: cookie(world.users[role]) for role in roles}

    async def run():
        communicators = {}
        for role in roles:
            communicators[role] = WebsocketCommunicator(application, "/ws/office/", headers=[ORIGIN, *headers[role]])
            assert (await communicators[role].connect(timeout=5))[0], role
        layer = get_channel_layer()
        event = {"type": "tandem.event", "event": {"v": 1, "type": "queue.updated", "item_id": "x"}}
        await layer.group_send(OFFICE_GROUP, event)
        await layer.group_send(office_team_group(world.escalation.team_id), event)
        received = {}
        for role, communicator in communicators.items():
            got = []
            while not await communicator.receive_nothing(timeout=0.1):
                got.append(await communicator.receive_json_from())
            received[role] = len(got)
            await communicator.disconnect()
        return received

    assert async_to_sync(run)() == {"agent": 1, "other_team_agent": 0, "supervisor": 1, "compliance": 1,
                                    "admin": 1}


def test_conversation_events_reach_the_teams_office_sockets(world, sockets, django_capture_on_commit_callbacks):
    """A conversation's status change reaches the office sockets of those who may see it (its
    team's agent and supervisor, compliance, the administrator) and not the Billing agent."""
    from config.asgi import application

    roles = ["agent", "other_team_agent", "supervisor", "compliance", "admin"]
    headers = {role: cookie(world.users[role]) for role in roles}

    def take_over():
        with django_capture_on_commit_callbacks(execute=True):
            convo_services.conversation_takeover(conversation_id=world.conversation.pk, agent=world.users["admin"])

    async def run():
        from channels.db import database_sync_to_async

        communicators = {}
        for role in roles:
            communicators[role] = WebsocketCommunicator(application, "/ws/office/", headers=[ORIGIN, *headers[role]])
            assert (await communicators[role].connect(timeout=5))[0], role
        await database_sync_to_async(take_over)()
        received = {}
        for role, communicator in communicators.items():
            got = []
            while not await communicator.receive_nothing(timeout=0.1):
                got.append(await communicator.receive_json_from())
            received[role] = any(e["type"] == "conversation.status" and e.get("conversation_id") == str(
                world.conversation.pk) for e in got)
            await communicator.disconnect()
        return received

    assert async_to_sync(run)() == {"agent": True, "other_team_agent": False, "supervisor": True,
                                    "compliance": True, "admin": True}


@pytest.mark.parametrize("role", ["agent", "supervisor", "compliance", "admin"])
def test_staff_cannot_write_on_the_chat_socket_without_taking_over(world, sockets, demo_backend, role):
    """Watching is not acting: a staff socket's message or survey answer is refused with an
    error frame and changes nothing (compliance never may; others must take over first)."""
    from config.asgi import application

    headers = cookie(world.users[role])
    before = snapshot(world, demo_backend)

    async def run():
        communicator = WebsocketCommunicator(application, f"/ws/chat/{world.conversation.pk}/",
                                             headers=[ORIGIN, *headers])
        assert (await communicator.connect(timeout=5))[0]
        frames = []
        for frame in ({"type": "message.send", "text": "Hello from a watcher", "client_id": "w-1"},
                      {"type": "csat.submit", "score": 5}):
            await communicator.send_json_to(frame)
            frames.append(await communicator.receive_json_from(timeout=5))
        await communicator.disconnect()
        return frames

    frames = async_to_sync(run)()
    assert [(f["type"], f["code"]) for f in frames] == [("error", "forbidden")] * 2, frames
    assert snapshot(world, demo_backend) == before


def test_roles_in_the_matrix_are_every_staff_role():
    """A new role must get its own column here."""
    assert {StaffRole.AGENT, StaffRole.SUPERVISOR, StaffRole.COMPLIANCE, StaffRole.MODEL_OWNER,
            StaffRole.ADMINISTRATOR} == set(StaffRole.values)


def test_unknown_ids_answer_like_invisible_ones(world):
    client = client_for(world.users["agent"])
    unknown = uuid.uuid4()
    assert client.get(reverse("office:conversation", args=[unknown])).status_code == 404
    assert client.post(reverse("office:item_claim", args=[unknown])).status_code == 404
    assert client.get(f"/api/review/items/{unknown}/").status_code == 404
    assert client.get("/api/review/items/not-a-uuid/").status_code == 404


# --- compliance pages (convo/views_compliance.py) -------------------------------------------------
# Reading them is itself an audited act: an allowed view or export appends exactly its
# ``compliance.viewed`` / ``compliance.exported`` event and changes nothing else; a refused one
# changes nothing at all. Compliance officers and administrators only (other_team_agent included:
# no team grants it).

def _compliance_turn(w):
    from convo.models import Turn

    return Turn.objects.get(reply=w.answer)


def _compliance_export(fmt):
    return lambda w: reverse("office:compliance_conversation_export", args=[w.conversation.pk, fmt])


def _compliance_range(fmt):
    return lambda w: reverse("office:compliance_export", args=[fmt]) + "?from=2000-01-01&to=2000-01-31"


COMPLIANCE_GET_URLS = {
    "compliance_search": lambda w: reverse("office:compliance"),
    "compliance_conversation": _conversation_url("compliance_conversation"),
    "compliance_turn": lambda w: reverse("office:compliance_turn", args=[_compliance_turn(w).pk]),
    **{f"compliance_export_{fmt}": _compliance_export(fmt) for fmt in ("json", "html", "pdf")},
    **{f"compliance_range_{fmt}": _compliance_range(fmt) for fmt in ("json", "html", "pdf")},
}
COMPLIANCE_GET_TABLE = {
    "compliance_search":       (302, 403, 403, 403, 403, 200, 403, 200),
    "compliance_conversation": (302, 403, 403, 403, 403, 200, 403, 200),
    "compliance_turn":         (302, 403, 403, 403, 403, 200, 403, 200),
    "compliance_export_json":  (302, 403, 403, 403, 403, 200, 403, 200),
    "compliance_export_html":  (302, 403, 403, 403, 403, 200, 403, 200),
    "compliance_export_pdf":   (302, 403, 403, 403, 403, 200, 403, 200),
    "compliance_range_json":   (302, 403, 403, 403, 403, 200, 403, 200),
    "compliance_range_html":   (302, 403, 403, 403, 403, 200, 403, 200),
    "compliance_range_pdf":    (302, 403, 403, 403, 403, 200, 403, 200),
}
assert set(COMPLIANCE_GET_TABLE) == set(COMPLIANCE_GET_URLS)
assert all(len(row) == len(ROLES) for row in COMPLIANCE_GET_TABLE.values())

COMPLIANCE_GET_CELLS = [pytest.param(endpoint, role, code, id=f"{endpoint}-{role}")
                        for endpoint, row in COMPLIANCE_GET_TABLE.items() for role, code in zip(ROLES, row)]


@pytest.mark.parametrize(("endpoint", "role", "expected"), COMPLIANCE_GET_CELLS)
def test_compliance_get(world, demo_backend, endpoint, role, expected):
    url = COMPLIANCE_GET_URLS[endpoint](world)
    before = snapshot(world, demo_backend)
    response = client_for(world.users[role]).get(url)
    assert response.status_code == expected, response.content[:300]
    if expected == 302:
        assert response["Location"].startswith(f"{reverse('login')}?next=")
    after = snapshot(world, demo_backend)
    audited = expected == 200 and endpoint != "compliance_search"
    assert after["audit"] == before["audit"] + (1 if audited else 0)
    assert {k: v for k, v in after.items() if k != "audit"} == {k: v for k, v in before.items() if k != "audit"}
