"""The generic HTTP/JSON connector."""

from __future__ import annotations

import os
from urllib.parse import quote

import httpx

from integrations.exceptions import ConnectorError
from integrations.models import AuthKind, Connector


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


def connector_call(*, connector: Connector, method: str, path_template: str, params: dict,
                   idempotency_key: str) -> tuple[int, dict]:
    """Call the backend once. Raises ConnectorError, marked retryable for timeouts and 5xx."""
    path, body = render_path(path_template, params)
    headers = {"Idempotency-Key": idempotency_key, "Accept": "application/json"}
    if connector.auth == AuthKind.BEARER and connector.secret_env:
        token = os.environ.get(connector.secret_env, "")
        if token:
            headers["Authorization"] = f"Bearer {token}"
    url = connector_base_url(connector) + path
    try:
        with httpx.Client(timeout=connector.timeout_s) as client:
            if method.upper() == "GET":
                response = client.get(url, headers=headers)
            else:
                response = client.request(method.upper(), url, headers=headers, json=body)
    except httpx.TimeoutException as exc:
        raise ConnectorError(f"{connector.name} did not answer in {connector.timeout_s:g}s", retryable=True) from exc
    except httpx.HTTPError as exc:
        raise ConnectorError(f"{connector.name} could not be reached ({exc.__class__.__name__})", retryable=True) from exc
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.status_code >= 500:
        raise ConnectorError(f"{connector.name} failed with HTTP {response.status_code}", retryable=True,
                             status=response.status_code)
    if not isinstance(payload, dict):
        raise ConnectorError(f"{connector.name} returned a response that is not a JSON object", retryable=False,
                             status=response.status_code)
    if response.status_code >= 400:
        reason = payload.get("error") or payload.get("message") or f"HTTP {response.status_code}"
        raise ConnectorError(str(reason), retryable=False, status=response.status_code, body=payload)
    return response.status_code, payload
