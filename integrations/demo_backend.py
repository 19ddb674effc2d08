"""Brightwater Outfitters demo backend: a small, real HTTP/JSON shop API.

The demo company's "order system" that Tandem's actions call through a connector.
It is deliberately standard-library only (no Django, no third-party packages) so it
can run beside the app, inside tests, or on a laptop with ``python -m``::

    python -m integrations.demo_backend --host 127.0.0.1 --port 8765 --token secret

Endpoints (all JSON):

* ``GET  /health``                      liveness, never needs a token
* ``GET  /orders/{order_id}``           order with human-readable status and ETA wording
* ``POST /refunds``                     issue a refund (needs ``Idempotency-Key``)
* ``POST /orders/{order_id}/address``   change the delivery address (needs ``Idempotency-Key``)
* ``GET  /accounts/{email}``            Trail Club account
* ``GET  /_stats``                      read-only: effective executions per idempotency key
                                        (replays not counted), for fault tests across processes

Writes follow Stripe's idempotency semantics, because Tandem retries connector calls
and must be able to prove that a retried refund never pays out twice: the first
request with a key runs and its response is stored; the same key with the same body
replays that response (``Idempotent-Replayed: true``); the same key with a different
body is refused with 422. Requests that fail validation are not stored, so the
caller can fix them and retry with the same key, as Stripe does.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["ApiError", "DemoBackend", "main"]

CURRENCY = "EUR"
ORDER_ID_RE = re.compile(r"^BW-\d{5}$")
# Bodies are a handful of fields; a cap keeps a misbehaving client from making a
# request thread buffer arbitrary amounts of memory.
MAX_BODY_BYTES = 64 * 1024
MAX_IDEMPOTENCY_KEY_LENGTH = 255
ADDRESS_MIN_LENGTH = 10
ADDRESS_MAX_LENGTH = 300
REASON_MAX_LENGTH = 500
CENT = Decimal("0.01")

# strftime("%B") follows the process locale; customer-facing wording must not.
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July",
    "August", "September", "October", "November", "December",
)

JsonDict = dict[str, Any]


class ApiError(Exception):
    """A request that must be answered with a JSON error body instead of a result."""

    def __init__(
        self,
        status: HTTPStatus,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


@dataclass
class Item:
    """One order line."""

    sku: str
    name: str
    quantity: int
    unit_price: Decimal

    def to_json(self) -> JsonDict:
        return {
            "sku": self.sku,
            "name": self.name,
            "quantity": self.quantity,
            "unit_price": float(self.unit_price),
        }


@dataclass
class Order:
    """A shop order; dates are absolute so the wording can be computed on read."""

    order_id: str
    email: str
    status: str  # processing | shipped | delivered | cancelled
    placed_on: date
    items: list[Item]
    shipping_address: str
    ships_by: date | None = None
    eta: date | None = None
    delivered_on: date | None = None
    cancelled_on: date | None = None
    tracking_number: str | None = None
    refunded: Decimal = Decimal("0.00")

    @property
    def total(self) -> Decimal:
        return sum((i.unit_price * i.quantity for i in self.items), Decimal("0.00"))

    @property
    def refundable(self) -> Decimal:
        return self.total - self.refunded

    def status_label(self) -> str:
        return {
            "processing": "being prepared in our warehouse",
            "shipped": "on its way",
            "delivered": "delivered",
            "cancelled": "cancelled",
        }[self.status]

    def eta_sentence(self) -> str:
        # Each branch is a full sentence so the action's result template can drop it
        # straight after "Order X is <label>." without further grammar.
        if self.status == "processing" and self.ships_by and self.eta:
            return (
                f"It should leave our warehouse by {format_day(self.ships_by)} "
                f"and arrive by {format_day(self.eta)}."
            )
        if self.status == "shipped" and self.eta:
            return f"It should arrive by {format_day(self.eta)}."
        if self.status == "delivered" and self.delivered_on:
            return f"It was delivered on {format_day(self.delivered_on)}."
        if self.status == "cancelled" and self.cancelled_on:
            return (
                f"It was cancelled on {format_day(self.cancelled_on)} "
                "and will not be delivered."
            )
        return ""

    def to_json(self) -> JsonDict:
        return {
            "order_id": self.order_id,
            "email": self.email,
            "status": self.status,
            "status_label": self.status_label(),
            "eta_sentence": self.eta_sentence(),
            "placed_on": self.placed_on.isoformat(),
            "eta": self.eta.isoformat() if self.eta else None,
            "delivered_on": self.delivered_on.isoformat() if self.delivered_on else None,
            "tracking_number": self.tracking_number,
            "shipping_address": self.shipping_address,
            "items": [i.to_json() for i in self.items],
            "total": float(self.total),
            "total_display": money_display(self.total),
            "refunded_total": float(self.refunded),
            "currency": CURRENCY,
        }


@dataclass
class Account:
    """A customer account with its Trail Club loyalty state."""

    email: str
    name: str
    tier: str
    loyalty_points: int
    member_since: date


@dataclass
class _StoredResponse:
    """What an idempotency key is bound to: the request fingerprint and its result."""

    fingerprint: str
    status: HTTPStatus
    body: JsonDict


@dataclass
class _State:
    """Everything mutable, replaced wholesale by ``reset()``."""

    orders: dict[str, Order]
    accounts: dict[str, Account]
    refunds: dict[str, JsonDict] = field(default_factory=dict)
    idempotency: dict[str, _StoredResponse] = field(default_factory=dict)
    execution_counts: dict[str, int] = field(default_factory=dict)
    next_refund_number: int = 500001


def format_day(day: date) -> str:
    """``28 November`` — the year is implied for dates this close to today."""
    return f"{day.day} {_MONTHS[day.month - 1]}"


def money_display(amount: Decimal) -> str:
    return f"{amount.quantize(CENT)} {CURRENCY}"


def _seed(today: date) -> _State:
    """Fictional orders and accounts, dated relative to ``today`` so the demo never goes stale."""

    def d(offset: int) -> date:
        return today + timedelta(days=offset)

    def item(sku: str, name: str, price: str, quantity: int = 1) -> Item:
        return Item(sku=sku, name=name, quantity=quantity, unit_price=Decimal(price))

    lena, tomas = "lena.hartmann@example.com", "tomas.ribeiro@example.com"
    amira, jonas = "amira.okafor@example.com", "jonas.weber@example.com"
    orders = [
        Order("BW-10001", lena, "processing", d(0),
              [item("BW-JKT-STORM", "Brightwater Stormline 3L Rain Jacket", "189.00")],
              "Körnerstraße 21, 04107 Leipzig, Germany", ships_by=d(1), eta=d(3)),
        Order("BW-10002", tomas, "shipped", d(-3),
              [item("BW-TNT-HOLLOW2", "Brightwater Hollowfell 2 Tent", "249.00"),
               item("BW-TNT-FOOT2", "Hollowfell 2 Footprint", "39.90")],
              "Rua das Flores 48, 1200-195 Lisboa, Portugal",
              eta=d(2), tracking_number="BWX0020417736"),
        Order("BW-10003", amira, "delivered", d(-10),
              [item("BW-BSL-MERINO", "Brightwater Merino 200 Base Layer Top", "59.90", 2),
               item("BW-SLP-DOWN5", "Brightwater Glacier -5 Down Sleeping Bag", "329.00")],
              "Am Hafen 7, 20457 Hamburg, Germany",
              delivered_on=d(-6), tracking_number="BWX0020398120"),
        Order("BW-10004", jonas, "cancelled", d(-14),
              [item("BW-POL-CARBON", "Brightwater Carbon Trekking Poles (pair)", "79.95")],
              "Weberstraße 3, 53113 Bonn, Germany",
              cancelled_on=d(-12), refunded=Decimal("79.95")),
        Order("BW-10005", amira, "processing", d(-1),
              [item("BW-LMP-400", "Brightwater Lumen 400 Headlamp", "49.90"),
               item("BW-GAS-230", "Gas Canister 230 g", "5.95", 3)],
              "Am Hafen 7, 20457 Hamburg, Germany", ships_by=d(0), eta=d(2)),
        Order("BW-10006", lena, "shipped", d(-2),
              [item("BW-BOT-FELL", "Brightwater Fellwalker Hiking Boots", "164.00")],
              "Körnerstraße 21, 04107 Leipzig, Germany",
              eta=d(1), tracking_number="BWX0020421985"),
        Order("BW-10007", tomas, "delivered", d(-25),
              [item("BW-FLC-CAIRN", "Brightwater Cairn Fleece Jacket", "89.00"),
               item("BW-SCK-HIKE3", "Hiking Socks (3-pack)", "24.90")],
              "Rua das Flores 48, 1200-195 Lisboa, Portugal",
              delivered_on=d(-20), tracking_number="BWX0020310442",
              refunded=Decimal("24.90")),
        Order("BW-10008", jonas, "delivered", d(-7),
              [item("BW-BAG-TARN35", "Brightwater Tarnside 35 Backpack", "139.00")],
              "Weberstraße 3, 53113 Bonn, Germany",
              delivered_on=d(-3), tracking_number="BWX0020405561"),
    ]
    accounts = [
        Account(lena, "Lena Hartmann", "Trailblazer", 740, date(2021, 4, 12)),
        Account(tomas, "Tomás Ribeiro", "Explorer", 120, date(2024, 9, 3)),
        Account(amira, "Amira Okafor", "Summit", 2310, date(2019, 11, 28)),
        Account(jonas, "Jonas Weber", "Explorer", 45, date(2025, 2, 17)),
    ]
    return _State(
        orders={o.order_id: o for o in orders},
        accounts={a.email: a for a in accounts},
    )


def _fingerprint(method: str, path: str, body: JsonDict) -> str:
    # Canonical JSON so a client that re-serialises the same parameters in another
    # key order is still recognised as the same request.
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _Server(ThreadingHTTPServer):
    """HTTP server that carries a reference to the backend owning the state."""

    daemon_threads = True
    # socketserver's default backlog of 5 resets connections when a client fires a
    # burst of retries at once, which is exactly what the idempotency tests do.
    request_queue_size = 128
    backend: DemoBackend


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the backend and turns every outcome into JSON."""

    server: _Server
    server_version = "BrightwaterDemo/1.0"
    sys_version = ""
    # Errors raised by the base class itself (bad request line, oversized headers)
    # should also be JSON; send_error HTML-escapes the message, which keeps it valid JSON.
    error_content_type = "application/json"
    error_message_format = '{"error": "%(message)s", "code": "http_%(code)d"}'
    # Request body, read at most once per request (see _drain_body).
    _body: bytes | None = None

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        if self.server.backend.quiet:
            return
        sys.stderr.write(f"demo-backend {self.address_string()} {format % args}\n")

    def _dispatch(self, method: str) -> None:
        backend = self.server.backend
        self._body = None
        try:
            if backend.latency_s > 0:
                time.sleep(backend.latency_s)
            status, body, headers = backend.handle(
                method, self.path, dict(self.headers.items()), self._read_body
            )
        except ApiError as exc:
            status, headers = exc.status, exc.headers
            body = {"error": exc.message, "code": exc.code}
        except Exception as exc:  # noqa: BLE001 - a demo server must answer, never crash
            self.log_message("internal error: %s: %s", type(exc).__name__, exc)
            status, headers = HTTPStatus.INTERNAL_SERVER_ERROR, {}
            body = {"error": "Internal server error.", "code": "internal_error"}
        self._drain_body()
        self._send_json(status, body, headers)

    def _drain_body(self) -> None:
        # Closing a socket with unread request bytes makes Linux send a RST, and the
        # client may then lose our (error) response; so consume what was announced.
        if self._body is None:
            with contextlib.suppress(ApiError):
                self._read_body()

    def _read_body(self) -> bytes:
        if self._body is not None:
            return self._body
        self._body = b""
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            raise ApiError(
                HTTPStatus.BAD_REQUEST, "invalid_request", "Content-Length is not a number."
            ) from None
        if length < 0:
            raise ApiError(HTTPStatus.BAD_REQUEST, "invalid_request", "Content-Length is negative.")
        if length > MAX_BODY_BYTES:
            raise ApiError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "body_too_large",
                f"Request body is larger than {MAX_BODY_BYTES} bytes.",
            )
        self._body = self.rfile.read(length)
        return self._body

    def _send_json(self, status: HTTPStatus, body: JsonDict, headers: dict[str, str]) -> None:
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (e.g. its timeout fired); the result is already
            # stored under its idempotency key, so a retry will get it.
            pass


