"""The generic HTTP/JSON connector: authentication, request signing, timeouts, TLS, call records.

Authentication (``Connector.auth``); the secret comes from ``secret_env`` or the encrypted store:

* ``bearer``: ``Authorization: Bearer <secret>``.
* ``basic``: ``Authorization: Basic`` of ``username`` and the secret as password.
* ``hmac``: every request carries ``X-Tandem-Timestamp: <unix seconds>`` and
  ``X-Tandem-Signature: sha256=<hex HMAC-SHA256 with the secret as key of
  "<timestamp>.<METHOD>.<path and query as sent>.<body bytes>">`` (the body is empty for GET).
  Backends should refuse timestamps more than 5 minutes off.
* ``oauth2``: client credentials grant at ``oauth_token_url`` (client id and secret sent with
  HTTP Basic, RFC 6749 section 2.3.1; ``scope`` when set). The token is cached in the process
  until shortly before it expires, and fetched again once when the backend answers 401.

Every call (``connector_call``, ``connector_probe``) appends a ``ConnectorCall`` row with the
path *template*, status, latency and error class: the connector's health in the admin.

Stored secrets are Fernet tokens. The key is ``TANDEM_FIELD_KEY`` (a Fernet key; several,
comma-separated, to rotate: the first encrypts, all decrypt), or else one derived from
``SECRET_KEY`` (``manage.py check`` warns, integrations.W001).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.core.exceptions import ValidationError

from integrations.exceptions import ConnectorError
from integrations.models import AuthKind, Connector, ConnectorCall, validate_extra_headers

logger = logging.getLogger(__name__)

FIELD_KEY_ENV = "TANDEM_FIELD_KEY"
SIGNATURE_HEADER = "X-Tandem-Signature"
TIMESTAMP_HEADER = "X-Tandem-Timestamp"
# A cached OAuth2 token is dropped this long before it expires (at most half its lifetime), so a
# request never leaves with a token that dies on the way.
TOKEN_EXPIRY_MARGIN_S = 30.0
_clock = time.monotonic  # patched by tests to age cached tokens


# --- secrets at rest ---------------------------------------------------------------------

def _derived_key() -> bytes:
    from django.conf import settings

    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"tandem", info=b"integrations.connector-secret")
    return base64.urlsafe_b64encode(hkdf.derive(settings.SECRET_KEY.encode()))


def _fernet() -> MultiFernet:
    configured = [k.strip() for k in os.environ.get(FIELD_KEY_ENV, "").split(",") if k.strip()]
    if not configured:
        return MultiFernet([Fernet(_derived_key())])
    try:
        return MultiFernet([Fernet(k) for k in configured])
    except ValueError as exc:
        raise ConnectorError(f"{FIELD_KEY_ENV} is not a valid Fernet key.", retryable=False) from exc


def field_key_status() -> tuple[str, str]:
    """("ok" | "invalid" | "derived" | "unused", detail) for the system check: "derived" only
    when the fallback key actually protects stored secrets."""
    configured = [k.strip() for k in os.environ.get(FIELD_KEY_ENV, "").split(",") if k.strip()]
    if configured:
        for key in configured:
            try:
                Fernet(key)
            except ValueError as exc:
                return "invalid", str(exc)
        return "ok", ""
    from django.db import DatabaseError

    try:
        stored = Connector.objects.exclude(secret_encrypted="").exists()
    except DatabaseError:  # no database yet (e.g. check before migrate): nothing stored either
        return "unused", ""
    return ("derived", "") if stored else ("unused", "")


def secret_encrypt(plain: str) -> str:
    if not os.environ.get(FIELD_KEY_ENV, "").strip():
        logger.warning("%s is unset: encrypting a connector secret with a key derived from SECRET_KEY", FIELD_KEY_ENV)
    return _fernet().encrypt(plain.encode()).decode()


def secret_decrypt(token: str, *, connector_name: str = "the connector") -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ConnectorError(f"The stored secret of {connector_name} cannot be decrypted (was {FIELD_KEY_ENV} or "
                             "SECRET_KEY changed?); store it again.", retryable=False) from exc


def connector_secret(connector: Connector) -> str:
    """The connector's secret: its environment variable when named, else the stored one."""
    if connector.secret_env:
        return os.environ.get(connector.secret_env, "")
    if connector.secret_encrypted:
        return secret_decrypt(connector.secret_encrypted, connector_name=connector.name)
    return ""


