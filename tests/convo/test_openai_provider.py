"""The turn with the OpenAI-compatible provider, against a local fake of the OpenAI API.

The fake (tests/fakes/openai_server.py) is a real HTTP server on loopback; the real
``openai`` client talks to it. It records every request body, so these tests check what
actually left the process."""

from __future__ import annotations

import json

import pytest

from convo.models import ConversationStatus, Decision, Message, Role, TurnStatus
from integrations.models import ActionRun, RunStatus
from review.models import EscalationReason, ItemKind, ReviewItem
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.django_db

DELIVERY_QUESTION = "How long does standard delivery take within Germany?"
ANSWER = "Standard delivery within Germany takes 2 to 4 working days [1]."


@pytest.fixture(scope="module")
def fake_openai():
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(fake_openai, settings):
    settings.LLM_BASE_URL = fake_openai.base_url
    settings.LLM_API_KEY = "test-key"
    settings.LLM_MODEL = "fake-model"
    settings.LLM_TIMEOUT_S = 2.0
    fake_openai.reset()
    yield fake_openai
    fake_openai.reset()


@pytest.fixture
def sent(monkeypatch):
    """Realtime events the turn sent (the channel layer is in-process; this records them)."""
    events: list[tuple[str, dict]] = []
    monkeypatch.setattr("convo.pipeline.group_send_now", lambda group, event: events.append((group, event)))
    return events


def _system_prompt(request: dict) -> str:
    return request["messages"][0]["content"]


# --- answers ----------------------------------------------------------------------------------

def test_streamed_answer_with_citation(say, fake, sent, customer_conversation, demo_backend):
    fake.script({"text": ANSWER})
    turn = say(DELIVERY_QUESTION)

    assert turn.decision == Decision.ANSWER
    assert turn.status == TurnStatus.DONE
    assert turn.provider == "openai"
    assert turn.model_version.provider == "openai"
    assert turn.model_version.model_name == "fake-model"
    assert turn.model_version.endpoint == fake.base_url
    assert turn.reply.role == Role.ASSISTANT
    assert turn.reply.text == ANSWER
    [cited] = turn.reply.sources
    assert cited["n"] == 1
    assert cited["title"] == turn.sources[0]["title"]
    assert turn.model_ms > 0
    assert turn.ttft_ms is not None and turn.ttft_ms <= turn.model_ms

    [request] = fake.chat_requests
    assert request["model"] == "fake-model"
    assert request["stream"] is True
    # Usage comes from the endpoint's final chunk: prompt words in, answer words out.
    prompt_words = sum(len(m["content"].split()) for m in request["messages"])
    assert (turn.tokens_in, turn.tokens_out) == (prompt_words, len(ANSWER.split()))
    # The retrieved sources are numbered in the system prompt, the question is the last message.
    system = _system_prompt(request)
    assert "[1] Shipping times and costs" in system
    assert "2 to 4 working days" in system
    assert request["messages"][-1] == {"role": "user", "content": DELIVERY_QUESTION}
    # The action catalogue is offered as tools.
    tools = {t["function"]["name"]: t["function"] for t in request["tools"]}
    assert set(tools) == {"account_lookup", "change_address", "order_status", "refund_request"}
    assert tools["refund_request"]["parameters"]["required"] == ["order_id", "amount", "reason"]

    # The answer was streamed to the chat group as it came.
    group = f"chat.{customer_conversation.pk}"
    deltas = [e for g, e in sent if e["type"] == "assistant.delta"]
    assert len(deltas) > 1
    assert all(g == group for g, e in sent)
    assert "".join(e["text"] for e in deltas) == ANSWER
    assert {e["turn_id"] for e in deltas} == {str(turn.pk)}
    assert sent[0][1]["type"] == "assistant.typing"


def test_history_goes_with_the_next_question(say, fake):
    fake.script({"text": ANSWER}, {"text": "Express costs 9.95 EUR [1]."})
    say(DELIVERY_QUESTION)
    say("And express?")
    second = fake.chat_requests[-1]["messages"]
    assert [m["role"] for m in second] == ["system", "assistant", "user", "assistant", "user"]
    assert second[2]["content"] == DELIVERY_QUESTION
    assert second[3]["content"] == ANSWER
    assert second[-1]["content"] == "And express?"


def test_uncited_answer_without_good_sources_falls_back(say, fake):
    fake.script({"text": "The airspeed is 11 m/s."})
    turn = say("What is the airspeed velocity of an unladen swallow?")
    assert turn.decision == Decision.FALLBACK
    assert turn.reply.sources == []


def test_pii_is_redacted_before_it_leaves_but_stored_for_the_conversation(say, fake):
    fake.script({"text": ANSWER})
    question = ("My email is jane.doe@example.com and my card is 4111 1111 1111 1111. "
                "How long does standard delivery take within Germany?")
    turn = say(question)
    [request] = fake.chat_requests
    wire = json.dumps(request)
    assert "jane.doe@example.com" not in wire
    assert "4111" not in wire
    assert request["messages"][-1]["content"] == (
        "My email is [EMAIL] and my card is [CARD]. How long does standard delivery take within Germany?")

    message = Message.objects.get(pk=turn.message_id)
    assert message.text == question
    assert message.redacted_text == request["messages"][-1]["content"]
    assert turn.guards["pii"] == ["CARD", "EMAIL"]

    # Earlier messages go out redacted too.
    fake.script({"text": "You're welcome [1]."})
    say("Thanks, and is express faster?")
    history = json.dumps(fake.chat_requests[-1]["messages"])
    assert "jane.doe@example.com" not in history and "[EMAIL]" in history


