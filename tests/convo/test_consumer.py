"""The chat WebSocket through the real ASGI application: origin and token checks, protocol
errors, the customer's turn, and an agent talking to the customer after a takeover."""

from __future__ import annotations

import json
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from config.asgi import application
from convo import services
from convo.models import Conversation, Message, Role, Turn

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1")
TURN_TIMEOUT = 20  # seconds; a turn runs inline in the consumer's database thread


# --- fixtures -------------------------------------------------------------------------------

@pytest.fixture
def flushable_db(transactional_db):
    """A transactional test database. Its flush can empty the append-only audit table
    (see ``pytest_configure`` in tests/conftest.py) and the role groups come back through
    governance's post_migrate handler."""
    yield


@pytest.fixture
async def channel_layer():
    layer = get_channel_layer()
    yield layer
    await layer.flush()


@pytest.fixture
def demo_tx(flushable_db, channel_layer):
    """The demo company, committed (these tests need real transactions)."""
    from django.contrib.auth import get_user_model

    from convo.demo.loader import load_demo

    result = load_demo()
    User = get_user_model()
    return {u.username: User.objects.get(username=u.username) for u in result["users"]}


@pytest.fixture
def conversation(demo_tx):
    return services.conversation_start()


@pytest.fixture
def outsider_tx(flushable_db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(username="outsider", password="x-outsider-pass", is_staff=True)


@database_sync_to_async
def session_cookie(user) -> tuple[bytes, bytes]:
    """The cookie header of a logged-in browser session for ``user``."""
    client = Client()
    client.force_login(user)
    return (b"cookie", f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode())


def chat_path(conversation_id, token: str | None = None) -> str:
    return f"/ws/chat/{conversation_id}/" + (f"?token={token}" if token else "")


async def open_socket(path: str, *headers) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, path, headers=[*headers])
    connected, detail = await communicator.connect(timeout=5)
    assert connected, f"refused with {detail}"
    return communicator


async def refused(path: str, *headers):
    communicator = WebsocketCommunicator(application, path, headers=[*headers])
    connected, code = await communicator.connect(timeout=5)
    await communicator.disconnect()
    assert not connected
    return code


async def receive_until(communicator, predicate, timeout=TURN_TIMEOUT) -> list[dict]:
    """Events up to and including the first that matches ``predicate``."""
    events = []
    while True:
        event = await communicator.receive_json_from(timeout=timeout)
        events.append(event)
        if predicate(event):
            return events


async def drain(communicator, quiet=0.3) -> list[dict]:
    """Every event that arrives until the socket has been quiet for ``quiet`` seconds."""
    events = []
    while not await communicator.receive_nothing(timeout=quiet):
        events.append(await communicator.receive_json_from())
    return events


def is_assistant_message(event) -> bool:
    return event["type"] == "message.new" and event["message"]["role"] == Role.ASSISTANT


@database_sync_to_async
def escalate(conversation) -> None:
    """The customer asked for a person: the conversation is in the Support team's queue."""
    from django.db import transaction

    from review.models import EscalationReason

    with transaction.atomic():
        services.conversation_escalate(conversation=conversation, reason=EscalationReason.CUSTOMER_REQUEST,
                                       summary="Customer asked for a person.", title="Customer asked for a person")


@database_sync_to_async
def customer_messages(conversation_id) -> list[str]:
    return list(Message.objects.filter(conversation_id=conversation_id, role=Role.CUSTOMER)
                .order_by("seq").values_list("text", flat=True))


# --- the customer's side --------------------------------------------------------------------

async def test_customer_question_is_acknowledged_then_answered_with_sources(conversation):
    token = services.conversation_token(conversation)
    socket = await open_socket(chat_path(conversation.pk, token), ORIGIN)
    await socket.send_json_to({"type": "message.send", "text": "How long does standard delivery take within Germany?",
                               "client_id": "c-1"})
    ack = await socket.receive_json_from(timeout=TURN_TIMEOUT)
    assert ack["type"] == "message.ack"
    assert ack["v"] == 1
    assert ack["client_id"] == "c-1"
    assert ack["duplicate"] is False
    assert ack["message"]["role"] == Role.CUSTOMER
    assert ack["message"]["seq"] == 2

    events = await receive_until(socket, is_assistant_message)
    kinds = [e["type"] for e in events]
    assert "assistant.typing" in kinds
    deltas = "".join(e["text"] for e in events if e["type"] == "assistant.delta")
    reply = events[-1]["message"]
    assert reply["seq"] == 3
    assert "2 to 4 working days" in reply["text"]
    assert deltas.strip() == reply["text"]
    assert reply["sources"][0]["title"] == "Shipping times and costs"
    assert reply["sources"][0]["url"] == "/help/shipping-and-delivery/"
    assert all(e["v"] == 1 for e in events)

    # The same client_id again is acknowledged as a duplicate and starts no second turn.
    await socket.send_json_to({"type": "message.send", "text": "How long does standard delivery take within Germany?",
                               "client_id": "c-1"})
    duplicate = await socket.receive_json_from(timeout=5)
    assert (duplicate["type"], duplicate["duplicate"], duplicate["message"]["seq"]) == ("message.ack", True, 2)
    assert await socket.receive_nothing(timeout=0.3)
    assert len(await customer_messages(conversation.pk)) == 1
    await socket.disconnect()


