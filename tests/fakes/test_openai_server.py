"""The fake OpenAI server, driven by the real ``openai`` client (no DB, no Django)."""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request

import openai
import pytest

from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture
def fake():
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def client(fake):
    return openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0, timeout=10)


def _ask(client, text="How long does delivery take?", **kwargs):
    return client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": text}], **kwargs
    )


def test_non_stream_text(fake, client):
    fake.script({"text": "Standard delivery takes 3 days."})

    completion = _ask(client)

    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Standard delivery takes 3 days."
    assert choice.finish_reason == "stop"
    assert completion.model == "fake-model"
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert fake.requests[-1]["messages"][0]["content"] == "How long does delivery take?"


def test_default_answer_quotes_the_last_user_message(client):
    completion = _ask(client, "Where is my parcel?")

    assert completion.choices[0].message.content == "Fake answer about: Where is my parcel? [1]"


def test_streamed_text_joins_to_the_answer(fake, client):
    answer = "Standard delivery takes three to five working days."
    fake.script({"text": answer})

    stream = _ask(client, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)

    content = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(content) == answer
    assert len([c for c in content if c]) > 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens > 0


def test_streamed_tool_call_reassembles(fake, client):
    arguments = {"order_id": "A-1234", "include_history": True}
    fake.script({"tool_call": {"name": "lookup_order", "arguments": arguments}})

    name, fragments, finish, call_id = None, [], None, None
    for chunk in _ask(client, stream=True):
        choice = chunk.choices[0]
        for call in choice.delta.tool_calls or []:
            call_id = call_id or call.id
            if call.function.name:
                name = call.function.name
            if call.function.arguments:
                fragments.append(call.function.arguments)
        finish = choice.finish_reason or finish

    assert name == "lookup_order"
    assert call_id
    assert len(fragments) >= 2
    assert json.loads("".join(fragments)) == arguments
    assert finish == "tool_calls"


def test_non_stream_tool_call(fake, client):
    fake.script({"tool_call": {"name": "lookup_order", "arguments": {"order_id": 7}}})

    message = _ask(client).choices[0].message

    assert message.content is None
    assert message.tool_calls[0].function.name == "lookup_order"
    assert json.loads(message.tool_calls[0].function.arguments) == {"order_id": 7}


def test_error_500_raises_internal_server_error(fake, client):
    fake.script({"error": 500})

    with pytest.raises(openai.InternalServerError):
        _ask(client)
    # The queue is consumed: the next request gets the default answer.
    assert _ask(client).choices[0].message.content.startswith("Fake answer about:")


def test_hang_with_client_timeout_raises_timeout(fake):
    client = openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0, timeout=0.3)
    fake.script({"hang": 3})

    with pytest.raises(openai.APITimeoutError):
        _ask(client)


def test_embeddings_are_384_dim_normalised_and_deterministic(client):
    result = client.embeddings.create(model="text-embedding-3-small", input=["refunds", "delivery"])
    again = client.embeddings.create(model="text-embedding-3-small", input="refunds")

    assert [len(d.embedding) for d in result.data] == [384, 384]
    assert math.isclose(sum(x * x for x in result.data[0].embedding), 1.0, rel_tol=1e-6)
    assert again.data[0].embedding == result.data[0].embedding
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.total_tokens > 0


def test_embeddings_base64(client):
    result = client.embeddings.create(
        model="text-embedding-3-small", input="refunds", encoding_format="base64"
    )
    assert isinstance(result.data[0].embedding, str)


def test_models_list(client):
    assert "fake-model" in [m.id for m in client.models.list()]


def test_missing_bearer_token_is_401(fake):
    request = urllib.request.Request(  # noqa: S310 - loopback only
        f"{fake.base_url}/chat/completions",
        data=json.dumps({"model": "fake-model", "messages": []}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=5)  # noqa: S310 - loopback only
    assert excinfo.value.code == 401
    assert json.loads(excinfo.value.read())["error"]["code"] == "invalid_api_key"
    assert fake.requests == []


def test_latency_and_token_delay_apply():
    with FakeOpenAI(latency_s=0.2, token_delay_s=0.02) as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0)
        fake.script({"text": "one two three four"})
        started = time.monotonic()
        list(_ask(client, stream=True))
        elapsed = time.monotonic() - started
    # 0.2 s latency + 5 gaps of 0.02 s between the 6 chunks.
    assert elapsed >= 0.28


def test_many_concurrent_clients_are_not_delayed_by_the_listen_backlog():
    from concurrent.futures import ThreadPoolExecutor

    with FakeOpenAI(latency_s=0.2) as fake:
        # A client each, so every request opens its own connection at the same time.
        clients = [
            openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0) for _ in range(30)
        ]

        def one(i):
            return _ask(clients[i], f"question {i}").choices[0].message.content

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=30) as pool:
            answers = list(pool.map(one, range(30)))
        elapsed = time.monotonic() - started

    assert answers[7] == "Fake answer about: question 7 [1]"
    # A backlog of 5 would make some connects wait for the kernel's 1 s SYN retry.
    assert elapsed < 1.2