# --- URLs and paths --------------------------------------------------------------------------

def connector_base_url(connector: Connector) -> str:
    url = os.environ.get(connector.base_url_env, "") if connector.base_url_env else ""
    if not url and connector.base_url_env == "DEMO_BACKEND_URL":
        from django.conf import settings

        url = settings.DEMO_BACKEND_URL
    return (url or connector.base_url).rstrip("/")


def render_path(template: str, params: dict) -> tuple[str, dict]:
    """Fill ``{name}`` placeholders (URL-quoted) and return the parameters left for the body."""
    body = dict(params)
    path = template
    for key in list(body):
        placeholder = "{" + key + "}"
        if placeholder in path:
            path = path.replace(placeholder, quote(str(body.pop(key)), safe=""))
    return path, body


# --- authentication ----------------------------------------------------------------------------

def hmac_signature(*, secret: str, timestamp: str, method: str, path: str, body: bytes) -> str:
    """The ``X-Tandem-Signature`` value; backends recompute it the same way to verify."""
    message = f"{timestamp}.{method.upper()}.{path}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


_tokens: dict[tuple, tuple[str, float]] = {}
_tokens_lock = threading.Lock()


def _token_cache_key(connector: Connector, secret: str) -> tuple:
    # The secret's hash is part of the key: a changed secret never reuses the old one's token.
    return (str(connector.pk), connector.oauth_token_url, connector.oauth_client_id, connector.oauth_scope,
            hashlib.sha256(secret.encode()).hexdigest())


def oauth_tokens_forget() -> None:
    """Drop every cached OAuth2 token (tests; a deliberate credentials rotation)."""
    with _tokens_lock:
        _tokens.clear()


def _oauth_token(connector: Connector, secret: str, client: httpx.Client, *, fresh: bool = False) -> str:
    key = _token_cache_key(connector, secret)
    with _tokens_lock:
        cached = _tokens.get(key)
    if cached and not fresh and cached[1] > _clock():
        return cached[0]
    data = {"grant_type": "client_credentials"}
    if connector.oauth_scope:
        data["scope"] = connector.oauth_scope
    try:
        response = client.post(connector.oauth_token_url, data=data, auth=(connector.oauth_client_id, secret),
                               headers={"Accept": "application/json"})
    except httpx.TimeoutException as exc:
        raise ConnectorError(f"{connector.name}: the OAuth2 token endpoint did not answer in time",
                             retryable=True) from exc
    except httpx.HTTPError as exc:
        raise ConnectorError(f"{connector.name}: the OAuth2 token endpoint could not be reached "
                             f"({exc.__class__.__name__})", retryable=True) from exc
    if response.status_code >= 500:
        raise ConnectorError(f"{connector.name}: the OAuth2 token endpoint failed with HTTP {response.status_code}",
                             retryable=True, status=response.status_code)
    if response.status_code >= 400:
        raise ConnectorError(f"{connector.name}: the OAuth2 token endpoint refused the client credentials "
                             f"(HTTP {response.status_code}); check the client id and secret",
                             retryable=False, status=response.status_code)
    try:
        payload = response.json()
        token = payload["access_token"]
        expires_in = float(payload.get("expires_in", 300))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConnectorError(f"{connector.name}: the OAuth2 token endpoint did not return an access token",
                             retryable=False, status=response.status_code) from exc
    if not isinstance(token, str) or not token:
        raise ConnectorError(f"{connector.name}: the OAuth2 token endpoint did not return an access token",
                             retryable=False, status=response.status_code)
    lifetime = max(0.0, expires_in - min(TOKEN_EXPIRY_MARGIN_S, expires_in / 2))
    with _tokens_lock:
        _tokens[key] = (token, _clock() + lifetime)
    return token


