"""Where higher apps say what a review item's subject is, what its kind means, and hear of
changes. The review app itself knows nothing of conversations or actions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class SubjectHandler:
    """``url`` links a subject by id; ``item_url``, when given, links from the item itself
    (e.g. from ids kept in ``item.data``) so that a list of items needs no query per row."""

    subject_type: str
    url: Callable[[str], str]
    item_url: Callable | None = None


@dataclass(frozen=True)
class KindHandler:
    """What a kind of item means to the app that raises it.

    ``outcomes`` are the decisions a person may close it with (value, label), none meaning any;
    ``on_resolved(item=, actor=, outcome=, note=)`` runs inside the resolving transaction."""

    kind: str
    outcomes: tuple[tuple[str, str], ...] = ()
    on_resolved: Callable | None = None


@dataclass(frozen=True)
class ItemChange:
    """Sent to listeners after the change committed."""

    item_id: str
    team_id: str | None
    kind: str
    event: str
    status: str
    subject_type: str
    subject_id: str


_subjects: dict[str, SubjectHandler] = {}
_kinds: dict[str, KindHandler] = {}
_listeners: list[Callable[[ItemChange], None]] = []


def register_subject(handler: SubjectHandler) -> None:
    _subjects[handler.subject_type] = handler


def subject_url(subject_type: str, subject_id: str) -> str:
    handler = _subjects.get(subject_type)
    return handler.url(subject_id) if handler else ""


def item_url(item) -> str:
    """Where a person works on ``item``: its subject's page."""
    handler = _subjects.get(item.subject_type)
    if handler is None:
        return ""
    if handler.item_url is not None:
        return handler.item_url(item)
    return handler.url(item.subject_id)


def register_kind(handler: KindHandler) -> None:
    _kinds[handler.kind] = handler


def kind_handler(kind: str) -> KindHandler | None:
    return _kinds.get(kind)


def on_item_changed(listener: Callable[[ItemChange], None]) -> None:
    """Hear of every committed change to an item (for live updates)."""
    if listener not in _listeners:
        _listeners.append(listener)


def item_listeners() -> list[Callable[[ItemChange], None]]:
    return list(_listeners)
