"""Read-only lookups in the connected backends, for the people in the back office.

Only read actions (GET) can be looked up this way; they change nothing, so they are not
action runs. Answers are cached briefly so that a workspace refreshing itself does not call
the backend on every new message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass

from django.core.cache import cache

from integrations.connectors import connector_call
from integrations.exceptions import ConnectorError, InvalidParameters
from integrations.models import ActionDefinition
from integrations.services import action_params_validate

logger = logging.getLogger(__name__)
CACHE_SECONDS = 60
# A person is waiting for the page: a backend slower than this is reported, not waited for.
LOOKUP_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Lookup:
    ok: bool
    data: dict
    error: str = ""


def read_action_lookup(*, action_name: str, params: dict) -> Lookup:
    """Call a read action's endpoint once (or answer from a minute-old result)."""
    key = "tandem:lookup:" + hashlib.sha256(
        json.dumps([action_name, params], sort_keys=True).encode()).hexdigest()
    cached = cache.get(key)
    if cached is not None:
        return Lookup(**cached)
    action = ActionDefinition.objects.select_related("connector").filter(name=action_name, enabled=True).first()
    if action is None or not action.is_read_only:
        return Lookup(ok=False, data={}, error=f"No read action named {action_name} is enabled.")
    try:
        action_params_validate(action=action, params=params)
        _, payload = connector_call(connector=action.connector, method="GET", path_template=action.path,
                                    params=params, idempotency_key=f"lookup-{uuid.uuid4()}",
                                    timeout=min(action.connector.timeout_s, LOOKUP_TIMEOUT_S))
        result = Lookup(ok=True, data=payload)
    except InvalidParameters as exc:
        result = Lookup(ok=False, data={}, error=str(exc))
    except ConnectorError as exc:
        if exc.retryable:  # an outage is not remembered: the next look tries again
            return Lookup(ok=False, data={}, error=str(exc))
        result = Lookup(ok=False, data={}, error=str(exc))  # e.g. "no such order": remembered
    cache.set(key, {"ok": result.ok, "data": result.data, "error": result.error}, CACHE_SECONDS)
    return result
