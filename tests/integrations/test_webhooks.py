"""Webhooks over real HTTP: inbound results from a backend (signature, timestamp, replay, settling
the run and telling the customer) and outbound Tandem events (signed, retried, redelivered)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from convo.models import Message
from governance.models import AuditEvent
from integrations.models import (
    ActionRun,
    Connector,
    DeliveryStatus,
    InboundWebhookConfig,
    RunStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookReceipt,
)
from integrations.services import action_run_approve
from integrations.webhooks import webhook_deliveries_sweep, webhook_event_emit, webhook_signature

pytestmark = pytest.mark.django_db

SECRET = "whsec-test-0123456789"
CONNECTOR = "brightwater-backend"
REFUND_REQUEST = ("I want my money back for order BW-10003, 40 euros", "The zip broke after a week")


# --- fixtures ----------------------------------------------------------------------------------------

@pytest.fixture
def inbound(demo, monkeypatch):
    monkeypatch.setenv("TEST_INBOUND_WEBHOOK_SECRET", SECRET)
    return InboundWebhookConfig.objects.create(connector=Connector.objects.get(name=CONNECTOR),
                                               secret_env="TEST_INBOUND_WEBHOOK_SECRET")


@pytest.fixture
def approved_refund(say, customer_conversation, users):
    """A refund the assistant proposed and an agent approved; its execution (queued after commit)
    never ran, as when the backend accepted it and will post the result later."""
    say(REFUND_REQUEST[0])
    turn = say(REFUND_REQUEST[1])
    run = action_run_approve(run_id=turn.action_run_id, actor=users["agent"])
    assert run.status == RunStatus.APPROVED
    return run


class Receiver:
    """A tiny HTTP receiver on a free loopback port: answers the queued status codes in turn
    (then 200) and records what it got."""

    def __init__(self):
        self.statuses: list[int] = []
        self.requests: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def endpoint(db, receiver, monkeypatch):
    monkeypatch.setenv("TEST_OUTBOUND_WEBHOOK_SECRET", SECRET)
    return WebhookEndpoint.objects.create(name="crm", url=receiver.url, secret_env="TEST_OUTBOUND_WEBHOOK_SECRET",
                                          events=["action.succeeded", "action.failed", "conversation.escalated"],
                                          timeout_s=2)


def signed_post(client, body: bytes, *, connector: str = CONNECTOR, secret: str = SECRET, timestamp=None,
                signature=None):
    timestamp = str(int(time.time())) if timestamp is None else str(timestamp)
    signature = signature or webhook_signature(secret=secret, timestamp=timestamp, body=body)
    return client.post(reverse("integrations_inbound_webhook", args=[connector]), data=body,
                       content_type="application/json", HTTP_X_TANDEM_TIMESTAMP=timestamp,
                       HTTP_X_TANDEM_SIGNATURE=signature)


def result_body(run: ActionRun, *, event_id: str = "evt-1", status: str = "succeeded", **extra) -> bytes:
    payload = {"event_id": event_id, "idempotency_key": run.idempotency_key, "status": status,
               "result": {"refund_id": "RF-HOOK-1", "amount_display": "40.00 EUR"}, **extra}
    return json.dumps(payload).encode()


def state(run: ActionRun) -> tuple:
    run.refresh_from_db()
    return (run.status, run.result, run.events.count(), WebhookReceipt.objects.count(),
            Message.objects.filter(conversation_id=run.subject_id).count())


def refusals() -> list[dict]:
    return list(AuditEvent.objects.filter(action="integrations.webhook_refused").values_list("data", flat=True))


# --- inbound -----------------------------------------------------------------------------------------

def test_inbound_result_settles_the_run_and_tells_the_customer(client, inbound, approved_refund,
                                                                django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_post(client, result_body(approved_refund))
    assert response.status_code == 200, response.content
    assert response.json() == {"settled": True, "run": str(approved_refund.pk)}
    approved_refund.refresh_from_db()
    assert approved_refund.status == RunStatus.SUCCEEDED
    assert approved_refund.result["refund_id"] == "RF-HOOK-1"
    told = Message.objects.get(conversation_id=approved_refund.subject_id, data__kind="action_done")
    assert told.text == "Refund RF-HOOK-1 of 40.00 EUR for order BW-10003 has been issued."
    receipt = WebhookReceipt.objects.get()
    assert (receipt.event_id, receipt.run_id, receipt.outcome) == ("evt-1", approved_refund.pk, "settled")
    assert AuditEvent.objects.filter(action="integrations.webhook_received", target_id=str(approved_refund.pk)).exists()


def test_inbound_failure_settles_the_run_as_failed(client, inbound, approved_refund,
                                                   django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_post(client, result_body(approved_refund, status="failed", error="card expired"))
    assert response.status_code == 200
    approved_refund.refresh_from_db()
    assert (approved_refund.status, approved_refund.error) == (RunStatus.FAILED, "card expired")
    assert Message.objects.filter(conversation_id=approved_refund.subject_id, data__kind="action_failed").exists()


def test_replayed_event_is_a_duplicate_and_changes_nothing(client, inbound, approved_refund,
                                                           django_capture_on_commit_callbacks):
    body = result_body(approved_refund)
    with django_capture_on_commit_callbacks(execute=True):
        signed_post(client, body)
    before, audit = state(approved_refund), AuditEvent.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_post(client, body)
        # Even with another outcome under the same event id.
        other = signed_post(client, result_body(approved_refund, status="failed"))
    assert response.status_code == other.status_code == 200
    assert response.json() == other.json() == {"duplicate": True}
    assert state(approved_refund) == before
    assert AuditEvent.objects.count() == audit


def test_a_run_already_settled_is_left_alone(client, inbound, approved_refund, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        signed_post(client, result_body(approved_refund, event_id="evt-1"))
    before = state(approved_refund)
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_post(client, result_body(approved_refund, event_id="evt-2", status="failed"))
    assert response.status_code == 200
    assert response.json() == {"ignored": "already settled", "run": str(approved_refund.pk)}
    status, result, events, receipts, messages = state(approved_refund)
    assert (status, result, events, messages) == before[:3] + before[4:]
    assert receipts == before[3] + 1  # the event is remembered, so its replay is a duplicate


@pytest.mark.parametrize(("case", "status", "reason"), [
    ("bad signature", 401, "bad signature"),
    ("wrong secret", 401, "bad signature"),
    ("no signature", 401, "bad signature"),
    ("stale timestamp", 401, "stale timestamp"),
    ("future timestamp", 401, "stale timestamp"),
    ("no timestamp", 400, "missing or invalid X-Tandem-Timestamp"),
    ("malformed JSON", 400, "malformed JSON"),
    ("not an object", 400, "the body must be a JSON object"),
    ("bad status", 400, 'status must be "succeeded" or "failed"'),
    ("no event id", 400, "event_id must be a non-empty string of at most 200 characters"),
    ("unknown connector", 404, "unknown connector"),
    ("connector without webhook", 404, "unknown connector"),
    ("unknown key", 404, "unknown idempotency key"),
])
def test_refusals_change_nothing_and_are_audited(client, inbound, approved_refund, case, status, reason,
                                                 django_capture_on_commit_callbacks):
    body = result_body(approved_refund)
    now = int(time.time())
    kwargs: dict = {}
    if case == "bad signature":
        kwargs["signature"] = "sha256=" + "0" * 64
    elif case == "wrong secret":
        kwargs["secret"] = "not-the-secret"
    elif case == "no signature":
        kwargs["signature"] = "-"
    elif case == "stale timestamp":
        kwargs["timestamp"] = now - 301
    elif case == "future timestamp":
        kwargs["timestamp"] = now + 301
    elif case == "no timestamp":
        kwargs["timestamp"] = "yesterday"
    elif case == "malformed JSON":
        body = b'{"event_id": "evt-1", '
    elif case == "not an object":
        body = b'["evt-1"]'
    elif case == "bad status":
        body = result_body(approved_refund, status="done")
    elif case == "no event id":
        body = result_body(approved_refund, event_id="")
    elif case == "unknown connector":
        kwargs["connector"] = "nobody"
    elif case == "connector without webhook":
        kwargs["connector"] = Connector.objects.create(name="other-backend", base_url="http://127.0.0.1:1").name
    elif case == "unknown key":
        body = json.dumps({"event_id": "evt-1", "idempotency_key": "no-such-key", "status": "succeeded"}).encode()
    before, audit = state(approved_refund), AuditEvent.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_post(client, body, **kwargs)
    assert response.status_code == status
    assert response.json() == {"error": reason}
    assert state(approved_refund) == before
    assert AuditEvent.objects.count() == audit + 1
    [refusal] = refusals()
    assert refusal["reason"] == reason
    assert "RF-HOOK-1" not in json.dumps(refusal)  # never the body


def test_a_key_of_another_connectors_action_is_unknown(client, inbound, approved_refund):
    other = Connector.objects.create(name="other-backend", base_url="http://127.0.0.1:1")
    InboundWebhookConfig.objects.create(connector=other, secret_env="TEST_INBOUND_WEBHOOK_SECRET")
    response = signed_post(client, result_body(approved_refund), connector=other.name)
    assert (response.status_code, response.json()) == (404, {"error": "unknown idempotency key"})
    approved_refund.refresh_from_db()
    assert approved_refund.status == RunStatus.APPROVED


def test_a_run_awaiting_approval_cannot_be_settled_by_webhook(client, inbound, say, customer_conversation):
    say(REFUND_REQUEST[0])
    run = ActionRun.objects.get(pk=say(REFUND_REQUEST[1]).action_run_id)
    response = signed_post(client, result_body(run))
    assert (response.status_code, response.json()) == (409, {"error": "the run is awaiting_approval, not approved"})
    run.refresh_from_db()
    assert run.status == RunStatus.AWAITING_APPROVAL


def test_inbound_needs_post_and_no_csrf(client, inbound, approved_refund):
    assert client.get(reverse("integrations_inbound_webhook", args=[CONNECTOR])).status_code == 405
    csrf_client = client.__class__(enforce_csrf_checks=True)
    assert signed_post(csrf_client, result_body(approved_refund)).status_code == 200


# --- outbound ----------------------------------------------------------------------------------------

def backoff_passes(delivery: WebhookDelivery) -> None:
    """Time passes: the delivery's next attempt (and the sweep's grace) is behind us."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now() - timedelta(minutes=1))