async def test_sync_returns_messages_after_a_sequence_number(conversation):
    socket = await open_socket(chat_path(conversation.pk, services.conversation_token(conversation)), ORIGIN)
    await socket.send_json_to({"type": "sync", "after_seq": 0})
    event = await socket.receive_json_from(timeout=5)
    assert event["type"] == "sync"
    assert [m["kind"] for m in event["messages"]] == ["disclosure"]
    await socket.send_json_to({"type": "sync", "after_seq": 1})
    assert (await socket.receive_json_from(timeout=5))["messages"] == []
    await socket.disconnect()


async def test_foreign_origin_is_refused(conversation):
    token = services.conversation_token(conversation)
    await refused(chat_path(conversation.pk, token), (b"origin", b"http://evil.example"))


async def test_missing_origin_is_refused(conversation):
    await refused(chat_path(conversation.pk, services.conversation_token(conversation)))


@pytest.mark.parametrize("token", ["garbage", "eyJhIjoxfQ:1abc:def"])
async def test_bad_token_is_refused(conversation, token):
    assert await refused(chat_path(conversation.pk, token), ORIGIN) == 4403


async def test_token_of_another_conversation_is_refused(conversation):
    other = await database_sync_to_async(services.conversation_start)()
    assert await refused(chat_path(conversation.pk, services.conversation_token(other)), ORIGIN) == 4403


async def test_no_token_and_no_session_is_refused(conversation):
    assert await refused(chat_path(conversation.pk), ORIGIN) == 4403


async def test_unknown_conversation_is_refused(demo_tx):
    missing = uuid.uuid4()
    token = services.conversation_token(Conversation(pk=missing))
    assert await refused(chat_path(missing, token), ORIGIN) == 4404


ERRORS = [
    pytest.param({"text_data": json.dumps({"type": "message.send", "text": "   "})}, "empty", id="empty"),
    pytest.param({"text_data": json.dumps({"type": "message.send", "text": "x" * 2001})}, "too_long", id="too-long"),
    pytest.param({"text_data": "x" * 64_001}, "too_long", id="huge-frame"),
    pytest.param({"text_data": json.dumps({"type": "message.send", "text": {"a": 1}})}, "not_text", id="not-text"),
    pytest.param({"text_data": "{not json"}, "bad_json", id="bad-json"),
    pytest.param({"text_data": "[1, 2]"}, "bad_request", id="json-array"),
    pytest.param({"text_data": "\"just a string\""}, "bad_request", id="json-string"),
    pytest.param({"text_data": json.dumps({"type": "dance"})}, "unknown_type", id="unknown-type"),
    pytest.param({"text_data": json.dumps({"text": "no type"})}, "unknown_type", id="no-type"),
    pytest.param({"text_data": json.dumps({"type": "sync", "after_seq": "abc"})}, "bad_request", id="bad-sync"),
    pytest.param({"bytes_data": b"\x00\x01binary"}, "not_text", id="binary"),
]


@pytest.mark.parametrize(("frame", "code"), ERRORS)
async def test_protocol_errors_are_reported_and_the_socket_stays_usable(conversation, frame, code):
    assert settings.CHAT_MAX_MESSAGE_CHARS == 2000
    socket = await open_socket(chat_path(conversation.pk, services.conversation_token(conversation)), ORIGIN)
    await socket.send_to(**frame)
    error = await socket.receive_json_from(timeout=5)
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["message"]
    assert await customer_messages(conversation.pk) == []

    await socket.send_json_to({"type": "message.send", "text": "hello", "client_id": "after-error"})
    ack = await socket.receive_json_from(timeout=TURN_TIMEOUT)
    assert (ack["type"], ack["client_id"]) == ("message.ack", "after-error")
    await receive_until(socket, is_assistant_message)
    assert await customer_messages(conversation.pk) == ["hello"]
    await socket.disconnect()


async def test_closed_conversation_reports_conversation_closed(conversation, demo_tx):
    await database_sync_to_async(services.conversation_close)(conversation_id=conversation.pk, agent=demo_tx["agent"])
    socket = await open_socket(chat_path(conversation.pk, services.conversation_token(conversation)), ORIGIN)
    await socket.send_json_to({"type": "message.send", "text": "still there?", "client_id": "late"})
    error = await socket.receive_json_from(timeout=5)
    assert (error["type"], error["code"], error["client_id"]) == ("error", "conversation_closed", "late")
    assert await customer_messages(conversation.pk) == []
    await socket.disconnect()