def _authenticate(connector: Connector, request: httpx.Request, client: httpx.Client, *,
                  fresh_token: bool = False) -> None:
    kind = connector.auth
    if kind == AuthKind.NONE:
        return
    secret = connector_secret(connector)
    if not secret:
        # Sent without credentials: the backend decides (a 401 then says what is missing, see
        # _auth_refused). E.g. the demo connector names DEMO_BACKEND_TOKEN, often left unset.
        return
    if kind == AuthKind.BEARER:
        request.headers["Authorization"] = f"Bearer {secret}"
    elif kind == AuthKind.BASIC:
        credentials = base64.b64encode(f"{connector.username}:{secret}".encode()).decode("ascii")
        request.headers["Authorization"] = f"Basic {credentials}"
    elif kind == AuthKind.HMAC:
        timestamp = str(int(time.time()))
        request.headers[TIMESTAMP_HEADER] = timestamp
        request.headers[SIGNATURE_HEADER] = hmac_signature(
            secret=secret, timestamp=timestamp, method=request.method, path=request.url.raw_path.decode("ascii"),
            body=request.content)
    elif kind == AuthKind.OAUTH2:
        request.headers["Authorization"] = f"Bearer {_oauth_token(connector, secret, client, fresh=fresh_token)}"
    else:
        raise ConnectorError(f"{connector.name} has an unknown authentication kind {kind!r}.", retryable=False)


# --- calls -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProbeResult:
    """The outcome of a connection test."""

    ok: bool
    status: int | None
    latency_ms: int
    error: str = ""


def _record(connector: Connector, method: str, path_template: str, started: float, status: int | None,
            error_class: str) -> None:
    # A telemetry row, not a domain write: written where the call happens, in whatever
    # transaction the caller has (action execution calls outside any).
    ConnectorCall.objects.create(connector=connector, method=method, path_template=path_template[:300],
                                 status_code=status, latency_ms=int((time.monotonic() - started) * 1000),
                                 error_class=error_class)


def _send(connector: Connector, method: str, path_template: str, params: dict, headers: dict,
          timeout: float) -> httpx.Response:
    """Send one request (and, for OAuth2, once more with a fresh token after a 401)."""
    path, body = render_path(path_template, params)
    url = connector_base_url(connector) + path
    extra = connector.extra_headers or {}
    try:
        validate_extra_headers(extra)  # also checked in the admin; a bad row must not reach a request
    except ValidationError as exc:
        raise ConnectorError(f"{connector.name}: {exc.messages[0]}", retryable=False) from exc
    all_headers = {**extra, **headers}
    content = b""
    if method != "GET":
        content = json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode()
        all_headers["Content-Type"] = "application/json"
    with httpx.Client(timeout=timeout, verify=connector.verify_tls) as client:
        request = client.build_request(method, url, headers=all_headers, content=content or None)
        _authenticate(connector, request, client)
        response = client.send(request)
        if response.status_code == 401 and connector.auth == AuthKind.OAUTH2:
            response.close()
            request = client.build_request(method, url, headers=all_headers, content=content or None)
            _authenticate(connector, request, client, fresh_token=True)
            response = client.send(request)
        response.read()
        return response