class DemoBackend:
    """The demo shop API, startable in a background thread or from the command line.

    ``port=0`` picks a free port; after ``start()`` the real one is in ``.port`` and
    ``.url``. All state lives in memory and is guarded by one lock: the service is a
    demo, so serialising writes is the simplest way to make the idempotency and
    refund-limit checks correct under concurrent retries.

    ``token`` makes every endpoint except ``/health`` require ``Authorization: Bearer``;
    ``today`` pins the seed dates for tests; ``quiet`` silences the request log.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        *,
        latency_s: float = 0.0,
        side_effect_latency_s: float = 0.0,
        quiet: bool = False,
        today: date | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.token = token or None
        # Fault injection: latency_s delays every request (timeouts, retries);
        # side_effect_latency_s delays each write while it runs, widening the window
        # in which concurrent retries could double-execute if the locking were wrong.
        self.latency_s = latency_s
        self.side_effect_latency_s = side_effect_latency_s
        self.quiet = quiet
        self._today = today
        self._lock = threading.Lock()
        self._state = _seed(self._seed_day())
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _bind(self) -> _Server:
        server = _Server((self.host, self.port), _Handler)
        server.backend = self
        self._server = server
        self.port = server.server_address[1]
        return server

    def start(self) -> DemoBackend:
        """Bind and serve in a daemon thread; returns self so tests can chain it."""
        if self._server is not None:
            raise RuntimeError("DemoBackend is already running")
        server = self._bind()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"demo-backend-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self, on_ready: Callable[[], None] | None = None) -> None:
        """Bind and serve in the calling thread until interrupted (used by the CLI).

        ``on_ready`` runs once the socket is bound, when ``.url`` holds the real port.
        """
        server = self._bind()
        if on_ready is not None:
            on_ready()
        try:
            server.serve_forever(poll_interval=0.5)
        finally:
            server.server_close()
            self._server = None

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> DemoBackend:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Restore the seed data and forget every idempotency key."""
        with self._lock:
            self._state = _seed(self._seed_day())

    def _seed_day(self) -> date:
        # UTC rather than local time: the demo only needs "roughly today", and an
        # explicit zone keeps the result independent of the host's TZ setting.
        return self._today or datetime.now(UTC).date()

    @property
    def execution_counts(self) -> dict[str, int]:
        """Snapshot of idempotency key -> times its side effect really ran."""
        with self._lock:
            return dict(self._state.execution_counts)

    # -- request handling ----------------------------------------------------------

    def handle(
        self,
        method: str,
        raw_path: str,
        headers: dict[str, str],
        read_body: Callable[[], bytes],
    ) -> tuple[HTTPStatus, JsonDict, dict[str, str]]:
        """Route one request; raises ``ApiError`` for every client-visible failure."""
        path = urlsplit(raw_path).path
        headers = {k.lower(): v for k, v in headers.items()}
        if path == "/health":
            if method != "GET":
                raise self._method_not_allowed("GET")
            return HTTPStatus.OK, {"ok": True}, {}
        self._check_auth(headers)

        segments = [unquote(s) for s in path.strip("/").split("/")]
        match segments:
            case ["orders", order_id]:
                if method != "GET":
                    raise self._method_not_allowed("GET")
                return HTTPStatus.OK, self._order_get(order_id), {}
            case ["orders", order_id, "address"]:
                if method != "POST":
                    raise self._method_not_allowed("POST")
                return self._idempotent(
                    headers, method, path, read_body,
                    lambda body: self._address_change(order_id, body),
                )
            case ["refunds"]:
                if method != "POST":
                    raise self._method_not_allowed("POST")
                return self._idempotent(headers, method, path, read_body, self._refund_create)
            case ["accounts", email]:
                if method != "GET":
                    raise self._method_not_allowed("GET")
                return HTTPStatus.OK, self._account_get(email), {}
            case ["_stats"]:
                if method != "GET":
                    raise self._method_not_allowed("GET")
                counts = self.execution_counts
                return HTTPStatus.OK, {"execution_counts": counts, "keys": len(counts),
                                       "executions": sum(counts.values())}, {}
        raise ApiError(HTTPStatus.NOT_FOUND, "not_found", f"No endpoint at {path}.")

    def _check_auth(self, headers: dict[str, str]) -> None:
        if self.token is None:
            return
        scheme, _, presented = headers.get("authorization", "").partition(" ")
        # Constant-time comparison: the token is the only thing protecting refunds.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), self.token.encode()
        ):
            raise ApiError(
                HTTPStatus.UNAUTHORIZED,
                "unauthorized",
                "A valid bearer token is required.",
                headers={"WWW-Authenticate": 'Bearer realm="brightwater-demo"'},
            )

    @staticmethod
    def _method_not_allowed(allowed: str) -> ApiError:
        return ApiError(
            HTTPStatus.METHOD_NOT_ALLOWED,
            "method_not_allowed",
            f"Only {allowed} is allowed here.",
            headers={"Allow": allowed},
        )

    @staticmethod
    def _parse_json(raw: bytes) -> JsonDict:
        if not raw.strip():
            raise ApiError(
                HTTPStatus.BAD_REQUEST, "malformed_json", "Request body is empty; send a JSON object."
            )
        try:
            body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError:
            raise ApiError(
                HTTPStatus.BAD_REQUEST, "malformed_json", "Request body is not valid UTF-8."
            ) from None
        except json.JSONDecodeError as exc:
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                "malformed_json",
                f"Request body is not valid JSON: {exc.msg} "
                f"(line {exc.lineno}, column {exc.colno}).",
            ) from None
        except ValueError as exc:
            raise ApiError(
                HTTPStatus.BAD_REQUEST, "malformed_json", f"Request body is not valid JSON: {exc}."
            ) from None
        if not isinstance(body, dict):
            raise ApiError(
                HTTPStatus.BAD_REQUEST, "malformed_json", "Request body must be a JSON object."
            )
        return body

    def _idempotent(
        self,
        headers: dict[str, str],
        method: str,
        path: str,
        read_body: Callable[[], bytes],
        execute: Callable[[JsonDict], tuple[HTTPStatus, JsonDict]],
    ) -> tuple[HTTPStatus, JsonDict, dict[str, str]]:
        """Run ``execute`` at most once per idempotency key, replaying its result after."""
        key = headers.get("idempotency-key", "").strip()
        if not key:
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                "idempotency_key_required",
                "This endpoint needs an Idempotency-Key header.",
            )
        if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                "invalid_request",
                f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY_LENGTH} characters.",
            )
        body = self._parse_json(read_body())
        fingerprint = _fingerprint(method, path, body)
        # Lookup, execution and storing the result share one critical section, so
        # concurrent retries with the same key wait and then replay instead of racing.
        with self._lock:
            stored = self._state.idempotency.get(key)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    raise ApiError(
                        HTTPStatus.UNPROCESSABLE_ENTITY,
                        "idempotency_mismatch",
                        "This Idempotency-Key was already used with a different request.",
                    )
                return stored.status, stored.body, {"Idempotent-Replayed": "true"}
            status, result = execute(body)
            if self.side_effect_latency_s > 0:
                time.sleep(self.side_effect_latency_s)
            self._state.idempotency[key] = _StoredResponse(fingerprint, status, result)
            counts = self._state.execution_counts
            counts[key] = counts.get(key, 0) + 1
        return status, result, {}

    # -- endpoints (the write handlers run with self._lock held) -------------------

    def _find_order(self, order_id: str) -> Order:
        order = self._state.orders.get(order_id)
        if order is None:
            raise ApiError(HTTPStatus.NOT_FOUND, "not_found", f"Order {order_id} does not exist.")
        return order

    def _order_get(self, order_id: str) -> JsonDict:
        with self._lock:
            return self._find_order(order_id).to_json()

    def _account_get(self, email: str) -> JsonDict:
        email = email.strip().lower()
        with self._lock:
            account = self._state.accounts.get(email)
            if account is None:
                raise ApiError(HTTPStatus.NOT_FOUND, "not_found", "No account with that email address.")
            order_ids = sorted(o.order_id for o in self._state.orders.values() if o.email == email)
        # Trail Club rule from the help centre: every 100 points buys a 5 EUR voucher.
        voucher_value = Decimal(account.loyalty_points // 100 * 5)
        return {
            "email": account.email,
            "name": account.name,
            "tier": account.tier,
            "loyalty_points": account.loyalty_points,
            "voucher_value": float(voucher_value),
            "voucher_value_display": money_display(voucher_value),
            "member_since": account.member_since.isoformat(),
            "order_ids": order_ids,
        }

    def _refund_create(self, body: JsonDict) -> tuple[HTTPStatus, JsonDict]:
        order_id = body.get("order_id")
        if not isinstance(order_id, str) or not ORDER_ID_RE.match(order_id):
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                "invalid_request",
                "order_id must be an order number like BW-12345.",
            )
        amount = _parse_amount(body.get("amount"))
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise ApiError(HTTPStatus.BAD_REQUEST, "invalid_request", "reason must be a non-empty string.")
        if len(reason) > REASON_MAX_LENGTH:
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                "invalid_request",
                f"reason must be at most {REASON_MAX_LENGTH} characters.",
            )
        order = self._find_order(order_id)
        if amount > order.refundable:
            raise ApiError(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                "amount_exceeds_total",
                f"At most {money_display(order.refundable)} can still be refunded "
                f"on order {order_id}.",
            )
        order.refunded += amount
        refund_id = f"RF-{self._state.next_refund_number}"
        self._state.next_refund_number += 1
        refund = {
            "refund_id": refund_id,
            "order_id": order_id,
            "amount": float(amount),
            "amount_display": money_display(amount),
            "currency": CURRENCY,
            "reason": reason.strip(),
            "status": "issued",
        }
        self._state.refunds[refund_id] = refund
        return HTTPStatus.CREATED, dict(refund)

    def _address_change(self, order_id: str, body: JsonDict) -> tuple[HTTPStatus, JsonDict]:
        address = body.get("address")
        if not isinstance(address, str):
            raise ApiError(HTTPStatus.BAD_REQUEST, "invalid_request", "address must be a string.")
        address = " ".join(address.split())
        if not ADDRESS_MIN_LENGTH <= len(address) <= ADDRESS_MAX_LENGTH:
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                "invalid_request",
                f"address must be {ADDRESS_MIN_LENGTH} to {ADDRESS_MAX_LENGTH} characters long.",
            )
        order = self._find_order(order_id)
        if order.status in ("shipped", "delivered"):
            raise ApiError(
                HTTPStatus.CONFLICT,
                "already_shipped",
                f"Order {order_id} has already shipped, so its address can no longer be changed.",
            )
        if order.status == "cancelled":
            raise ApiError(
                HTTPStatus.CONFLICT, "order_cancelled", f"Order {order_id} has been cancelled."
            )
        previous = order.shipping_address
        order.shipping_address = address
        return HTTPStatus.OK, {
            "order_id": order_id,
            "address": address,
            "previous_address": previous,  # lets the change be undone (Tandem's compensation)
            "order_status": order.status,
            "status": "updated",
        }


def _parse_amount(value: object) -> Decimal:
    # bool is an int subclass; "amount": true must not refund 1 EUR.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(HTTPStatus.BAD_REQUEST, "invalid_request", "amount must be a number.")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ApiError(HTTPStatus.BAD_REQUEST, "invalid_request", "amount must be a number.") from None
    if not amount.is_finite() or amount <= 0:
        raise ApiError(HTTPStatus.BAD_REQUEST, "invalid_request", "amount must be greater than 0.")
    if amount != amount.quantize(CENT):
        raise ApiError(
            HTTPStatus.BAD_REQUEST, "invalid_request", "amount must have at most two decimal places."
        )
    return amount.quantize(CENT)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: serve until Ctrl+C."""
    parser = argparse.ArgumentParser(description="Brightwater Outfitters demo backend.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN'")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to sleep per request")
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    args = parser.parse_args(argv)

    backend = DemoBackend(
        host=args.host, port=args.port, token=args.token,
        latency_s=args.latency, quiet=args.quiet,
    )
    auth = "bearer token required" if backend.token else "no auth"
    with contextlib.suppress(KeyboardInterrupt):
        backend.serve_forever(
            on_ready=lambda: sys.stderr.write(f"demo-backend listening on {backend.url} ({auth})\n")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
