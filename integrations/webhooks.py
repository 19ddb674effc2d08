"""Webhooks: asynchronous results from backends (inbound) and Tandem events to subscribers (outbound).

Both directions sign the same way: ``X-Tandem-Timestamp: <unix seconds>`` and
``X-Tandem-Signature: sha256=<hex HMAC-SHA256 with the secret as key of "<timestamp>.<body bytes>">``.

Inbound (``webhook_inbound_handle``, view ``integrations/webhook_views.py``): a backend posts
``{"event_id", "idempotency_key", "status": "succeeded"|"failed", "result", "error"}`` to
``/api/v1/integrations/webhooks/<connector name>/``. The timestamp must be within the
connector's ``InboundWebhookConfig.tolerance_s``, the signature must match (constant-time), the
key must name a run of an action of that connector. An event id is accepted once
(``WebhookReceipt``, unique per connector): a replay answers ``{"duplicate": true}``. An approved
or executing run is settled through ``services._settle`` (so convo tells the customer); a run
already terminal is left alone. Every refusal is audited (``integrations.webhook_refused``, the
reason, never the body) and changes nothing else.

Order matters for crashes: the run is settled first, the receipt written after. A crash in between
leaves a settled run without receipt; the backend's retry then finds the run terminal ("already
settled") and records the receipt, so nothing happens twice.

Outbound (``webhook_event_emit``): called inside the transaction of the act, it writes one
``WebhookDelivery`` per active endpoint subscribed to the event and queues its delivery through
the outbox (task ``integrations.deliver_webhook``), so it is sent iff the act commits. Each
attempt (``webhook_delivery_attempt``) claims the row, POSTs outside any transaction, and records
the outcome: 2xx delivered; network errors, 429 and 5xx retried with exponential backoff up to
``WEBHOOK_MAX_ATTEMPTS``; any other answer fails it at once. Delivery is at least once: receivers
deduplicate by ``X-Tandem-Delivery``. ``webhook_deliveries_sweep`` (beat) re-queues due retries
and attempts whose worker died; the admin's "Redeliver" resets and re-queues.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from config.outbox import outbox_enqueue
from governance.services import audit_event_record
from integrations.connectors import SIGNATURE_HEADER, TIMESTAMP_HEADER, secret_decrypt, secret_encrypt
from integrations.models import (
    TERMINAL_STATUSES,
    ActionRun,
    Connector,
    DeliveryStatus,
    InboundWebhookConfig,
    RunStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookReceipt,
)

logger = logging.getLogger(__name__)

DELIVER_WEBHOOK = "integrations.deliver_webhook"
EVENT_HEADER = "X-Tandem-Event"
DELIVERY_HEADER = "X-Tandem-Delivery"
USER_AGENT = "Tandem-Webhooks/1"
MAX_EVENT_ID = 200
SWEEP_GRACE = timedelta(seconds=30)


def _max_attempts() -> int:
    return int(getattr(settings, "WEBHOOK_MAX_ATTEMPTS", 8))


def _backoff(attempts: int) -> timedelta:
    """Wait after failed attempt number ``attempts``: 30 s doubled per attempt, at most 6 h."""
    base = float(getattr(settings, "WEBHOOK_BACKOFF_S", 30.0))
    return timedelta(seconds=min(base * (2 ** max(0, attempts - 1)), 6 * 3600))


def webhook_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of ``"<timestamp>.<body>"`` keyed with ``secret``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _secret_of(obj: InboundWebhookConfig | WebhookEndpoint) -> str:
    if obj.secret_env:
        return os.environ.get(obj.secret_env, "")
    if obj.secret_encrypted:
        return secret_decrypt(obj.secret_encrypted, connector_name=str(obj))
    return ""


def webhook_secret_update(*, actor, obj: InboundWebhookConfig | WebhookEndpoint, secret: str = "",
                          clear: bool = False) -> None:
    """Store (``secret``) or remove (``clear``) the encrypted secret of an inbound config or an
    endpoint; audited without the value. Runs in the caller's transaction when there is one."""
    if not secret and not clear:
        return
    with transaction.atomic():
        locked = type(obj).objects.select_for_update().get(pk=obj.pk)
        had = bool(locked.secret_encrypted)
        locked.secret_encrypted = secret_encrypt(secret) if secret else ""
        locked.save(update_fields=["secret_encrypted", "updated_at"])
        audit_event_record(actor=actor, action="webhook.secret_set" if secret else "webhook.secret_cleared",
                           target=locked, data={"object": str(locked), "replaced": had and bool(secret)})
    obj.secret_encrypted = locked.secret_encrypted


