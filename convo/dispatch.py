"""Starting a turn after commit: a Celery task, or in-process when Celery runs eagerly.

In the embedded default (no Redis) the turn must not run inside the consumer's handler,
or the customer's own socket could not receive the streamed tokens until the turn ended.
So an eager turn started from the ASGI server runs in a worker thread of the server's
event loop; everywhere else (tests, commands) it runs inline.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.conf import settings

logger = logging.getLogger(__name__)
_server_loop: asyncio.AbstractEventLoop | None = None
# Turns mostly wait on the model; asyncio's default pool (cores + 4 threads) would queue
# them behind each other under a burst of customers.
_turn_executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="tandem-turn")


def remember_server_loop() -> None:
    """Called from the ASGI application on each connection."""
    global _server_loop
    try:
        _server_loop = asyncio.get_running_loop()
    except RuntimeError:
        pass


def turn_dispatch(turn_id: str) -> None:
    from convo.tasks import run_turn

    if not settings.CELERY_TASK_ALWAYS_EAGER:
        run_turn.delay(turn_id)
        return
    loop = _server_loop
    if getattr(settings, "TANDEM_EAGER_IN_BACKGROUND", True) and loop is not None and loop.is_running():
        async def _run():
            try:
                await sync_to_async(run_turn.apply, thread_sensitive=False, executor=_turn_executor)(args=[turn_id])
            except Exception:
                logger.exception("turn %s failed", turn_id)

        asyncio.run_coroutine_threadsafe(_run(), loop)
        return
    run_turn.apply(args=[turn_id])
