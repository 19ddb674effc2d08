"""Integration check of model governance against a running Tandem (real ASGI server, Celery
worker on Redis, the demo loaded).

The second model owner evaluates the demo's submitted candidate (a dataset run that the
``evaluations`` worker carries out, progress polled), approves it citing that run (its author
cannot), activates it; the customer's next turn over a real WebSocket names the new model
version; a shadow of the old pair collects a result for that turn on the worker; rollback
brings the old pair back for the turn after. Exits non-zero on the first failure.

    python .ci/integration_governance.py --url http://127.0.0.1:8000
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

CANDIDATE = "offline-concise"


class Failure(Exception):
    pass


def check(condition, message: str) -> None:
    if not condition:
        raise Failure(message)
    print(f"  ok  {message}")


def session(base: str, username: str) -> httpx.Client:
    client = httpx.Client(base_url=base, follow_redirects=False, timeout=60)
    client.get("/accounts/login/")
    response = client.post("/accounts/login/", data={
        "username": username, "password": f"tandem-{username}", "csrfmiddlewaretoken": client.cookies["csrftoken"]})
    check(response.status_code == 302, f"{username} signs in")
    return client


def api(client: httpx.Client, path: str, body: dict | None = None) -> httpx.Response:
    headers = {"X-CSRFToken": client.cookies["csrftoken"], "Referer": str(client.base_url) + "/governance/"}
    return client.post(path, json=body or {}, headers=headers)


def live_primary(client: httpx.Client) -> dict:
    live = client.get("/api/governance/deployments/").json()["live"]
    return next(d for d in live if d["role"] == "primary")


def wait_for(predicate, what: str, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    raise Failure(f"timed out waiting for {what}")


async def customer_turn(base: str, text: str) -> tuple[str, str]:
    """Ask one question in a new conversation: its id and the turn id of the assistant's reply."""
    with httpx.Client(base_url=base, timeout=30) as http:
        conversation = http.post("/api/v1/conversations/", json={}).json()
    async with connect(base.replace("http", "ws", 1) + conversation["ws_url"], origin=base) as ws:
        client_id = str(uuid.uuid4())
        await ws.send(json.dumps({"type": "message.send", "client_id": client_id, "text": text}))
        turn_id = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            event = json.loads(await asyncio.wait_for(ws.recv(), timeout=deadline - time.monotonic()))
            if event.get("type") == "message.ack" and event.get("client_id") == client_id:
                turn_id = event["message"]["turn_id"]
            if event.get("type") == "message.new" and turn_id and event["message"].get("turn_id") == turn_id \
                    and event["message"]["role"] in ("assistant", "system"):
                return conversation["id"], turn_id
    raise Failure("no reply to the customer")


def turn_model_id(compliance: httpx.Client, conversation_id: str, turn_id: str) -> str:
    """The model version of a turn, from the compliance officer's evidence bundle."""
    bundle = compliance.get(f"/office/compliance/conversations/{conversation_id}/export.json")
    check(bundle.status_code == 200, "the compliance officer exports the conversation's evidence")
    turns = [t for c in bundle.json()["conversations"] for t in c["turns"] if t["id"] == turn_id]
    return turns[0]["model_version"]["id"]


def main(base: str) -> None:
    author = session(base, "modelowner")
    owner = session(base, "modelowner2")
    compliance = session(base, "compliance")

    models = owner.get("/api/governance/model-versions/").json()["results"]
    candidate = next(m for m in models if m["name"] == CANDIDATE)
    check(candidate["status"] == "submitted", f"{candidate['label']} waits for approval")
    before = live_primary(owner)
    old_model, prompt = before["model_version"], before["prompt_version"]

    # A dataset run through the evaluations worker.
    form = owner.get(f"/governance/evaluations/new/?model={candidate['id']}&prompt={prompt['id']}")
    check(form.status_code == 200, "the evaluation form opens for the candidate")
    started = owner.post("/governance/evaluations/new/", data={
        "csrfmiddlewaretoken": owner.cookies["csrftoken"], "model_version": candidate["id"],
        "prompt_version": prompt["id"], "kind": "dataset", "intent_cases": "12"},
        headers={"Referer": base + "/governance/evaluations/new/"})
    check(started.status_code == 302, "a dataset evaluation run is started")
    run_id = re.search(r"/evaluations/([0-9a-f-]{36})/", started.headers["location"]).group(1)

    def finished():
        progress = owner.get(f"/governance/evaluations/{run_id}/progress.json").json()
        if progress["status"] == "failed":
            raise Failure(f"the evaluation run failed: {progress['error']}")
        return progress if progress["finished"] else None

    progress = wait_for(finished, "the evaluation run")
    check(progress["done"] == progress["total"] > 0 and progress["agreement"] is not None,
          f"the worker finished the run ({progress['done']} cases, agreement {progress['agreement']:.2f})")

    refused = api(author, f"/api/governance/model-versions/{candidate['id']}/approve/",
                  {"reason": "looks good", "evidence": [run_id]})
    check(refused.status_code == 403 and refused.json()["code"] == "own_version", "the author cannot approve")
    approved = api(owner, f"/api/governance/model-versions/{candidate['id']}/approve/",
                   {"reason": "Agrees on the dataset; shorter answers", "evidence": [run_id]})
    check(approved.status_code == 200 and approved.json()["status"] == "approved",
          "another model owner approves, citing the run")
    activated = api(owner, "/api/governance/deployments/activate/",
                    {"model_version": candidate["id"], "prompt_version": prompt["id"], "reason": "integration"})
    check(activated.status_code == 201, "the candidate is activated")
    shadow = api(owner, "/api/governance/deployments/shadow/",
                 {"model_version": old_model["id"], "prompt_version": prompt["id"], "reason": "compare"})
    check(shadow.status_code == 201, "the previous pair runs in shadow")

    conversation_id, turn_id = asyncio.run(customer_turn(base, "How long does standard delivery within Germany take?"))
    check(turn_model_id(compliance, conversation_id, turn_id) == candidate["id"],
          "the next customer turn used the activated version")

    def shadow_result():
        runs = owner.get(f"/api/governance/model-versions/{old_model['id']}/").json()["evaluation_runs"]
        run = next((r for r in runs if r["kind"] == "shadow"), None)
        return run if run and run["done"] >= 1 else None

    run = wait_for(shadow_result, "the shadow answer", timeout=120)
    check(run["done"] >= 1, "the worker recorded the shadow's answer to that turn")

    rolled = api(owner, "/api/governance/deployments/rollback/", {"reason": "integration check done"})
    check(rolled.status_code == 201, "rollback is one call")
    check(live_primary(owner)["model_version"]["id"] == old_model["id"], "the previous pair is live again")
    conversation_id, turn_id = asyncio.run(customer_turn(base, "Can I pay with a gift card?"))
    check(turn_model_id(compliance, conversation_id, turn_id) == old_model["id"],
          "the turn after the rollback used the previous version")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    try:
        main(parser.parse_args().url.rstrip("/"))
    except (Failure, StopIteration, KeyError, httpx.HTTPError) as exc:
        print(f"FAILED: {exc!r}")
        sys.exit(1)
    print("governance integration: all checks passed")