def _transport_error(connector: Connector, exc: Exception, timeout: float) -> ConnectorError:
    if isinstance(exc, httpx.TimeoutException):
        return ConnectorError(f"{connector.name} did not answer in {timeout:g}s", retryable=True)
    if isinstance(exc, httpx.HTTPError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return ConnectorError(f"{connector.name}: the TLS certificate could not be verified", retryable=False)
    return ConnectorError(f"{connector.name} could not be reached ({exc.__class__.__name__})", retryable=True)


def _auth_refused(connector: Connector, response: httpx.Response, payload) -> ConnectorError:
    said = ""
    if isinstance(payload, dict):
        said = str(payload.get("message") or payload.get("error") or "")
    what = "refused the credentials" if response.status_code == 401 else "refused access"
    hint = "check the connector's authentication and secret"
    if connector.auth == AuthKind.NONE:
        hint = "the connector is set to send no authentication"
    elif not (connector.secret_encrypted or (connector.secret_env and os.environ.get(connector.secret_env))):
        hint = (f"no secret was sent: the environment variable {connector.secret_env} is empty" if connector.secret_env
                else "no secret was sent: none is stored")
    return ConnectorError(f"{connector.name} {what} (HTTP {response.status_code}){': ' + said if said else ''}; "
                          f"{hint}", retryable=False,
                          status=response.status_code, body=payload if isinstance(payload, dict) else None)


def connector_call(*, connector: Connector, method: str, path_template: str, params: dict,
                   idempotency_key: str, timeout: float | None = None) -> tuple[int, dict]:
    """Call the backend once. Raises ConnectorError, marked retryable for timeouts and 5xx.
    ``timeout`` (an action's override) replaces the connector's.

    The call's record counts as an error (``error_class``) for transport failures, refused
    credentials, 5xx and answers that are not JSON objects; a 4xx with a JSON reason (e.g. "no
    such order") is the backend working as it should."""
    method = method.upper()
    timeout = timeout or connector.timeout_s
    headers = {"Idempotency-Key": idempotency_key, "Accept": "application/json"}
    started = time.monotonic()
    status: int | None = None
    error_class = "ConfigurationError"  # until the request is sent (missing or undecryptable secret)
    try:
        try:
            response = _send(connector, method, path_template, params, headers, timeout)
        except httpx.HTTPError as exc:
            error_class = exc.__class__.__name__
            raise _transport_error(connector, exc, timeout) from exc
        status = response.status_code
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if status in (401, 403):
            error_class = "Unauthorized" if status == 401 else "Forbidden"
            raise _auth_refused(connector, response, payload)
        if status >= 500:
            error_class = "HTTP 5xx"
            raise ConnectorError(f"{connector.name} failed with HTTP {status}", retryable=True, status=status)
        if not isinstance(payload, dict):
            error_class = "InvalidResponse"
            raise ConnectorError(f"{connector.name} returned a response that is not a JSON object", retryable=False,
                                 status=status)
        error_class = ""
        if status >= 400:
            reason = payload.get("error") or payload.get("message") or f"HTTP {status}"
            raise ConnectorError(str(reason), retryable=False, status=status, body=payload)
    finally:
        _record(connector, method, path_template, started, status, error_class)
    return status, payload


def connector_probe(*, connector: Connector) -> ProbeResult:
    """GET the connector's health path with its authentication: any 2xx answer (JSON or not) is
    healthy. Never raises for the backend's failures; the result says what happened."""
    path = connector.health_path or "/health"
    started = time.monotonic()
    status: int | None = None
    error = ""
    error_class = ""
    try:
        response = _send(connector, "GET", path, {}, {"Accept": "application/json"}, connector.timeout_s)
        status = response.status_code
        if status in (401, 403):
            try:
                payload = response.json()
            except ValueError:
                payload = None
            error = str(_auth_refused(connector, response, payload))
        elif status >= 300:
            error = f"{connector.name} answered HTTP {status} at {path}"
        if status in (401, 403):
            error_class = "Unauthorized" if status == 401 else "Forbidden"
        elif status >= 500:
            error_class = "HTTP 5xx"
        elif error:
            error_class = f"HTTP {status}"
    except httpx.HTTPError as exc:
        error, error_class = str(_transport_error(connector, exc, connector.timeout_s)), exc.__class__.__name__
    except ConnectorError as exc:  # missing secret, token endpoint refused, undecryptable secret
        error, error_class = str(exc), "ConfigurationError"
    latency_ms = int((time.monotonic() - started) * 1000)
    _record(connector, "GET", path, started, status, error_class)
    return ProbeResult(ok=not error, status=status, latency_ms=latency_ms, error=error)
