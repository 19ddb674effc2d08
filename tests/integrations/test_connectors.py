"""The HTTP connector over real HTTP on 127.0.0.1: each auth kind, extra headers, timeouts, TLS,
bad answers, call records and health, stored secrets, the connection test and the admin."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from governance.models import AuditEvent
from integrations import connectors
from integrations.connectors import connector_call, connector_probe, hmac_signature, secret_decrypt
from integrations.exceptions import ConnectorError
from integrations.models import ActionDefinition, ActionRun, AuthKind, Connector, ConnectorCall, RunStatus
from integrations.services import action_run_execute, action_run_propose, connector_calls_prune, connector_secret_update

pytestmark = pytest.mark.django_db

FIELD_KEY = "mYhqEtwzOTzUSOyiAtPvmcsxKRJqBXlqyp1m7d_gbrA="  # a Fernet key for tests only


class LocalBackend:
    """A tiny HTTP server in a thread: ``respond(request) -> (status, headers, body bytes)``;
    ``requests`` keeps what arrived (method, path, headers, body). Stopped by object."""

    def __init__(self, tls_context: ssl.SSLContext | None = None):
        self.requests: list[dict] = []
        self.respond = lambda request: (200, {"Content-Type": "application/json"}, b'{"ok": true}')
        self.release = threading.Event()  # set at stop: frees handlers told to hang
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                request = {"method": self.command, "path": self.path, "headers": dict(self.headers.items()),
                           "body": self.rfile.read(length) if length else b""}
                backend.requests.append(request)
                status, headers, body = backend.respond(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if tls_context is not None:
            self.server.socket = tls_context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> LocalBackend:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def hang(self, request):
        self.release.wait(10)
        return 200, {}, b"{}"


def json_answer(status: int, body, headers: dict | None = None):
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


@pytest.fixture
def backend():
    server = LocalBackend().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_tokens():
    connectors.oauth_tokens_forget()
    yield
    connectors.oauth_tokens_forget()


@pytest.fixture
def field_key(monkeypatch):
    monkeypatch.setenv("TANDEM_FIELD_KEY", FIELD_KEY)


def make_connector(backend, **fields) -> Connector:
    defaults = {"name": "shop", "base_url": backend.url, "timeout_s": 2.0}
    return Connector.objects.create(**{**defaults, **fields})


def call(connector, path="/orders/{order_id}", params=None, method="POST", **kwargs):
    return connector_call(connector=connector, method=method, path_template=path,
                          params={"order_id": "BW-10001", "note": "hi"} if params is None else params,
                          idempotency_key="key-1", **kwargs)


# --- authentication -------------------------------------------------------------------------

def test_bearer_from_the_environment_with_extra_headers(backend, monkeypatch):
    monkeypatch.setenv("SHOP_TOKEN", "t0ken")
    connector = make_connector(backend, auth=AuthKind.BEARER, secret_env="SHOP_TOKEN",
                               extra_headers={"X-Tenant": "brightwater"})
    status, payload = call(connector)
    assert (status, payload) == (200, {"ok": True})
    sent = backend.requests[0]
    assert sent["path"] == "/orders/BW-10001"
    assert sent["headers"]["Authorization"] == "Bearer t0ken"
    assert sent["headers"]["X-Tenant"] == "brightwater"
    assert sent["headers"]["Idempotency-Key"] == "key-1"
    assert json.loads(sent["body"]) == {"note": "hi"}


def test_basic_with_a_stored_secret(backend, field_key, users):
    connector = make_connector(backend, auth=AuthKind.BASIC, username="tandem")
    connector_secret_update(actor=users["admin"], connector_id=connector.pk, secret="pa:ss wörd")
    connector.refresh_from_db()
    assert "pa:ss" not in connector.secret_encrypted and connector.secret_encrypted
    call(connector)
    header = backend.requests[0]["headers"]["Authorization"]
    assert header == "Basic " + base64.b64encode("tandem:pa:ss wörd".encode()).decode()
    event = AuditEvent.objects.get(action="connector.secret_set")
    assert "pa:ss" not in json.dumps(event.data)


def test_hmac_signature_can_be_verified_by_the_backend(backend, monkeypatch):
    monkeypatch.setenv("SHOP_KEY", "k3y")
    connector = make_connector(backend, auth=AuthKind.HMAC, secret_env="SHOP_KEY")
    call(connector, params={"order_id": "BW 1/2", "amount": 5})
    sent = backend.requests[0]
    timestamp = sent["headers"]["X-Tandem-Timestamp"]
    assert abs(int(timestamp) - datetime.now(tz=UTC).timestamp()) < 60
    # The backend's side: HMAC-SHA256 of "timestamp.METHOD.path-as-received.body".
    expected = "sha256=" + hmac.new(b"k3y", f"{timestamp}.POST.{sent['path']}.".encode() + sent["body"],
                                    hashlib.sha256).hexdigest()
    assert sent["path"] == "/orders/BW%201%2F2"
    assert sent["headers"]["X-Tandem-Signature"] == expected
    assert expected == hmac_signature(secret="k3y", timestamp=timestamp, method="post", path=sent["path"],
                                      body=sent["body"])
    assert "Authorization" not in sent["headers"]


class OAuthBackend:
    """Token endpoint plus an API that accepts only the latest token."""

    def __init__(self, backend, *, expires_in=3600, reject_all=False):
        self.issued: list[str] = []
        self.token_requests: list[dict] = []
        self.expires_in, self.reject_all = expires_in, reject_all
        self.revoked: set[str] = set()
        backend.respond = self

    def __call__(self, request):
        if request["path"] == "/oauth/token":
            self.token_requests.append(request)
            token = f"tok-{len(self.issued) + 1}"
            self.issued.append(token)
            return json_answer(200, {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in})
        presented = request["headers"].get("Authorization", "").removeprefix("Bearer ")
        if self.reject_all or presented in self.revoked or presented not in self.issued:
            return json_answer(401, {"error": "invalid_token"})
        return json_answer(200, {"token": presented})


def oauth_connector(backend, monkeypatch, **fields):
    monkeypatch.setenv("SHOP_CLIENT_SECRET", "s3cret")
    return make_connector(backend, auth=AuthKind.OAUTH2, secret_env="SHOP_CLIENT_SECRET",
                          oauth_token_url=backend.url + "/oauth/token", oauth_client_id="tandem",
                          oauth_scope="orders:write", **fields)


def test_oauth2_token_is_fetched_once_and_cached(backend, monkeypatch):
    api = OAuthBackend(backend)
    connector = oauth_connector(backend, monkeypatch)
    assert call(connector)[1] == {"token": "tok-1"}
    assert call(connector)[1] == {"token": "tok-1"}
    assert len(api.token_requests) == 1
    token_request = api.token_requests[0]
    assert parse_qs(token_request["body"].decode()) == {"grant_type": ["client_credentials"],
                                                        "scope": ["orders:write"]}
    assert token_request["headers"]["Authorization"] == "Basic " + base64.b64encode(b"tandem:s3cret").decode()


def test_oauth2_token_is_renewed_shortly_before_it_expires(backend, monkeypatch):
    api = OAuthBackend(backend, expires_in=120)
    connector = oauth_connector(backend, monkeypatch)
    now = [1000.0]
    monkeypatch.setattr(connectors, "_clock", lambda: now[0])
    call(connector)
    now[0] += 89  # 120 s token, renewed 30 s early
    call(connector)
    assert len(api.token_requests) == 1
    now[0] += 2
    assert call(connector)[1] == {"token": "tok-2"}
    assert len(api.token_requests) == 2


def test_oauth2_refreshes_once_on_401(backend, monkeypatch):
    api = OAuthBackend(backend)
    connector = oauth_connector(backend, monkeypatch)
    call(connector)
    api.revoked.add("tok-1")  # e.g. revoked on the provider's side
    assert call(connector)[1] == {"token": "tok-2"}
    api.reject_all = True
    with pytest.raises(ConnectorError) as exc:
        call(connector)
    assert len(api.token_requests) == 3  # one refresh for that call, not a loop
    assert exc.value.status == 401 and not exc.value.retryable
    assert "shop refused the credentials (HTTP 401): invalid_token" in str(exc.value)


def test_oauth2_wrong_client_secret_is_a_clear_error(backend, monkeypatch):
    backend.respond = lambda request: json_answer(401, {"error": "invalid_client"})
    connector = oauth_connector(backend, monkeypatch)
    with pytest.raises(ConnectorError, match="token endpoint refused the client credentials"):
        call(connector)


def test_wrong_bearer_token_against_a_real_demo_backend(db, monkeypatch):
    from integrations.demo_backend import DemoBackend

    demo = DemoBackend(host="127.0.0.1", port=0, quiet=True, token="right").start()
    try:
        monkeypatch.setenv("SHOP_TOKEN", "wrong")
        connector = Connector.objects.create(name="demo", base_url=demo.url, auth=AuthKind.BEARER,
                                             secret_env="SHOP_TOKEN")
        with pytest.raises(ConnectorError) as exc:
            call(connector, path="/orders/{order_id}/address", params={"order_id": "BW-10001",
                                                                     "address": "Somewhere 1, 10115 Berlin"})
        assert str(exc.value) == ("demo refused the credentials (HTTP 401): A valid bearer token is required.; "
                                  "check the connector's authentication and secret")
        assert not exc.value.retryable
        assert demo.execution_counts == {}  # no side effect
        monkeypatch.setenv("SHOP_TOKEN", "right")
        assert call(connector, path="/orders/{order_id}", params={"order_id": "BW-10001"}, method="GET")[0] == 200
    finally:
        demo.stop()


def test_a_missing_secret_sends_no_credentials_and_the_401_says_so(backend):
    backend.respond = lambda request: json_answer(401, {"error": "unauthorized"})
    connector = make_connector(backend, auth=AuthKind.BEARER, secret_env="SHOP_TOKEN_UNSET")
    with pytest.raises(ConnectorError) as exc:
        call(connector)
    assert str(exc.value) == ("shop refused the credentials (HTTP 401): unauthorized; no secret was sent: "
                              "the environment variable SHOP_TOKEN_UNSET is empty")
    assert "Authorization" not in backend.requests[0]["headers"]
    assert ConnectorCall.objects.get().error_class == "Unauthorized"


# --- extra headers --------------------------------------------------------------------------

@pytest.mark.parametrize(("headers", "message"), [
    ({"Authorization": "Bearer x"}, "Authorization is set by the connector's authentication"),
    ({"x-tandem-signature": "sha256=0"}, "x-tandem-signature is set by"),
    ({"X-Count": 3}, "The value of X-Count must be a string."),
    ({"Bad Header": "x"}, "'Bad Header' is not a valid header name."),
    ({"X-Split": "a\r\nInjected: yes"}, "must be on one line"),
    (["X-Tenant"], "must be a JSON object"),
])
def test_extra_headers_are_validated(backend, headers, message):
    connector = Connector(name="bad", base_url=backend.url, extra_headers=headers)
    with pytest.raises(ValidationError) as exc:
        connector.full_clean()
    assert message in str(exc.value)


# --- timeouts, TLS, bad answers, call records -----------------------------------------------------

def test_hanging_backend_times_out_with_the_action_override(backend):
    backend.respond = backend.hang
    connector = make_connector(backend, timeout_s=5)
    with pytest.raises(ConnectorError) as exc:
        call(connector, timeout=0.3)
    assert str(exc.value) == "shop did not answer in 0.3s" and exc.value.retryable
    record = ConnectorCall.objects.get()
    assert (record.error_class, record.status_code, record.path_template) == ("ReadTimeout", None, "/orders/{order_id}")
    assert 250 <= record.latency_ms < 3000


@pytest.mark.parametrize(("answer", "message", "retryable", "error_class"), [
    ((500, {"Content-Type": "text/html"}, b"<h1>oops</h1>"), "shop failed with HTTP 500", True, "HTTP 5xx"),
    ((200, {"Content-Type": "text/plain"}, b"OK"), "shop returned a response that is not a JSON object", False,
     "InvalidResponse"),
    ((200, {"Content-Type": "application/json"}, b"[1, 2]"), "not a JSON object", False, "InvalidResponse"),
    ((404, {"Content-Type": "application/json"}, b'{"error": "No such order."}'), "No such order.", False, ""),
])
def test_bad_answers_are_clear_errors_and_recorded(backend, answer, message, retryable, error_class):
    backend.respond = lambda request: answer
    connector = make_connector(backend)
    with pytest.raises(ConnectorError, match=message) as exc:
        call(connector)
    assert exc.value.retryable is retryable
    record = ConnectorCall.objects.get()
    assert (record.status_code, record.error_class) == (answer[0], error_class)
    assert "BW-10001" not in record.path_template  # never the filled path


def test_a_failing_backend_fails_the_run_with_an_audit_event(backend):
    backend.respond = lambda request: (500, {}, b"")
    connector = make_connector(backend)
    action = ActionDefinition.objects.create(
        name="ping", title="Ping", description="d", connector=connector, path="/ping",
        parameters_schema={"type": "object"}, approval_rule={"rule": "never"})
    run = action_run_propose(action=action, params={}, idempotency_key="t:1")
    run = action_run_execute(run_id=run.pk, final_attempt=True)
    assert (run.status, run.error, run.http_status) == (RunStatus.FAILED, "shop failed with HTTP 500", 500)
    assert AuditEvent.objects.filter(action="action_run.failed", target_id=str(run.pk)).exists()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (no CA trusts it)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(tz=UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


def test_tls_verification(tls_files):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    server = LocalBackend(tls_context=context).start()
    try:
        connector = make_connector(server)
        with pytest.raises(ConnectorError, match="the TLS certificate could not be verified"):
            call(connector)
        connector.verify_tls = False
        assert call(connector) == (200, {"ok": True})
    finally:
        server.stop()


# --- stored secrets ----------------------------------------------------------------------------

def test_secret_rotation_and_a_lost_key(backend, field_key, monkeypatch, users):
    from cryptography.fernet import Fernet

    connector = make_connector(backend, auth=AuthKind.BEARER)
    connector_secret_update(actor=users["admin"], connector_id=connector.pk, secret="abc")
    connector.refresh_from_db()
    new_key = Fernet.generate_key().decode()
    monkeypatch.setenv("TANDEM_FIELD_KEY", f"{new_key},{FIELD_KEY}")  # new key first, old still decrypts
    assert secret_decrypt(connector.secret_encrypted) == "abc"
    monkeypatch.setenv("TANDEM_FIELD_KEY", new_key)
    with pytest.raises(ConnectorError, match="The stored secret of shop cannot be decrypted"):
        call(connector)
    assert backend.requests == []


def test_field_key_check(monkeypatch, backend, users):
    from integrations.models import field_key_check

    monkeypatch.delenv("TANDEM_FIELD_KEY", raising=False)
    assert field_key_check() == []  # nothing stored: the fallback protects nothing yet
    connector = make_connector(backend, auth=AuthKind.BEARER)
    connector_secret_update(actor=users["admin"], connector_id=connector.pk, secret="abc")
    assert [m.id for m in field_key_check()] == ["integrations.W001"]
    monkeypatch.setenv("TANDEM_FIELD_KEY", "not-a-key")
    assert [m.id for m in field_key_check()] == ["integrations.E001"]
    monkeypatch.setenv("TANDEM_FIELD_KEY", FIELD_KEY)
    assert field_key_check() == []


# --- health, connection test, pruning -----------------------------------------------------------

def test_probe_accepts_any_2xx_and_reports_errors(backend):
    backend.respond = lambda request: (204, {}, b"")
    connector = make_connector(backend, health_path="/status")
    result = connector_probe(connector=connector)
    assert (result.ok, result.status, result.error) == (True, 204, "")
    assert backend.requests[0]["path"] == "/status"
    backend.respond = lambda request: (503, {}, b"")
    result = connector_probe(connector=connector)
    assert (result.ok, result.status, result.error) == (False, 503, "shop answered HTTP 503 at /status")


def test_prune_keeps_a_week(backend):
    from django.conf import settings

    connector = make_connector(backend)
    for _ in range(3):
        call(connector)
    old = list(ConnectorCall.objects.values_list("pk", flat=True)[:2])
    ConnectorCall.objects.filter(pk__in=old).update(created_at=timezone.now() - timedelta(days=8))
    assert connector_calls_prune(batch_size=1) == 2
    assert ConnectorCall.objects.count() == 1
    assert connector_calls_prune() == 0
    schedule = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "integrations.prune_connector_calls" in schedule
    from integrations.tasks import prune_connector_calls

    assert prune_connector_calls.name == "integrations.prune_connector_calls"


@pytest.fixture
def admin_client(client, users):
    client.force_login(users["admin"])
    return client


def change_url(connector):
    return reverse("admin:integrations_connector_change", args=[connector.pk])


def test_connection_test_button(admin_client, demo_backend):
    connector = Connector.objects.get(name="brightwater-backend")
    page = admin_client.get(change_url(connector)).content.decode()
    test_url = reverse("admin:integrations_connector_test", args=[connector.pk])
    assert f'action="{test_url}"' in page and "Test connection" in page
    assert admin_client.get(test_url).status_code == 405
    response = admin_client.post(test_url, follow=True)
    text = response.content.decode()
    assert "Connection test of brightwater-backend: /health answered HTTP 200 in" in text
    event = AuditEvent.objects.get(action="connector.tested")
    assert event.data["ok"] is True and event.data["status"] == 200
    assert ConnectorCall.objects.filter(connector=connector, path_template="/health").count() == 1


def test_connection_test_shows_the_error(admin_client, backend, monkeypatch):
    monkeypatch.setenv("SHOP_TOKEN", "wrong")
    backend.respond = lambda request: json_answer(401, {"message": "bad token"})
    connector = make_connector(backend, auth=AuthKind.BEARER, secret_env="SHOP_TOKEN")
    response = admin_client.post(reverse("admin:integrations_connector_test", args=[connector.pk]), follow=True)
    assert "Connection test failed (HTTP 401" in response.content.decode()
    assert "shop refused the credentials (HTTP 401): bad token" in response.content.decode()
    assert AuditEvent.objects.get(action="connector.tested").data["ok"] is False


def test_connection_test_needs_change_permission(client, users, backend):
    connector = make_connector(backend)
    client.force_login(users["agent"])
    response = client.post(reverse("admin:integrations_connector_test", args=[connector.pk]))
    assert response.status_code in (302, 403)
    assert not AuditEvent.objects.filter(action="connector.tested").exists()
    assert backend.requests == []


def form_data(connector, **overrides) -> dict:
    data = {"name": connector.name, "base_url": connector.base_url, "base_url_env": connector.base_url_env,
            "auth": connector.auth, "secret_env": connector.secret_env, "username": connector.username,
            "oauth_token_url": "", "oauth_client_id": "", "oauth_scope": "",
            "extra_headers": json.dumps(connector.extra_headers), "timeout_s": connector.timeout_s,
            "verify_tls": "on" if connector.verify_tls else "", "health_path": connector.health_path, "secret": ""}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_the_secret_is_write_only_in_the_admin(admin_client, backend, field_key):
    connector = make_connector(backend, auth=AuthKind.BEARER)
    response = admin_client.post(change_url(connector), form_data(connector, secret="sup3r-s3cret"))
    assert response.status_code == 302, response.content.decode()
    connector.refresh_from_db()
    stored = connector.secret_encrypted
    assert secret_decrypt(stored) == "sup3r-s3cret"
    page = admin_client.get(change_url(connector)).content.decode()
    assert "sup3r-s3cret" not in page and stored not in page
    assert "A secret is stored (encrypted, never shown)." in page
    # Empty keeps it.
    assert admin_client.post(change_url(connector), form_data(connector, timeout_s=3)).status_code == 302
    connector.refresh_from_db()
    assert (connector.secret_encrypted, connector.timeout_s) == (stored, 3)
    # Both an environment variable and a stored secret: refused.
    response = admin_client.post(change_url(connector), form_data(connector, secret_env="SHOP_TOKEN"))
    assert "Name an environment variable or store a secret, not both" in response.content.decode()
    # Clear it and use the variable instead.
    response = admin_client.post(change_url(connector), form_data(connector, secret_env="SHOP_TOKEN",
                                                                  clear_secret="on"))
    assert response.status_code == 302
    connector.refresh_from_db()
    assert (connector.secret_encrypted, connector.secret_env) == ("", "SHOP_TOKEN")
    assert list(AuditEvent.objects.filter(action__startswith="connector.secret").values_list("action", flat=True)
                .order_by("seq")) == ["connector.secret_set", "connector.secret_cleared"]


def test_admin_form_errors(admin_client, backend):
    connector = make_connector(backend)
    response = admin_client.post(change_url(connector), form_data(
        connector, auth=AuthKind.BEARER, extra_headers='{"Authorization": "Basic x"}'))
    text = response.content.decode()
    assert response.status_code == 200
    assert "Authorization is set by the connector&#x27;s authentication" in text
    assert "This authentication needs a secret" in text
    response = admin_client.post(change_url(connector), form_data(connector, auth=AuthKind.OAUTH2,
                                                                  secret_env="X"))
    assert "OAuth2 needs a client id." in response.content.decode()
    connector.refresh_from_db()
    assert connector.auth == AuthKind.NONE and connector.extra_headers == {}


def test_tls_off_is_a_warning_in_the_admin(admin_client, backend):
    connector = make_connector(backend, verify_tls=False)
    assert "TLS verification is off for this connector" in admin_client.get(change_url(connector)).content.decode()
    assert "not verified" in admin_client.get(reverse("admin:integrations_connector_changelist")).content.decode()


# The session, the user, the paginator's count and the connectors with their last hour's
# health (one aggregate query), whatever the number of connectors and calls.
LIST_QUERIES = 4


@pytest.mark.parametrize("connectors_count", [1, 4])
def test_connector_list_health_in_one_query(admin_client, backend, django_assert_num_queries, connectors_count):
    admin_client.get(reverse("admin:integrations_connector_changelist"))  # warm per-process caches
    for i in range(connectors_count):
        connector = make_connector(backend, name=f"shop-{i}")
        for latency in (10, 20, 30, 400):
            ConnectorCall.objects.create(connector=connector, method="GET", path_template="/x", status_code=200,
                                         latency_ms=latency, error_class="" if latency < 400 else "HTTP 5xx")
        old = ConnectorCall.objects.create(connector=connector, method="GET", path_template="/x", latency_ms=9999,
                                           error_class="ReadTimeout")
        ConnectorCall.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=2))
    with django_assert_num_queries(LIST_QUERIES):
        response = admin_client.get(reverse("admin:integrations_connector_changelist"))
    rows = {c.name: c for c in response.context["cl"].result_list}
    health = rows["shop-0"]
    assert (health.calls_recent, health.errors_recent) == (4, 1)
    assert health.p95_recent == pytest.approx(344.5)  # percentile_cont of 10, 20, 30, 400
    text = response.content.decode()
    assert "25%" in text and "344 ms" in text


def test_a_run_with_a_changed_action_definition_keeps_its_key(backend):
    """The action's timeout override reaches the call (and the run's record names the template)."""
    backend.respond = backend.hang
    connector = make_connector(backend, timeout_s=5)
    action = ActionDefinition.objects.create(
        name="slow", title="Slow", description="d", connector=connector, path="/orders/{order_id}/slow",
        parameters_schema={"type": "object"}, approval_rule={"rule": "never"}, timeout_s=0.2)
    run = action_run_propose(action=action, params={"order_id": "BW-10001"}, idempotency_key="t:slow")
    run = action_run_execute(run_id=run.pk, final_attempt=True)
    assert (run.status, run.error) == (RunStatus.FAILED, "shop did not answer in 0.2s")
    assert ConnectorCall.objects.get().path_template == "/orders/{order_id}/slow"
    assert ActionRun.objects.count() == 1
