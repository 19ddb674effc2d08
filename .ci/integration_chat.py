"""Integration check against a running Tandem (real ASGI server, Celery worker, Redis).

A customer chats over a real WebSocket: a knowledge question, an order lookup, a refund that
needs approval, then a request for a person. An agent signs in over HTTP, takes over, and
replies over their own WebSocket; the customer sees the reply. The agent approves the
refund and the customer is told it was issued. Exits non-zero on the first failure.

    python .ci/integration_chat.py --url http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
import uuid

import httpx
from websockets.asyncio.client import connect


class Failure(Exception):
    pass


def check(condition, message: str) -> None:
    if not condition:
        raise Failure(message)
    print(f"  ok  {message}")


async def next_event(ws, predicate, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Failure("timed out waiting for an event")
        event = json.loads(await asyncio.wait_for(ws.recv(), timeout=remaining))
        if event.get("type") == "error":
            raise Failure(f"server error event: {event}")
        if predicate(event):
            return event


def final_reply(event) -> bool:
    return event.get("type") == "message.new" and event["message"]["role"] in ("assistant", "system") \
        and event["message"].get("turn_id")


async def ask(ws, text: str) -> dict:
    client_id = str(uuid.uuid4())
    await ws.send(json.dumps({"type": "message.send", "client_id": client_id, "text": text}))
    ack = await next_event(ws, lambda e: e.get("type") == "message.ack" and e.get("client_id") == client_id)
    turn_id = ack["message"]["turn_id"]
    event = await next_event(ws, lambda e: final_reply(e) and e["message"]["turn_id"] == turn_id)
    return event["message"]


def agent_session(base: str, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base, follow_redirects=False, timeout=30)
    client.get("/accounts/login/")
    response = client.post("/accounts/login/", data={
        "username": username, "password": password, "csrfmiddlewaretoken": client.cookies["csrftoken"]})
    check(response.status_code == 302, f"{username} signs in")
    return client


def post_form(client: httpx.Client, path: str, data: dict | None = None) -> httpx.Response:
    client.get("/office/")
    payload = {"csrfmiddlewaretoken": client.cookies["csrftoken"], **(data or {})}
    return client.post(path, data=payload, headers={"Referer": str(client.base_url) + "/office/"})


async def main(base: str) -> None:
    ws_base = base.replace("http", "ws", 1)
    origin = base
    with httpx.Client(base_url=base, timeout=30) as http:
        created = http.post("/api/v1/conversations/", json={})
        check(created.status_code == 201, "a conversation is created over the REST API")
        conversation = created.json()
    conversation_id = conversation["id"]

    async with connect(ws_base + conversation["ws_url"], origin=origin) as customer:
        answer = await ask(customer, "How long does standard delivery within Germany take?")
        check("working days" in answer["text"] and answer["sources"], "a knowledge question is answered with sources")

        status = await ask(customer, "Where is my order BW-10002?")
        check("BW-10002" in status["text"], "an order lookup runs through the demo backend")

        await ask(customer, "I'd like a refund for order BW-10003, 40 euros")
        pending = await ask(customer, "The zip broke after a week")
        check("approval" in pending["text"].lower(), "the refund waits for human approval")

        handoff = await ask(customer, "I want to talk to a person")
        check("person" in handoff["text"].lower(), "asking for a person escalates")

        agent = agent_session(base, "agent", "tandem-agent")
        inbox = agent.get("/office/")
        check(inbox.status_code == 200 and conversation_id in inbox.text, "the escalation is in the agent's inbox")
        taken = post_form(agent, f"/office/conversations/{conversation_id}/takeover/")
        check(taken.status_code == 302, "the agent takes over")
        await next_event(customer, lambda e: e.get("type") == "conversation.status" and e["status"] == "human")
        print("  ok  the customer sees that a person joined")

        cookie = "; ".join(f"{k}={v}" for k, v in agent.cookies.items())
        async with connect(f"{ws_base}/ws/chat/{conversation_id}/", origin=origin,
                           additional_headers={"Cookie": cookie}) as agent_ws:
            await agent_ws.send(json.dumps({"type": "message.send", "client_id": str(uuid.uuid4()),
                                            "text": "Hi, I'm Alex. I'm looking at your refund now."}))
            await next_event(agent_ws, lambda e: e.get("type") == "message.ack")
        reply = await next_event(customer, lambda e: e.get("type") == "message.new" and e["message"]["role"] == "agent")
        check("Alex" in reply["message"]["text"], "the customer receives the agent's live reply")

        page = agent.get(f"/office/conversations/{conversation_id}/")
        runs = re.findall(r"/office/actions/([0-9a-f-]{36})/decide/", page.text)
        check(bool(runs), "the workspace shows the refund awaiting approval")
        decided = post_form(agent, f"/office/actions/{runs[0]}/decide/", {"decision": "approve"})
        check(decided.status_code == 302, "the agent approves the refund")
        done = await next_event(customer, lambda e: e.get("type") == "message.new"
                                and e["message"].get("kind") == "action_done", timeout=90)
        check("RF-" in done["message"]["text"] or "refund" in done["message"]["text"].lower(),
              "the customer is told the refund was issued (via the Celery worker)")

        handed = post_form(agent, f"/office/conversations/{conversation_id}/hand-back/")
        check(handed.status_code == 302, "the agent hands back to the assistant")
        back = await ask(customer, "How do I wash my waterproof jacket?")
        check(back["role"] == "assistant" and back["sources"], "the assistant answers again after hand-back")

    check(await refused(f"{ws_base}/ws/chat/{conversation_id}/?token=forged", origin), "a forged token is refused")
    check(await refused(ws_base + conversation["ws_url"], "http://evil.example"),
          "a WebSocket from a foreign origin is refused")


async def refused(url: str, origin: str) -> bool:
    """True when the server rejects the handshake or closes the socket without a word."""
    try:
        async with connect(url, origin=origin) as ws:
            await asyncio.wait_for(ws.recv(), timeout=5)
    except TimeoutError:
        return False
    except Exception:
        return True
    return False


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.url.rstrip("/")))
    except Failure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
    print("integration chat: all checks passed")
