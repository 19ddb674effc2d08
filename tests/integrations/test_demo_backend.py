"""The demo backend over real HTTP: lookups, auth, errors and idempotent writes.

No Django: the backend is standard-library only, and these tests talk to it through
a socket the way the connector does, so they catch wire-level mistakes (headers,
status codes, JSON bodies) that calling the handler functions directly would miss.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from integrations.demo_backend import DemoBackend

TOKEN = "test-token"
TODAY = date(2025, 11, 24)


class Reply:
    """Status, headers and decoded JSON body of one HTTP exchange."""

    def __init__(self, status: int, headers: dict[str, str], body: Any) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def call(
    backend: DemoBackend,
    method: str,
    path: str,
    *,
    json_body: Any = None,
    raw_body: bytes | None = None,
    key: str | None = None,
    token: str | None = TOKEN,
) -> Reply:
    """One real HTTP request; HTTP errors are returned, not raised."""
    data = raw_body if raw_body is not None else (
        json.dumps(json_body).encode() if json_body is not None else None
    )
    request = urllib.request.Request(backend.url + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("Idempotency-Key", key)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Reply(response.status, dict(response.headers), json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        with exc:
            return Reply(exc.code, dict(exc.headers), json.loads(exc.read()))


@pytest.fixture
def backend() -> Iterator[DemoBackend]:
    server = DemoBackend(port=0, token=TOKEN, quiet=True, today=TODAY).start()
    try:
        yield server
    finally:
        server.stop()


def test_start_binds_a_free_port_and_reports_health(backend: DemoBackend) -> None:
    assert backend.port != 0
    assert backend.url == f"http://127.0.0.1:{backend.port}"
    reply = call(backend, "GET", "/health", token=None)
    assert (reply.status, reply.body) == (200, {"ok": True})


def test_order_lookup_returns_human_wording(backend: DemoBackend) -> None:
    reply = call(backend, "GET", "/orders/BW-10002")

    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    order = reply.body
    assert order["order_id"] == "BW-10002"
    assert order["status"] == "shipped"
    assert order["status_label"] == "on its way"
    assert order["eta_sentence"] == "It should arrive by 26 November."
    assert order["currency"] == "EUR"
    assert order["total"] == pytest.approx(288.90)
    assert {item["sku"] for item in order["items"]} == {"BW-TNT-HOLLOW2", "BW-TNT-FOOT2"}


def test_every_seed_order_fills_the_order_status_template(backend: DemoBackend) -> None:
    template = "Order {order_id} is {status_label}. {eta_sentence}"
    statuses = set()
    for number in range(10001, 10009):
        reply = call(backend, "GET", f"/orders/BW-{number}")
        assert reply.status == 200
        statuses.add(reply.body["status"])
        sentence = template.format(**reply.body)
        assert sentence.endswith(".")
        assert "None" not in sentence
    assert statuses == {"processing", "shipped", "delivered", "cancelled"}


def test_delivered_order_says_when(backend: DemoBackend) -> None:
    reply = call(backend, "GET", "/orders/BW-10003")
    assert reply.body["eta_sentence"] == "It was delivered on 18 November."


def test_unknown_order_is_a_json_404(backend: DemoBackend) -> None:
    reply = call(backend, "GET", "/orders/BW-99999")
    assert reply.status == 404
    assert reply.body["code"] == "not_found"
    assert reply.body["error"]


def test_unknown_path_is_a_json_404(backend: DemoBackend) -> None:
    reply = call(backend, "GET", "/nothing/here")
    assert (reply.status, reply.body["code"]) == (404, "not_found")


def test_wrong_method_is_405(backend: DemoBackend) -> None:
    reply = call(backend, "DELETE", "/orders/BW-10001")
    assert (reply.status, reply.body["code"]) == (405, "method_not_allowed")
    assert reply.headers["Allow"] == "GET"


def test_account_lookup_by_url_quoted_email(backend: DemoBackend) -> None:
    reply = call(backend, "GET", "/accounts/amira.okafor%40example.com")

    assert reply.status == 200
    account = reply.body
    assert account["name"] == "Amira Okafor"
    assert account["tier"] == "Summit"
    assert account["loyalty_points"] == 2310
    assert account["voucher_value_display"] == "115.00 EUR"
    assert account["order_ids"] == ["BW-10003", "BW-10005"]


def test_unknown_account_is_404(backend: DemoBackend) -> None:
    reply = call(backend, "GET", "/accounts/nobody@example.com")
    assert (reply.status, reply.body["code"]) == (404, "not_found")


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_missing_or_wrong_token_is_401(backend: DemoBackend, token: str | None) -> None:
    reply = call(backend, "GET", "/orders/BW-10001", token=token)
    assert (reply.status, reply.body["code"]) == (401, "unauthorized")
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


def test_write_with_wrong_token_executes_nothing(backend: DemoBackend) -> None:
    reply = call(
        backend, "POST", "/refunds", key="k-unauth", token="wrong-token",
        json_body={"order_id": "BW-10003", "amount": 10, "reason": "test"},
    )
    assert reply.status == 401
    assert backend.execution_counts == {}


def test_backend_without_token_accepts_anonymous_requests() -> None:
    with DemoBackend(port=0, quiet=True) as open_backend:
        assert call(open_backend, "GET", "/orders/BW-10001", token=None).status == 200


def test_malformed_json_is_400_with_a_reason(backend: DemoBackend) -> None:
    reply = call(backend, "POST", "/refunds", key="k-bad-json", raw_body=b'{"order_id": "BW-10003",')
    assert reply.status == 400
    assert reply.body["code"] == "malformed_json"
    assert "not valid JSON" in reply.body["error"]
    assert backend.execution_counts == {}


def test_json_that_is_not_an_object_is_400(backend: DemoBackend) -> None:
    reply = call(backend, "POST", "/refunds", key="k-list", json_body=[1, 2])
    assert (reply.status, reply.body["code"]) == (400, "malformed_json")


def test_write_without_idempotency_key_is_400(backend: DemoBackend) -> None:
    reply = call(
        backend, "POST", "/refunds",
        json_body={"order_id": "BW-10003", "amount": 10, "reason": "test"},
    )
    assert (reply.status, reply.body["code"]) == (400, "idempotency_key_required")


REFUND = {"order_id": "BW-10003", "amount": 25.5, "reason": "Sleeping bag zip is broken"}


def test_refund_is_issued_once_and_replayed(backend: DemoBackend) -> None:
    first = call(backend, "POST", "/refunds", key="k-refund-1", json_body=REFUND)
    second = call(backend, "POST", "/refunds", key="k-refund-1", json_body=REFUND)

    assert first.status == 201
    assert first.body["refund_id"].startswith("RF-")
    assert first.body["status"] == "issued"
    assert first.body["amount"] == 25.5
    assert first.body["currency"] == "EUR"
    assert "Idempotent-Replayed" not in first.headers
    assert second.status == 201
    assert second.body == first.body
    assert second.headers["Idempotent-Replayed"] == "true"
    assert backend.execution_counts == {"k-refund-1": 1}
    order = call(backend, "GET", "/orders/BW-10003").body
    assert order["refunded_total"] == 25.5


def test_replay_ignores_json_key_order(backend: DemoBackend) -> None:
    call(backend, "POST", "/refunds", key="k-order", json_body=REFUND)
    reordered = dict(reversed(list(REFUND.items())))
    reply = call(backend, "POST", "/refunds", key="k-order", json_body=reordered)
    assert reply.headers.get("Idempotent-Replayed") == "true"
    assert backend.execution_counts["k-order"] == 1


def test_same_key_with_different_body_is_422(backend: DemoBackend) -> None:
    call(backend, "POST", "/refunds", key="k-refund-2", json_body=REFUND)
    reply = call(backend, "POST", "/refunds", key="k-refund-2", json_body={**REFUND, "amount": 30})

    assert (reply.status, reply.body["code"]) == (422, "idempotency_mismatch")
    assert backend.execution_counts == {"k-refund-2": 1}


def test_concurrent_identical_refunds_execute_once() -> None:
    # The side-effect delay keeps the first refund "in flight" while the other 19
    # arrive, so a missing or misplaced lock would show up as extra executions.
    with DemoBackend(
        port=0, token=TOKEN, quiet=True, latency_s=0.02, side_effect_latency_s=0.2
    ) as backend:
        start = threading.Barrier(20)
        replies: list[Reply] = []
        replies_lock = threading.Lock()

        def send() -> None:
            start.wait()
            reply = call(backend, "POST", "/refunds", key="k-storm", json_body=REFUND)
            with replies_lock:
                replies.append(reply)

        threads = [threading.Thread(target=send) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        assert len(replies) == 20
        assert {r.status for r in replies} == {201}
        assert len({r.body["refund_id"] for r in replies}) == 1
        assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in replies) == 19
        assert backend.execution_counts == {"k-storm": 1}
        assert call(backend, "GET", "/orders/BW-10003").body["refunded_total"] == 25.5


def test_refund_above_remaining_total_is_422(backend: DemoBackend) -> None:
    # BW-10007 totals 113.90 EUR and 24.90 EUR of it was refunded already.
    over = call(
        backend, "POST", "/refunds", key="k-over",
        json_body={"order_id": "BW-10007", "amount": 89.01, "reason": "Fleece too small"},
    )
    exact = call(
        backend, "POST", "/refunds", key="k-exact",
        json_body={"order_id": "BW-10007", "amount": 89.00, "reason": "Fleece too small"},
    )

    assert (over.status, over.body["code"]) == (422, "amount_exceeds_total")
    assert exact.status == 201
    assert backend.execution_counts == {"k-exact": 1}


def test_refund_for_unknown_order_is_404(backend: DemoBackend) -> None:
    reply = call(
        backend, "POST", "/refunds", key="k-404",
        json_body={"order_id": "BW-99999", "amount": 5, "reason": "test"},
    )
    assert (reply.status, reply.body["code"]) == (404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"order_id": "BW-10003", "amount": 0, "reason": "zero"},
        {"order_id": "BW-10003", "amount": -5, "reason": "negative"},
        {"order_id": "BW-10003", "amount": True, "reason": "bool"},
        {"order_id": "BW-10003", "amount": "10", "reason": "string"},
        {"order_id": "BW-10003", "amount": 1.005, "reason": "sub-cent"},
        {"order_id": "BW-10003", "amount": 10},
        {"order_id": "10003", "amount": 10, "reason": "bad id"},
    ],
)
def test_invalid_refund_bodies_are_400_and_not_stored(
    backend: DemoBackend, body: dict[str, Any]
) -> None:
    reply = call(backend, "POST", "/refunds", key="k-invalid", json_body=body)
    assert (reply.status, reply.body["code"]) == (400, "invalid_request")
    # Not stored, so the caller may fix the body and retry with the same key.
    fixed = call(backend, "POST", "/refunds", key="k-invalid", json_body=REFUND)
    assert fixed.status == 201
    assert "Idempotent-Replayed" not in fixed.headers


def test_address_change_on_processing_order(backend: DemoBackend) -> None:
    new_address = "Lindenstraße 12, 04109 Leipzig, Germany"
    first = call(
        backend, "POST", "/orders/BW-10001/address", key="k-addr",
        json_body={"address": new_address},
    )
    replay = call(
        backend, "POST", "/orders/BW-10001/address", key="k-addr",
        json_body={"address": new_address},
    )

    assert first.status == 200
    assert first.body["address"] == new_address
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert backend.execution_counts == {"k-addr": 1}
    order = call(backend, "GET", "/orders/BW-10001").body
    assert order["shipping_address"] == new_address


def test_address_change_on_shipped_order_is_409(backend: DemoBackend) -> None:
    reply = call(
        backend, "POST", "/orders/BW-10002/address", key="k-shipped",
        json_body={"address": "Rua Augusta 100, 1100-053 Lisboa, Portugal"},
    )
    assert (reply.status, reply.body["code"]) == (409, "already_shipped")
    assert backend.execution_counts == {}


def test_address_too_short_is_400(backend: DemoBackend) -> None:
    reply = call(
        backend, "POST", "/orders/BW-10001/address", key="k-short", json_body={"address": "Berlin"}
    )
    assert (reply.status, reply.body["code"]) == (400, "invalid_request")


def test_key_reused_on_another_endpoint_is_a_mismatch(backend: DemoBackend) -> None:
    call(backend, "POST", "/refunds", key="k-shared", json_body=REFUND)
    reply = call(
        backend, "POST", "/orders/BW-10001/address", key="k-shared",
        json_body={"address": "Lindenstraße 12, 04109 Leipzig, Germany"},
    )
    assert (reply.status, reply.body["code"]) == (422, "idempotency_mismatch")


def test_reset_restores_seed_data(backend: DemoBackend) -> None:
    call(backend, "POST", "/refunds", key="k-reset", json_body=REFUND)
    backend.reset()
    assert backend.execution_counts == {}
    assert call(backend, "GET", "/orders/BW-10003").body["refunded_total"] == 0


def test_stop_releases_the_port() -> None:
    backend = DemoBackend(port=0, quiet=True).start()
    url = backend.url
    backend.stop()
    backend.stop()  # idempotent
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/health", timeout=2)


def test_module_does_not_import_django() -> None:
    # The backend must run where Django is not configured (CI sidecar, a laptop demo).
    repo_root = Path(__file__).resolve().parents[2]
    code = "import sys, integrations.demo_backend; sys.exit('django' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr.decode()
