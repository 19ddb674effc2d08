"""The customer REST API: start a conversation, send messages, read them back."""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import cache
from django.urls import reverse

from convo.models import Conversation, ConversationStatus, Message, Role, Turn, TurnStatus
from convo.services import (
    AI_DISCLOSURE,
    conversation_close,
    conversation_id_from_token,
    conversation_start,
    conversation_token,
)

pytestmark = pytest.mark.django_db

DELIVERY_QUESTION = "How long does standard delivery take within Germany?"


@pytest.fixture(autouse=True)
def _fresh_throttle_cache():
    # The conversation-start throttle counts per client address in the cache.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def api(client):
    return client


@pytest.fixture
def started(api, db):
    """A conversation started through the API: (id, token). Tests that run turns or need
    staff users ask for ``demo`` as well; the others skip loading it."""
    response = api.post(reverse("api-conversation-create"))
    assert response.status_code == 201
    body = response.json()
    return body["id"], body["token"]


def _messages_url(conversation_id) -> str:
    return reverse("api-messages", args=[conversation_id])


def _post(api, conversation_id, token, payload, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    return api.post(_messages_url(conversation_id), payload, content_type="application/json", **headers, **extra)


def _get(api, conversation_id, token, after=None):
    url = _messages_url(conversation_id) + (f"?after={after}" if after is not None else "")
    return api.get(url, HTTP_AUTHORIZATION=f"Bearer {token}")


def _stored(conversation_id) -> tuple[int, int]:
    return Message.objects.filter(conversation_id=conversation_id).count(), Turn.objects.count()


# --- starting -------------------------------------------------------------------------------

def test_start_returns_id_token_socket_url_and_the_ai_disclosure(api, db):
    response = api.post(reverse("api-conversation-create"))
    assert response.status_code == 201
    body = response.json()
    conversation = Conversation.objects.get(pk=body["id"])
    assert conversation.channel == "api"
    assert conversation.ai_disclosed
    assert body["status"] == ConversationStatus.BOT
    # The token is signed with a timestamp: compare what it opens, not its bytes.
    assert conversation_id_from_token(body["token"]) == str(conversation.pk)
    assert body["ws_url"] == f"/ws/chat/{conversation.pk}/?token={body['token']}"
    [disclosure] = body["messages"]
    assert disclosure["role"] == Role.ASSISTANT
    assert disclosure["kind"] == "disclosure"
    assert disclosure["text"] == AI_DISCLOSURE
    assert "AI" in disclosure["text"]
    assert disclosure["seq"] == 1


def test_tokens_are_per_conversation(api, db):
    a = api.post(reverse("api-conversation-create")).json()
    b = api.post(reverse("api-conversation-create")).json()
    assert a["id"] != b["id"] and a["token"] != b["token"]
    assert _get(api, a["id"], b["token"]).status_code == 403


# --- sending and reading ----------------------------------------------------------------------

def test_message_runs_a_turn_and_the_reply_can_be_read_back(api, demo, started, django_capture_on_commit_callbacks):
    conversation_id, token = started
    with django_capture_on_commit_callbacks(execute=True):
        response = _post(api, conversation_id, token, {"text": DELIVERY_QUESTION, "client_id": "c-1"})
    assert response.status_code == 202
    body = response.json()
    assert body["duplicate"] is False
    sent = body["message"]
    assert (sent["role"], sent["text"], sent["seq"]) == (Role.CUSTOMER, DELIVERY_QUESTION, 2)
    turn = Turn.objects.get(message_id=sent["id"])
    assert turn.status == TurnStatus.DONE

    response = _get(api, conversation_id, token, after=sent["seq"])
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == ConversationStatus.BOT
    [reply] = body["messages"]
    assert reply["role"] == Role.ASSISTANT
    assert reply["seq"] == 3
    assert reply["turn_id"] == str(turn.pk)
    assert "2 to 4 working days" in reply["text"]
    assert reply["sources"] and reply["sources"][0]["title"] == "Shipping times and costs"

    everything = _get(api, conversation_id, token).json()["messages"]
    assert [m["seq"] for m in everything] == [1, 2, 3]


def test_token_in_the_conversation_token_header_also_works(api, started):
    conversation_id, token = started
    response = api.get(_messages_url(conversation_id), HTTP_X_CONVERSATION_TOKEN=token)
    assert response.status_code == 200
    assert len(response.json()["messages"]) == 1


def test_after_must_be_a_number(api, started):
    conversation_id, token = started
    response = api.get(_messages_url(conversation_id) + "?after=abc", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 400
    assert "sequence number" in response.json()["detail"]


@pytest.mark.parametrize("after", [0, 1, 5])
def test_reading_messages_takes_two_queries(api, started, django_assert_num_queries, after):
    conversation_id, token = started
    conversation = Conversation.objects.get(pk=conversation_id)
    from convo.services import message_append

    for i in range(5):
        message_append(conversation=conversation, role=Role.ASSISTANT, text=f"note {i}")
    # The conversation by id, then its messages with their authors.
    with django_assert_num_queries(2):
        response = _get(api, conversation_id, token, after=after)
    assert [m["seq"] for m in response.json()["messages"]] == list(range(after + 1, 7))


# --- who may talk to which conversation -----------------------------------------------------

def test_unknown_conversation_is_404_json(api, started):
    """A validly signed token for a conversation that no longer exists gets a clear 404."""
    from django.core import signing

    from convo.services import TOKEN_SALT

    missing = uuid.uuid4()
    token = signing.dumps(str(missing), salt=TOKEN_SALT, compress=True)
    for response in (_get(api, missing, token), _post(api, missing, token, {"text": "hi"})):
        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"
        assert response.json() == {"detail": "No conversation with that id."}


def test_another_conversations_token_does_not_reveal_whether_an_id_exists(api, started):
    _, token = started
    for response in (_get(api, uuid.uuid4(), token), _post(api, uuid.uuid4(), token, {"text": "hi"})):
        assert response.status_code == 403
        assert response.json()["detail"] == "Missing or invalid conversation token."


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "1234", "%27%20OR%201=1"])
def test_malformed_conversation_id_is_refused(api, started, bad_id):
    _, token = started
    response = api.get(f"/api/v1/conversations/{bad_id}/messages/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 403
    assert response.json()["detail"] == "Missing or invalid conversation token."


@pytest.mark.parametrize("token", [None, "", "garbage", "Bearer-less"])
def test_wrong_or_missing_token_is_403_and_nothing_is_stored(api, started, token,
                                                               django_capture_on_commit_callbacks):
    conversation_id, _ = started
    before = _stored(conversation_id)
    with django_capture_on_commit_callbacks(execute=True):
        response = _post(api, conversation_id, token, {"text": "Where is my order BW-10001?"})
    assert response.status_code == 403
    assert response.json()["detail"] == "Missing or invalid conversation token."
    assert _stored(conversation_id) == before
    assert _get(api, conversation_id, token or "x").status_code == 403


def test_token_of_another_conversation_is_refused(api, started, django_capture_on_commit_callbacks):
    conversation_id, _ = started
    other = conversation_start()
    before = _stored(conversation_id)
    with django_capture_on_commit_callbacks(execute=True):
        response = _post(api, conversation_id, conversation_token(other), {"text": "hi"})
    assert response.status_code == 403
    assert _stored(conversation_id) == before


def test_staff_session_is_not_a_customer_token(api, started, users):
    conversation_id, _ = started
    api.force_login(users["admin"])
    before = _stored(conversation_id)
    response = api.post(_messages_url(conversation_id), {"text": "hi"}, content_type="application/json")
    assert response.status_code == 403
    assert _stored(conversation_id) == before


# --- validation -----------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "   ", "\n\t", "\x07\u200b\x1b"])
def test_empty_text_is_400_with_a_reason(api, started, text):
    conversation_id, token = started
    before = _stored(conversation_id)
    response = _post(api, conversation_id, token, {"text": text})
    assert response.status_code == 400
    assert response.json() == {"code": "empty", "detail": "Your message is empty."}
    assert _stored(conversation_id) == before


def test_text_over_the_limit_is_400_too_long(api, started, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 50
    conversation_id, token = started
    before = _stored(conversation_id)
    assert _post(api, conversation_id, token, {"text": "x" * 50}).status_code == 202
    response = _post(api, conversation_id, token, {"text": "x" * 51})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "too_long"
    assert "51 characters" in body["detail"] and "limit is 50" in body["detail"]
    assert _stored(conversation_id)[0] == before[0] + 1


@pytest.mark.parametrize("payload", [
    {"text": {"nested": "object"}},
    {"text": ["a", "list"]},
    {"text": None},
    {},
    {"message": "wrong field"},
])
def test_text_that_is_not_a_string_is_400(api, started, payload):
    conversation_id, token = started
    before = _stored(conversation_id)
    response = _post(api, conversation_id, token, payload)
    assert response.status_code == 400
    assert "text" in response.json()
    assert _stored(conversation_id) == before


def test_body_that_is_not_json_is_400(api, started):
    conversation_id, token = started
    before = _stored(conversation_id)
    response = api.post(_messages_url(conversation_id), "{not json", content_type="application/json",
                        HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 400
    assert _stored(conversation_id) == before


# --- idempotency, closed conversations, rate limits -----------------------------------------

def test_same_client_id_twice_stores_one_message_and_one_turn(api, demo, started,
                                                              django_capture_on_commit_callbacks):
    conversation_id, token = started
    with django_capture_on_commit_callbacks(execute=True):
        first = _post(api, conversation_id, token, {"text": "hello", "client_id": "retry-me"})
    after_first = _stored(conversation_id)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        second = _post(api, conversation_id, token, {"text": "hello", "client_id": "retry-me"})
    assert first.status_code == 202 and first.json()["duplicate"] is False
    assert second.status_code == 200 and second.json()["duplicate"] is True
    assert second.json()["message"]["id"] == first.json()["message"]["id"]
    assert callbacks == []
    assert _stored(conversation_id) == after_first
    assert Message.objects.filter(conversation_id=conversation_id, role=Role.CUSTOMER).count() == 1
    assert Turn.objects.filter(conversation_id=conversation_id).count() == 1


def test_closed_conversation_is_409(api, started, users):
    conversation_id, token = started
    conversation_close(conversation_id=conversation_id, agent=users["agent"])
    before = _stored(conversation_id)
    response = _post(api, conversation_id, token, {"text": "one more thing"})
    assert response.status_code == 409
    assert response.json()["code"] == "conversation_closed"
    assert _stored(conversation_id) == before
    # Reading the transcript still works.
    assert _get(api, conversation_id, token).json()["status"] == ConversationStatus.CLOSED


def test_too_many_messages_a_minute_is_429(api, started, settings):
    settings.CHAT_RATE_LIMIT_PER_MINUTE = 3
    conversation_id, token = started
    for i in range(3):
        assert _post(api, conversation_id, token, {"text": f"message {i}"}).status_code == 202
    before = _stored(conversation_id)
    response = _post(api, conversation_id, token, {"text": "one too many"})
    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited"
    assert _stored(conversation_id) == before


def test_starting_conversations_is_throttled(api, db, monkeypatch):
    from convo.api.views import ConversationStartThrottle

    monkeypatch.setattr(ConversationStartThrottle, "THROTTLE_RATES", {"chat": "2/min"})
    codes = [api.post(reverse("api-conversation-create")).status_code for _ in range(3)]
    assert codes == [201, 201, 429]
    assert Conversation.objects.count() == 2