# --- tool calls -------------------------------------------------------------------------------

def test_refund_tool_call_waits_for_approval(say, fake, demo_backend, customer_conversation):
    args = {"order_id": "BW-10003", "amount": 40, "reason": "The zip broke after a week"}
    fake.script({"tool_call": {"name": "refund_request", "arguments": args}})
    turn = say("I want 40 euros back for order BW-10003, the zip broke after a week")

    assert turn.decision == Decision.APPROVAL
    assert turn.tool_call == {"name": "refund_request", "arguments": args}
    run = ActionRun.objects.get(pk=turn.action_run_id)
    assert run.status == RunStatus.AWAITING_APPROVAL
    assert run.params == args
    assert run.idempotency_key == f"turn:{turn.pk}"
    assert ReviewItem.objects.filter(kind=ItemKind.ACTION_APPROVAL, subject_id=str(run.pk)).exists()
    assert demo_backend.execution_counts == {}
    assert "approval" in turn.reply.text.lower()


def test_read_tool_call_runs_at_once(say, fake, demo_backend):
    fake.script({"tool_call": {"name": "order_status", "arguments": {"order_id": "BW-10002"}}})
    turn = say("Where is my order BW-10002?")
    assert turn.decision == Decision.ACTION
    run = ActionRun.objects.get(pk=turn.action_run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert "BW-10002" in turn.reply.text


def test_tool_call_with_invalid_arguments_asks_again(say, fake, demo_backend, customer_conversation):
    fake.script({"tool_call": {"name": "refund_request",
                               "arguments": {"order_id": "12345", "amount": 40, "reason": "Broken zip"}}})
    turn = say("I want 40 euros back, the zip is broken")
    assert turn.decision == Decision.CLARIFY
    assert "order_id" in turn.reply.text
    assert not ActionRun.objects.exists()
    assert demo_backend.execution_counts == {}
    customer_conversation.refresh_from_db()
    pending = customer_conversation.state["pending_action"]
    assert pending["action"] == "refund_request"
    assert pending["asked"] == "order_id"
    assert "order_id" not in pending["params"]


def test_tool_call_with_malformed_json_is_an_error_not_an_action(say, fake, demo_backend):
    fake.script({"tool_call": {"name": "refund_request", "arguments": "{not json"}})
    turn = say("refund my order please")
    assert turn.decision == Decision.ERROR
    assert "malformed arguments" in turn.error
    assert not ActionRun.objects.exists()


def test_unknown_tool_escalates_as_unsupported(say, fake, customer_conversation, demo_backend):
    fake.script({"tool_call": {"name": "delete_account", "arguments": {"email": "a@b.example"}}})
    turn = say("Please delete my account")
    assert turn.decision == Decision.ESCALATE
    assert turn.reason == EscalationReason.UNSUPPORTED_REQUEST
    assert "delete_account" in turn.error
    customer_conversation.refresh_from_db()
    assert customer_conversation.status == ConversationStatus.HANDOFF
    item = ReviewItem.objects.get(kind=ItemKind.ESCALATION, subject_id=str(customer_conversation.pk))
    assert item.reason == EscalationReason.UNSUPPORTED_REQUEST
    assert not ActionRun.objects.exists()


# --- failures -------------------------------------------------------------------------------

def _assert_failed_then_recovers(say, fake, customer_conversation, turn, error):
    assert turn.status == TurnStatus.FAILED
    assert turn.decision == Decision.ERROR
    assert error in turn.error
    assert turn.reply.role == Role.SYSTEM
    assert turn.reply.data["kind"] == "error"
    assert "trouble answering" in turn.reply.text
    assert fake.pending == 0, "the client retried exactly once"
    customer_conversation.refresh_from_db()
    assert customer_conversation.status == ConversationStatus.BOT

    fake.script({"text": ANSWER})
    again = say(DELIVERY_QUESTION)
    assert again.decision == Decision.ANSWER
    assert again.status == TurnStatus.DONE
    assert again.reply.text == ANSWER


def test_http_500_fails_the_turn_and_the_next_one_works(say, fake, customer_conversation):
    fake.script({"error": 500}, {"error": 500})
    turn = say(DELIVERY_QUESTION)
    _assert_failed_then_recovers(say, fake, customer_conversation, turn, "http_error: the model endpoint returned HTTP 500")


def test_hang_beyond_the_timeout_fails_the_turn_and_the_next_one_works(say, fake, customer_conversation, settings):
    settings.LLM_TIMEOUT_S = 0.3
    fake.script({"hang": 2}, {"hang": 2})
    turn = say(DELIVERY_QUESTION)
    _assert_failed_then_recovers(say, fake, customer_conversation, turn, "timeout: the model did not answer in time")
