"""Outbound realtime events: versioned dicts sent to channel-layer groups after commit.

Groups: ``chat.<conversation id>`` (the customer and the agents viewing the conversation),
``office.team.<team id>`` (the workspaces of that team's agents and supervisors) and
``office.all`` (compliance officers and administrators, who see every queue).
Office events carry ids and states only; workspaces fetch what they show through the
permission-checked pages.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)
EVENT_VERSION = 1
OFFICE_GROUP = "office.all"


def chat_group(conversation_id) -> str:
    return f"chat.{conversation_id}"


def office_team_group(team_id) -> str:
    return f"office.team.{team_id}"


class _LoopThread:
    """A long-lived event loop for processes without one (Celery workers), so the Redis
    layer keeps its connections instead of opening one per message."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lock = threading.Lock()

    def submit(self, coro) -> None:
        with self.lock:
            if self.loop is None or self.loop.is_closed():
                self.loop = asyncio.new_event_loop()
                threading.Thread(target=self.loop.run_forever, name="tandem-broadcast", daemon=True).start()
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)


_loop_thread = _LoopThread()


def _uses_memory_layer(layer) -> bool:
    return layer.__class__.__name__ == "InMemoryChannelLayer"


def group_send_now(group: str, event: dict[str, Any]) -> None:
    """Send at once (used for streamed tokens and typing, which are never stored)."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "tandem.event", "event": {"v": EVENT_VERSION, **event}}
    try:
        if _uses_memory_layer(layer):
            # The in-memory layer lives on the server's event loop; asgiref routes there.
            async_to_sync(layer.group_send)(group, message)
        else:
            _loop_thread.submit(layer.group_send(group, message))
    except Exception:  # realtime delivery is best effort; clients resync from the database
        logger.exception("could not send %s to %s", event.get("type"), group)


def group_send_on_commit(group: str, event: dict[str, Any]) -> None:
    transaction.on_commit(lambda: group_send_now(group, event))
