"""The satisfaction survey posted when a conversation is closed: the service (asked only after
the customer wrote, answered once, every bad answer refused without a change) and the chat
socket (the customer answers on a closed conversation; staff may not)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import IntegrityError, transaction

from convo import services
from convo.broadcast import OFFICE_GROUP, chat_group
from convo.exceptions import SurveyRejected
from convo.models import Conversation, Message, Role
from convo.selectors import messages_after
from governance.models import AuditEvent
from tests.convo.test_consumer import ORIGIN, chat_path, drain, open_socket, receive_until, session_cookie

THANKS_AGAIN = "You already rated this conversation. Thank you!"


# --- helpers --------------------------------------------------------------------------------

def customer_writes(conversation: Conversation, text: str = "Where is my parcel?") -> None:
    """A customer message without an AI turn (the turn is not what these tests are about)."""
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        services.message_append(conversation=locked, role=Role.CUSTOMER, text=text)


def survey_state(conversation_id) -> dict:
    """Everything a survey answer may change."""
    conversation = Conversation.objects.get(pk=conversation_id)
    return {
        "fields": (conversation.csat_score, conversation.csat_comment, conversation.csat_requested_at,
                   conversation.csat_submitted_at),
        "messages": list(Message.objects.filter(conversation_id=conversation_id).order_by("seq")
                         .values_list("seq", "role", "text", "data")),
        "audit": AuditEvent.objects.filter(action="conversation.csat_submitted").count(),
    }


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, dict]]:
    """The realtime events sent after commit, as (group, event)."""
    events: list[tuple[str, dict]] = []
    monkeypatch.setattr("convo.broadcast.group_send_now", lambda group, event: events.append((group, event)))
    return events


@pytest.fixture
def closed_with_survey(customer_conversation, users, django_capture_on_commit_callbacks):
    customer_writes(customer_conversation)
    with django_capture_on_commit_callbacks(execute=True):
        services.conversation_close(conversation_id=customer_conversation.pk, agent=users["agent"])
    customer_conversation.refresh_from_db()
    return customer_conversation


# --- asking ---------------------------------------------------------------------------------

def test_closing_a_conversation_the_customer_wrote_in_asks_for_a_rating(closed_with_survey):
    conversation = closed_with_survey
    closing, survey = Message.objects.filter(conversation=conversation).order_by("-seq")[:2][::-1]
    assert (closing.role, closing.data["kind"]) == (Role.SYSTEM, "closed")
    assert (survey.role, survey.data, survey.seq) == (Role.SYSTEM, {"kind": "csat_request"}, closing.seq + 1)
    assert survey.text.startswith("How did we do?")
    assert conversation.csat_requested_at == conversation.closed_at
    assert (conversation.csat_score, conversation.csat_comment, conversation.csat_submitted_at) == (None, "", None)
    assert services.message_payload(survey)["csat"] == {"answered": False, "score": None}
    assert services.message_payload(closing)["csat"] is None
    closed = AuditEvent.objects.filter(action="conversation.closed").latest("seq")
    assert closed.data["csat_requested"] is True


def test_an_empty_chat_gets_no_survey(customer_conversation, users):
    services.conversation_close(conversation_id=customer_conversation.pk, agent=users["agent"])
    customer_conversation.refresh_from_db()
    assert customer_conversation.csat_requested_at is None
    kinds = list(Message.objects.filter(conversation=customer_conversation).order_by("seq")
                 .values_list("data__kind", flat=True))
    assert kinds == ["disclosure", "closed"]
    with pytest.raises(SurveyRejected) as refused:
        services.csat_submit(conversation_id=customer_conversation.pk, score=5)
    assert refused.value.code == "csat_not_requested"


# --- answering ------------------------------------------------------------------------------

def test_the_answer_is_stored_audited_and_announced(closed_with_survey, sent, django_capture_on_commit_callbacks):
    conversation = closed_with_survey
    with django_capture_on_commit_callbacks(execute=True):
        services.csat_submit(conversation_id=conversation.pk, score=4, comment="  Quick and friendly.\x07 ")
    conversation.refresh_from_db()
    assert (conversation.csat_score, conversation.csat_comment) == (4, "Quick and friendly.")
    assert conversation.csat_submitted_at is not None

    survey = Message.objects.get(conversation=conversation, data__kind="csat_request")
    assert survey.data == {"kind": "csat_request", "answered": True, "score": 4}
    # A reloaded chat renders the survey answered from the stored message.
    assert messages_after(conversation_id=conversation.pk)[-1]["csat"] == {"answered": True, "score": 4}

    audit = AuditEvent.objects.get(action="conversation.csat_submitted")
    assert audit.data == {"score": 4, "comment_chars": len("Quick and friendly.")}
    assert audit.actor_id == ""

    chat = [e for g, e in sent if g == chat_group(conversation.pk)]
    assert [(e["type"], e["message"]["csat"]) for e in chat] == [("message.new", {"answered": True, "score": 4})]
    office = [(g, e) for g, e in sent if e["type"] == "conversation.csat"]
    assert office[0] == (OFFICE_GROUP, {"type": "conversation.csat", "conversation_id": str(conversation.pk),
                                        "score": 4})


def test_the_comment_is_optional_and_may_be_exactly_the_limit(closed_with_survey):
    services.csat_submit(conversation_id=closed_with_survey.pk, score=1, comment="x" * 1000)
    closed_with_survey.refresh_from_db()
    assert (closed_with_survey.csat_score, len(closed_with_survey.csat_comment)) == (1, 1000)


@pytest.mark.parametrize("comment", [None, "", "   "])
def test_no_comment(closed_with_survey, comment):
    services.csat_submit(conversation_id=closed_with_survey.pk, score=5, comment=comment)
    closed_with_survey.refresh_from_db()
    assert (closed_with_survey.csat_score, closed_with_survey.csat_comment) == (5, "")


BAD_ANSWERS = [
    pytest.param({"score": 0}, "csat_invalid_score", id="zero"),
    pytest.param({"score": 6}, "csat_invalid_score", id="six"),
    pytest.param({"score": -3}, "csat_invalid_score", id="negative"),
    pytest.param({"score": "4"}, "csat_invalid_score", id="string"),
    pytest.param({"score": 4.0}, "csat_invalid_score", id="float"),
    pytest.param({"score": True}, "csat_invalid_score", id="bool"),
    pytest.param({"score": None}, "csat_invalid_score", id="missing"),
    pytest.param({"score": 3, "comment": "x" * 1001}, "csat_comment_too_long", id="comment-too-long"),
    pytest.param({"score": 3, "comment": {"text": "hi"}}, "csat_invalid_comment", id="comment-not-text"),
]


@pytest.mark.parametrize(("answer", "code"), BAD_ANSWERS)
def test_bad_answers_are_refused_and_change_nothing(closed_with_survey, sent, django_capture_on_commit_callbacks,
                                                    answer, code):
    before = survey_state(closed_with_survey.pk)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(SurveyRejected) as refused:
        services.csat_submit(conversation_id=closed_with_survey.pk, **answer)
    assert refused.value.code == code
    assert str(refused.value)
    assert survey_state(closed_with_survey.pk) == before
    assert sent == []


def test_a_second_answer_is_refused_and_the_first_kept(closed_with_survey):
    services.csat_submit(conversation_id=closed_with_survey.pk, score=2, comment="Slow.")
    before = survey_state(closed_with_survey.pk)
    with pytest.raises(SurveyRejected) as refused:
        services.csat_submit(conversation_id=closed_with_survey.pk, score=5, comment="Actually great")
    assert (refused.value.code, str(refused.value)) == ("csat_already_submitted", THANKS_AGAIN)
    assert survey_state(closed_with_survey.pk) == before
    assert before["fields"][:2] == (2, "Slow.")


def test_an_open_conversation_has_no_survey_to_answer(customer_conversation):
    customer_writes(customer_conversation)
    before = survey_state(customer_conversation.pk)
    with pytest.raises(SurveyRejected) as refused:
        services.csat_submit(conversation_id=customer_conversation.pk, score=5)
    assert refused.value.code == "csat_not_requested"
    assert survey_state(customer_conversation.pk) == before


def test_the_database_refuses_a_score_outside_1_to_5(closed_with_survey):
    with pytest.raises(IntegrityError), transaction.atomic():
        Conversation.objects.filter(pk=closed_with_survey.pk).update(csat_score=6)


# --- the chat socket ------------------------------------------------------------------------

transactional = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def layer():
    channel_layer = get_channel_layer()
    yield channel_layer
    await channel_layer.flush()


@pytest.fixture
def people(transactional_db, layer):
    """The demo company, committed (as in test_consumer.py: the sockets need real transactions;
    tests/conftest.py lets the flush between tests empty the append-only audit table)."""
    from django.contrib.auth import get_user_model

    from convo.demo.loader import load_demo

    User = get_user_model()
    return {u.username: User.objects.get(username=u.username) for u in load_demo()["users"]}


@database_sync_to_async
def close_after_customer_wrote(users) -> Conversation:
    conversation = services.conversation_start()
    customer_writes(conversation)
    services.conversation_close(conversation_id=conversation.pk, agent=users["agent"])
    return conversation


@transactional
async def test_customer_rates_a_closed_conversation_over_the_socket(people):
    conversation = await close_after_customer_wrote(people)
    customer = await open_socket(chat_path(conversation.pk, services.conversation_token(conversation)), ORIGIN)
    office = await open_socket("/ws/office/", ORIGIN, await session_cookie(people["compliance"]))

    # A closed conversation still refuses messages, but takes the survey answer.
    await customer.send_json_to({"type": "message.send", "text": "hello?", "client_id": "late"})
    assert (await customer.receive_json_from(timeout=5))["code"] == "conversation_closed"
    await customer.send_json_to({"type": "csat.submit", "score": 5, "comment": "Sorted in minutes, thanks!"})
    events = await receive_until(customer, lambda e: e["type"] == "csat.ack", timeout=5)
    events += await drain(customer)
    assert {"v": 1, "type": "csat.ack", "score": 5} in events
    updated = [e["message"] for e in events if e["type"] == "message.new"]
    assert [(m["kind"], m["csat"]) for m in updated] == [("csat_request", {"answered": True, "score": 5})]
    announced = await receive_until(office, lambda e: e["type"] == "conversation.csat", timeout=5)
    assert announced[-1] == {"v": 1, "type": "conversation.csat", "conversation_id": str(conversation.pk),
                             "score": 5}

    saved = await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
    assert (saved.csat_score, saved.csat_comment) == (5, "Sorted in minutes, thanks!")

    # Answering again: a clear refusal, the first answer kept.
    await customer.send_json_to({"type": "csat.submit", "score": 1})
    error = await customer.receive_json_from(timeout=5)
    assert (error["type"], error["code"], error["message"]) == ("error", "csat_already_submitted", THANKS_AGAIN)
    saved = await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
    assert saved.csat_score == 5
    await customer.disconnect()
    await office.disconnect()


SOCKET_REFUSALS = [
    ({"type": "csat.submit", "score": 9}, "csat_invalid_score"),
    ({"type": "csat.submit", "score": "5"}, "csat_invalid_score"),
    ({"type": "csat.submit"}, "csat_invalid_score"),
    ({"type": "csat.submit", "score": 4, "comment": "x" * 1001}, "csat_comment_too_long"),
    ({"type": "csat.submit", "score": 4, "comment": ["a", "list"]}, "csat_invalid_comment"),
]


@transactional
async def test_bad_answers_over_the_socket_are_errors_and_change_nothing(people):
    conversation = await close_after_customer_wrote(people)
    before = await database_sync_to_async(survey_state)(conversation.pk)
    customer = await open_socket(chat_path(conversation.pk, services.conversation_token(conversation)), ORIGIN)
    for frame, code in SOCKET_REFUSALS:
        await customer.send_json_to(frame)
        error = await customer.receive_json_from(timeout=5)
        assert (error["v"], error["type"], error["code"]) == (1, "error", code), frame
        assert error["message"]
    assert await customer.receive_nothing(timeout=0.3)
    assert await database_sync_to_async(survey_state)(conversation.pk) == before
    # The socket is still usable: a good answer after the bad ones is stored.
    await customer.send_json_to({"type": "csat.submit", "score": 3})
    await receive_until(customer, lambda e: e["type"] == "csat.ack", timeout=5)
    await customer.disconnect()


@transactional
async def test_staff_cannot_answer_for_the_customer(people):
    conversation = await close_after_customer_wrote(people)
    before = await database_sync_to_async(survey_state)(conversation.pk)
    staff = await open_socket(chat_path(conversation.pk), ORIGIN, await session_cookie(people["admin"]))
    await staff.send_json_to({"type": "csat.submit", "score": 5})
    error = await staff.receive_json_from(timeout=5)
    assert (error["type"], error["code"]) == ("error", "forbidden")
    assert "customer" in error["message"]
    assert await database_sync_to_async(survey_state)(conversation.pk) == before
    await staff.disconnect()


@transactional
async def test_a_conversation_never_asked_has_nothing_to_answer(people):
    conversation = await database_sync_to_async(services.conversation_start)()
    before = await database_sync_to_async(survey_state)(conversation.pk)
    customer = await open_socket(chat_path(conversation.pk, services.conversation_token(conversation)), ORIGIN)
    await customer.send_json_to({"type": "csat.submit", "score": 5})
    error = await customer.receive_json_from(timeout=5)
    assert (error["type"], error["code"]) == ("error", "csat_not_requested")
    assert await database_sync_to_async(survey_state)(conversation.pk) == before
    await customer.disconnect()