# --- staff sessions -------------------------------------------------------------------------

async def test_agent_must_take_over_before_replying(conversation, demo_tx):
    await escalate(conversation)
    socket = await open_socket(chat_path(conversation.pk), ORIGIN, await session_cookie(demo_tx["agent"]))
    await socket.send_json_to({"type": "message.send", "text": "Hi, Alex here."})
    error = await socket.receive_json_from(timeout=5)
    assert (error["type"], error["code"]) == ("error", "forbidden")
    assert "Take over" in error["message"]
    count = await database_sync_to_async(Message.objects.filter(conversation=conversation, role=Role.AGENT).count)()
    assert count == 0
    await socket.disconnect()


async def test_agent_reply_after_takeover_reaches_the_customer(conversation, demo_tx):
    agent = demo_tx["agent"]
    await escalate(conversation)
    customer = await open_socket(chat_path(conversation.pk, services.conversation_token(conversation)), ORIGIN)
    staff = await open_socket(chat_path(conversation.pk), ORIGIN, await session_cookie(agent))

    await database_sync_to_async(services.conversation_takeover)(conversation_id=conversation.pk, agent=agent)
    joined = await receive_until(customer, lambda e: e["type"] == "conversation.status")
    assert joined[-1]["status"] == "human"
    assert any(e["type"] == "message.new" and e["message"]["role"] == Role.SYSTEM for e in joined)

    await staff.send_json_to({"type": "message.send", "text": "Hi, Alex here. Let me look into it."})
    ack = await receive_until(staff, lambda e: e["type"] == "message.ack")
    assert ack[-1]["message"]["role"] == Role.AGENT

    events = await receive_until(customer, lambda e: e["type"] == "message.new" and e["message"]["role"] == Role.AGENT)
    message = events[-1]["message"]
    assert message["text"] == "Hi, Alex here. Let me look into it."
    assert message["author"] == "Alex"

    # The customer's answer reaches the agent, and no AI turn runs while a person is in charge.
    await customer.send_json_to({"type": "message.send", "text": "Thanks!", "client_id": "thanks"})
    seen = await receive_until(staff, lambda e: e["type"] == "message.new" and e["message"]["role"] == Role.CUSTOMER)
    assert seen[-1]["message"]["text"] == "Thanks!"
    await receive_until(customer, lambda e: e["type"] == "message.ack")
    rest = await drain(customer)
    assert [(e["type"], e["message"]["role"]) for e in rest] == [("message.new", Role.CUSTOMER)]
    assert not await database_sync_to_async(Turn.objects.filter(conversation=conversation).exists)()
    await customer.disconnect()
    await staff.disconnect()


async def test_agent_cannot_open_a_conversation_outside_their_teams(conversation, demo_tx):
    """A conversation still with the assistant is in no team's queue yet: only those who see
    every conversation (compliance, administrators) may watch it."""
    assert await refused(chat_path(conversation.pk), ORIGIN, await session_cookie(demo_tx["agent"])) == 4404
    assert await refused(chat_path(conversation.pk), ORIGIN, await session_cookie(demo_tx["supervisor"])) == 4404
    socket = await open_socket(chat_path(conversation.pk), ORIGIN, await session_cookie(demo_tx["compliance"]))
    await socket.disconnect()
    await escalate(conversation)
    socket = await open_socket(chat_path(conversation.pk), ORIGIN, await session_cookie(demo_tx["agent"]))
    await socket.disconnect()


async def test_compliance_may_watch_but_not_write(conversation, demo_tx):
    socket = await open_socket(chat_path(conversation.pk), ORIGIN, await session_cookie(demo_tx["compliance"]))
    await socket.send_json_to({"type": "message.send", "text": "hello"})
    error = await socket.receive_json_from(timeout=5)
    assert (error["type"], error["code"]) == ("error", "forbidden")
    count = await database_sync_to_async(Message.objects.filter(conversation=conversation).count)()
    assert count == 1  # the disclosure only
    await socket.disconnect()


async def test_staff_session_without_a_role_is_refused(conversation, outsider_tx):
    assert await refused(chat_path(conversation.pk), ORIGIN, await session_cookie(outsider_tx)) == 4403


async def test_office_channel_needs_a_role(demo_tx, outsider_tx):
    assert await refused("/ws/office/", ORIGIN, await session_cookie(outsider_tx)) == 4403
    assert await refused("/ws/office/", ORIGIN) == 4403
    socket = await open_socket("/ws/office/", ORIGIN, await session_cookie(demo_tx["supervisor"]))
    await socket.send_json_to({"type": "anything"})
    assert (await socket.receive_json_from(timeout=5))["code"] == "read_only"
    await socket.disconnect()