# --- inbound ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InboundResult:
    status: int
    body: dict


def _refuse(status: int, reason: str, *, connector_name: str, connector: Connector | None = None,
            data: dict | None = None) -> InboundResult:
    with transaction.atomic():
        audit_event_record(actor="webhook", action="integrations.webhook_refused", target=connector,
                           target_type="" if connector else "integrations.connector",
                           data={"connector": connector_name[:100], "reason": reason, **(data or {})})
    return InboundResult(status, {"error": reason})


def _payload_problem(payload) -> str:
    if not isinstance(payload, dict):
        return "the body must be a JSON object"
    event_id, key = payload.get("event_id"), payload.get("idempotency_key")
    if not isinstance(event_id, str) or not event_id.strip() or len(event_id) > MAX_EVENT_ID:
        return f"event_id must be a non-empty string of at most {MAX_EVENT_ID} characters"
    if not isinstance(key, str) or not key:
        return "idempotency_key must be a non-empty string"
    if payload.get("status") not in ("succeeded", "failed"):
        return 'status must be "succeeded" or "failed"'
    if not isinstance(payload.get("result", {}), dict):
        return "result must be a JSON object"
    if not isinstance(payload.get("error", ""), str):
        return "error must be a string"
    return ""


def webhook_inbound_handle(*, connector_name: str, headers, body: bytes, now: float | None = None) -> InboundResult:
    """Check and apply one inbound webhook (see the module docstring). ``headers``: a
    case-insensitive mapping (``request.headers``). Returns the HTTP status and JSON body."""
    from integrations.services import _settle  # services emits webhooks: imported late, no cycle

    now = time.time() if now is None else now
    connector = Connector.objects.filter(name=connector_name).first()
    config = InboundWebhookConfig.objects.filter(connector=connector, active=True).first() if connector else None
    if config is None:
        return _refuse(404, "unknown connector", connector_name=connector_name, connector=connector)
    secret = _secret_of(config)
    if not secret:
        return _refuse(403, "no webhook secret is configured for this connector", connector_name=connector_name,
                       connector=connector)
    timestamp = (headers.get(TIMESTAMP_HEADER) or "").strip()
    try:
        sent_at = int(timestamp)
    except ValueError:
        return _refuse(400, f"missing or invalid {TIMESTAMP_HEADER}", connector_name=connector_name,
                       connector=connector)
    if abs(now - sent_at) > config.tolerance_s:
        return _refuse(401, "stale timestamp", connector_name=connector_name, connector=connector,
                       data={"skew_s": int(now - sent_at)})
    expected = webhook_signature(secret=secret, timestamp=timestamp, body=body)
    if not hmac.compare_digest(expected.encode(), (headers.get(SIGNATURE_HEADER) or "").strip().encode()):
        return _refuse(401, "bad signature", connector_name=connector_name, connector=connector)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _refuse(400, "malformed JSON", connector_name=connector_name, connector=connector)
    problem = _payload_problem(payload)
    if problem:
        return _refuse(400, problem, connector_name=connector_name, connector=connector)
    event_id, key = payload["event_id"], payload["idempotency_key"]
    if WebhookReceipt.objects.filter(connector=connector, event_id=event_id).exists():
        return InboundResult(200, {"duplicate": True})
    run = ActionRun.objects.filter(idempotency_key=key, action__connector=connector).only("pk", "status").first()
    if run is None:
        return _refuse(404, "unknown idempotency key", connector_name=connector_name, connector=connector,
                       data={"event_id": event_id})
    if run.status in TERMINAL_STATUSES:
        outcome = "already settled"
    elif run.status not in (RunStatus.APPROVED, RunStatus.EXECUTING):
        return _refuse(409, f"the run is {run.status}, not approved", connector_name=connector_name,
                       connector=connector, data={"event_id": event_id, "run": str(run.pk)})
    else:
        ok = payload["status"] == "succeeded"
        error = "" if ok else (payload.get("error") or "The backend reported a failure.")[:2000]
        # Settled before the receipt is written: see the module docstring on crashes.
        _settle(run.pk, ok=ok, result=payload.get("result") or {}, http_status=None, error=error)
        outcome = "settled"
    try:
        with transaction.atomic():
            WebhookReceipt.objects.create(connector=connector, event_id=event_id, run_id=run.pk, outcome=outcome)
            audit_event_record(actor="webhook", action="integrations.webhook_received", target=run,
                               data={"connector": connector.name, "event_id": event_id,
                                     "status": payload["status"], "outcome": outcome})
    except IntegrityError:  # the same event, concurrently: the other request recorded it
        return InboundResult(200, {"duplicate": True})
    if outcome == "already settled":
        return InboundResult(200, {"ignored": "already settled", "run": str(run.pk)})
    return InboundResult(200, {"settled": True, "run": str(run.pk)})


