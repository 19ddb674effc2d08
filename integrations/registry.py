"""Where higher apps hear about action runs that settled (succeeded, failed, rejected)."""

from __future__ import annotations

from typing import Callable

_settled_handlers: list[Callable[[str], None]] = []


def on_run_settled(handler: Callable[[str], None]) -> None:
    """Register ``handler(run_id)``; it is called after the settling transaction commits."""
    if handler not in _settled_handlers:
        _settled_handlers.append(handler)


def run_settled_handlers() -> list[Callable[[str], None]]:
    return list(_settled_handlers)