def _emit(django_capture_on_commit_callbacks, event="action.succeeded", payload=None):
    with django_capture_on_commit_callbacks(execute=True):
        with transaction.atomic():
            deliveries = webhook_event_emit(event=event, payload=payload or {"run_id": "r-1"})
    return deliveries


def test_settling_a_run_delivers_a_signed_webhook(client, inbound, approved_refund, endpoint, receiver,
                                                  django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        signed_post(client, result_body(approved_refund))
    [(headers, body)] = receiver.requests
    expected = hmac.new(SECRET.encode(), headers["x-tandem-timestamp"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-tandem-signature"], f"sha256={expected}")
    assert abs(int(headers["x-tandem-timestamp"]) - time.time()) < 60
    delivery = WebhookDelivery.objects.get()
    assert headers["x-tandem-event"] == "action.succeeded"
    assert headers["x-tandem-delivery"] == str(delivery.pk)
    envelope = json.loads(body)
    assert envelope["id"] == str(delivery.pk) and envelope["event"] == "action.succeeded"
    assert envelope["data"]["run_id"] == str(approved_refund.pk)
    assert envelope["data"]["result"]["refund_id"] == "RF-HOOK-1"
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (DeliveryStatus.DELIVERED, 1, 200)
    assert delivery.delivered_at is not None


def test_only_active_subscribed_endpoints_get_the_event(endpoint, receiver, django_capture_on_commit_callbacks):
    WebhookEndpoint.objects.create(name="off", url=receiver.url, secret_env="TEST_OUTBOUND_WEBHOOK_SECRET",
                                   events=["action.succeeded"], active=False)
    WebhookEndpoint.objects.create(name="other", url=receiver.url, secret_env="TEST_OUTBOUND_WEBHOOK_SECRET",
                                   events=["review.resolved"])
    [delivery] = _emit(django_capture_on_commit_callbacks)
    assert delivery.endpoint == endpoint
    assert len(receiver.requests) == 1


def test_a_500_is_retried_with_backoff_then_delivered(endpoint, receiver, django_capture_on_commit_callbacks):
    receiver.statuses = [500]
    [delivery] = _emit(django_capture_on_commit_callbacks)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (DeliveryStatus.PENDING, 1, 500)
    assert delivery.next_attempt_at > timezone.now() + timedelta(seconds=20)
    # Not due yet: the sweep leaves it.
    with django_capture_on_commit_callbacks(execute=True):
        assert webhook_deliveries_sweep() == 0
    backoff_passes(delivery)
    with django_capture_on_commit_callbacks(execute=True):
        assert webhook_deliveries_sweep() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (DeliveryStatus.DELIVERED, 2, 200)
    assert len(receiver.requests) == 2
    # Same body, same delivery id on the retry: the receiver can deduplicate.
    assert receiver.requests[0][1] == receiver.requests[1][1]
    assert receiver.requests[0][0]["x-tandem-delivery"] == receiver.requests[1][0]["x-tandem-delivery"]


@pytest.mark.parametrize(("status", "outcome"), [(400, DeliveryStatus.FAILED), (404, DeliveryStatus.FAILED),
                                                 (410, DeliveryStatus.FAILED), (429, DeliveryStatus.PENDING),
                                                 (503, DeliveryStatus.PENDING)])
def test_a_4xx_fails_at_once_except_429(endpoint, receiver, status, outcome, django_capture_on_commit_callbacks):
    receiver.statuses = [status]
    [delivery] = _emit(django_capture_on_commit_callbacks)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (outcome, 1, status)
    assert delivery.last_error == f"HTTP {status}"


def test_a_network_error_is_retried_until_the_last_attempt(endpoint, settings, django_capture_on_commit_callbacks):
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint.url = f"http://127.0.0.1:{port}/hooks"
    endpoint.save()
    [delivery] = _emit(django_capture_on_commit_callbacks)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 1)
    assert delivery.last_error.startswith("ConnectError")
    backoff_passes(delivery)
    with django_capture_on_commit_callbacks(execute=True):
        assert webhook_deliveries_sweep() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == (DeliveryStatus.FAILED, 2, None)


def test_an_endpoint_without_secret_is_never_sent_unsigned(endpoint, receiver, monkeypatch,
                                                           django_capture_on_commit_callbacks):
    monkeypatch.delenv("TEST_OUTBOUND_WEBHOOK_SECRET")
    [delivery] = _emit(django_capture_on_commit_callbacks)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED
    assert receiver.requests == []


def test_emit_rolls_back_with_the_transaction(endpoint, receiver, django_capture_on_commit_callbacks):
    class Boom(Exception):
        pass

    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(Boom), transaction.atomic():
            webhook_event_emit(event="action.succeeded", payload={"run_id": "r-1"})
            raise Boom
    assert WebhookDelivery.objects.count() == 0
    assert receiver.requests == []


def test_admin_redeliver_asks_then_resets_and_sends_again(admin_client, endpoint, receiver,
                                                          django_capture_on_commit_callbacks):
    receiver.statuses = [410]
    [delivery] = _emit(django_capture_on_commit_callbacks)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED
    url = reverse("admin:integrations_webhookdelivery_changelist")
    data = {"action": "redeliver", "_selected_action": [str(delivery.pk)]}
    confirm = admin_client.post(url, data)
    assert confirm.status_code == 200
    assert "Yes, redeliver" in confirm.content.decode()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED  # nothing changed before the confirmation
    with django_capture_on_commit_callbacks(execute=True):
        done = admin_client.post(url, {**data, "post": "yes", "reason": "receiver fixed"})
    assert done.status_code == 302
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (DeliveryStatus.DELIVERED, 1, 200)
    assert len(receiver.requests) == 2
    event = AuditEvent.objects.get(action="webhook_delivery.redelivered")
    assert event.data["reason"] == "receiver fixed"


def test_admin_pages_render_without_secrets(admin_client, endpoint, inbound, django_capture_on_commit_callbacks):
    _emit(django_capture_on_commit_callbacks)
    for name in ("webhookendpoint", "webhookdelivery", "inboundwebhookconfig"):
        assert admin_client.get(reverse(f"admin:integrations_{name}_changelist")).status_code == 200
    page = admin_client.get(reverse("admin:integrations_webhookendpoint_change", args=[endpoint.pk]))
    assert page.status_code == 200
    assert SECRET not in page.content.decode()


def test_admin_stores_the_endpoint_secret_encrypted_and_write_only(admin_client, receiver):
    url = reverse("admin:integrations_webhookendpoint_add")
    response = admin_client.post(url, {"name": "erp", "url": receiver.url, "events": '["action.failed"]',
                                       "active": "on", "timeout_s": "3", "secret_env": "", "secret": SECRET})
    assert response.status_code == 302, response.content.decode()[:2000]
    endpoint = WebhookEndpoint.objects.get(name="erp")
    assert endpoint.secret_encrypted and SECRET not in endpoint.secret_encrypted
    assert AuditEvent.objects.filter(action="webhook.secret_set", target_id=str(endpoint.pk)).exists()
    page = admin_client.get(reverse("admin:integrations_webhookendpoint_change", args=[endpoint.pk]))
    assert SECRET not in page.content.decode()
    assert "A secret is stored" in page.content.decode()
    refused = admin_client.post(url, {"name": "bad", "url": receiver.url, "events": '["nope"]', "active": "on",
                                      "timeout_s": "3", "secret": SECRET})
    assert refused.status_code == 200 and not WebhookEndpoint.objects.filter(name="bad").exists()


def test_inbound_secret_stored_encrypted(client, inbound, approved_refund, users,
                                         django_capture_on_commit_callbacks):
    from integrations.webhooks import webhook_secret_update

    inbound.secret_env = ""
    inbound.save()
    webhook_secret_update(actor=users["admin"] if "admin" in users else None, obj=inbound, secret="stored-secret")
    inbound.refresh_from_db()
    assert inbound.secret_encrypted and "stored-secret" not in inbound.secret_encrypted
    assert signed_post(client, result_body(approved_refund)).status_code == 401  # the env secret no longer counts
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_post(client, result_body(approved_refund), secret="stored-secret")
    assert response.status_code == 200