# --- outbound --------------------------------------------------------------------------------------

def webhook_event_emit(*, event: str, payload: dict) -> list[WebhookDelivery]:
    """In the transaction of the act: one delivery per active endpoint subscribed to ``event``,
    each queued through the outbox (sent iff the transaction commits)."""
    if not connection.in_atomic_block:
        raise RuntimeError("webhook_event_emit must run inside the transaction of the act")
    clean = json.loads(json.dumps(payload, cls=DjangoJSONEncoder))
    now = timezone.now()
    deliveries = []
    for endpoint in WebhookEndpoint.objects.filter(active=True, events__contains=[event]).order_by("pk"):
        delivery = WebhookDelivery.objects.create(endpoint=endpoint, event=event, payload=clean, next_attempt_at=now)
        outbox_enqueue(DELIVER_WEBHOOK, [str(delivery.pk)])
        deliveries.append(delivery)
    return deliveries


def action_run_webhook_emit(*, run: ActionRun) -> None:
    """``action.succeeded`` / ``action.failed`` for a run settling in the caller's transaction."""
    if run.status not in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        return
    webhook_event_emit(event=f"action.{run.status}", payload={
        "run_id": str(run.pk), "action": run.action.name, "status": run.status,
        "idempotency_key": run.idempotency_key, "subject_type": run.subject_type, "subject_id": run.subject_id,
        "params": run.params, "result": run.result, "error": run.error, "http_status": run.http_status,
        "finished_at": run.finished_at,
    })


def webhook_delivery_body(delivery: WebhookDelivery) -> bytes:
    """The bytes sent (the same for every attempt): an envelope around the event's payload."""
    envelope = {"id": str(delivery.pk), "event": delivery.event, "created_at": delivery.created_at.isoformat(),
                "data": delivery.payload}
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder).encode()


def _retryable(status: int | None) -> bool:
    return status is None or status == 429 or status >= 500


