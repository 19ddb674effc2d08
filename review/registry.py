"""Where higher apps say what a review item's subject is and how to show it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class SubjectHandler:
    subject_type: str
    url: Callable[[str], str]


_handlers: dict[str, SubjectHandler] = {}


def register_subject(handler: SubjectHandler) -> None:
    _handlers[handler.subject_type] = handler


def subject_url(subject_type: str, subject_id: str) -> str:
    handler = _handlers.get(subject_type)
    return handler.url(subject_id) if handler else ""