def webhook_delivery_attempt(*, delivery_id, now: datetime | None = None) -> WebhookDelivery | None:
    """One attempt at a due pending delivery; returns it as left (None: no such delivery).

    The row is claimed (attempt counted, ``next_attempt_at`` pushed past the request's timeout)
    and committed before the POST, so a concurrent or repeated task finds it not due and leaves
    it; a worker killed mid-POST leaves it due again once the claim lapses."""
    now = now or timezone.now()
    with transaction.atomic(durable=True):
        delivery = (WebhookDelivery.objects.select_for_update(of=("self",)).select_related("endpoint")
                    .filter(pk=delivery_id).first())
        if delivery is None or delivery.status != DeliveryStatus.PENDING:
            return delivery
        if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
            return delivery  # backing off, or another worker holds it
        endpoint = delivery.endpoint
        delivery.attempts += 1
        delivery.next_attempt_at = now + timedelta(seconds=endpoint.timeout_s + 60)
        delivery.save(update_fields=["attempts", "next_attempt_at", "updated_at"])
    attempt = delivery.attempts
    status_code: int | None = None
    error = ""
    try:
        secret = _secret_of(endpoint)
    except Exception as exc:  # noqa: BLE001 - an undecryptable secret fails the delivery, with the reason
        secret, error = "", str(exc)
    if not endpoint.active:
        error = "The endpoint is switched off."
    elif not secret:
        error = error or "The endpoint has no secret: deliveries are never sent unsigned."
    else:
        body = webhook_delivery_body(delivery)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json", "User-Agent": USER_AGENT, TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: webhook_signature(secret=secret, timestamp=timestamp, body=body),
            EVENT_HEADER: delivery.event, DELIVERY_HEADER: str(delivery.pk),
        }
        try:
            response = httpx.post(endpoint.url, content=body, headers=headers, timeout=endpoint.timeout_s,
                                  follow_redirects=False)
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:2000]
    return _delivery_record(delivery.pk, attempt=attempt, status_code=status_code, error=error,
                            retryable=bool(secret) and endpoint.active and _retryable(status_code))


def _delivery_record(delivery_id, *, attempt: int, status_code: int | None, error: str,
                     retryable: bool) -> WebhookDelivery:
    now = timezone.now()
    with transaction.atomic(durable=True):
        delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
        if delivery.status != DeliveryStatus.PENDING or delivery.attempts != attempt:
            return delivery  # redelivered (reset) meanwhile: the newer attempt owns the row
        delivery.last_status_code, delivery.last_error = status_code, error
        if not error:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = DeliveryStatus.DELIVERED, now, None
        elif retryable and delivery.attempts < _max_attempts():
            delivery.next_attempt_at = now + _backoff(delivery.attempts)
        else:
            delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
            logger.warning("webhook delivery %s to %s failed after %s attempt(s): %s", delivery.pk,
                           delivery.endpoint_id, delivery.attempts, error)
        delivery.save(update_fields=["status", "last_status_code", "last_error", "next_attempt_at", "delivered_at",
                                     "updated_at"])
    return delivery


def webhook_deliveries_sweep(*, now: datetime | None = None, batch_size: int = 500) -> int:
    """Queue (through the outbox) pending deliveries whose next attempt has come: retries after
    backoff, and attempts whose worker died. Returns how many were queued."""
    now = now or timezone.now()
    # The grace leaves alone a delivery whose own queued message is about to run (just emitted).
    due = now - SWEEP_GRACE
    with transaction.atomic():
        ids = list(WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=due)
                   .order_by("next_attempt_at").values_list("pk", flat=True)[:batch_size])
        for delivery_id in ids:
            outbox_enqueue(DELIVER_WEBHOOK, [str(delivery_id)])
    return len(ids)


def webhook_delivery_redeliver(*, actor, delivery_ids, reason: str) -> int:
    """Admin "Redeliver": reset the deliveries (pending, no attempts, due now) and queue them.
    Audited per delivery with the reason. Returns how many were reset."""
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("Say why the deliveries are sent again.")
    now = timezone.now()
    with transaction.atomic():
        deliveries = list(WebhookDelivery.objects.select_for_update().filter(pk__in=list(delivery_ids))
                          .order_by("pk"))
        for delivery in deliveries:
            previous = delivery.status
            delivery.status, delivery.attempts = DeliveryStatus.PENDING, 0
            delivery.next_attempt_at, delivery.delivered_at = now, None
            delivery.save(update_fields=["status", "attempts", "next_attempt_at", "delivered_at", "updated_at"])
            audit_event_record(actor=actor, action="webhook_delivery.redelivered", target=delivery,
                               data={"event": delivery.event, "endpoint": str(delivery.endpoint_id),
                                     "from": previous, "reason": reason})
            outbox_enqueue(DELIVER_WEBHOOK, [str(delivery.pk)])
    return len(deliveries)
