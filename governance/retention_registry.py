"""Where higher apps plug their data into retention, legal holds and erasure.

Governance is the lowest layer: it knows no conversation, message or upload. An app that stores
data worth a retention policy registers a ``DataKindHandler`` from its ``AppConfig.ready()``; an
app whose records can be the subject of a legal hold or of an erasure request (a customer, a
conversation) registers a ``SubjectType``. ``governance.retention`` runs policies, holds and
erasures through them only.

A handler applies the holds itself: it alone knows how a hold on a customer, a conversation or a
date range maps to its rows. Rows under an active hold are never changed; they are counted as
``held_back``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Callable, Mapping, Protocol, Sequence

from django.db.models import Q

# Subject types of a legal hold. "range" (everything in a date range) is governance's own; the
# others are registered by the app that owns the subject (convo: "contact", "conversation").
RANGE = "range"


@dataclass(frozen=True)
class Hold:
    """An active legal hold as a handler sees it (plain data, no model)."""

    id: str
    name: str
    subject_type: str
    subject_id: str = ""
    from_date: date | None = None
    to_date: date | None = None

    def dates_q(self, field_name: str) -> Q:
        """Rows whose ``field_name`` (a datetime) falls within the hold's dates, inclusive. No
        dates: every row (a hold on a customer or conversation without dates holds all of it)."""
        query = Q()
        if self.from_date:
            query &= Q(**{f"{field_name}__date__gte": self.from_date})
        if self.to_date:
            query &= Q(**{f"{field_name}__date__lte": self.to_date})
        return query


@dataclass(frozen=True)
class Subject:
    """What an erasure request is about: a customer (``contact``) or a ``conversation``."""

    type: str
    id: str


@dataclass
class PurgeCounts:
    """What a handler found and did.

    ``matched``: rows old enough and still holding data to remove; ``held_back``: those of them
    under a legal hold (left untouched); ``purged``: rows deleted or anonymised. ``refs`` says
    which rows were purged, kept small for the audit event: ``{"first": id, "last": id}`` of
    time-ordered ids, or for audit events ``{"audit_seqs": [[from, to], ...]}``. ``remaining``:
    rows left for the next run because the run's row limit was reached. ``detail``: anything else
    worth reporting (e.g. ``{"deleted": 3, "anonymised": 5}``)."""

    matched: int = 0
    purged: int = 0
    held_back: int = 0
    remaining: int = 0
    refs: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"matched": self.matched, "purged": self.purged, "held_back": self.held_back}
        if self.remaining:
            data["remaining"] = self.remaining
        if self.detail:
            data["detail"] = dict(self.detail)
        if self.refs:
            data["refs"] = dict(self.refs)
        return data


@dataclass(frozen=True)
class PurgeMarker:
    """Who asked for a purge, written into anonymised audit payloads (``"policy"``) and kept by
    handlers that want to say why a row is empty."""

    policy: str  # "retention:<kind>" for a policy run, "erasure" for an erasure request
    at: datetime


class CountFunc(Protocol):
    def __call__(self, *, cutoff: datetime, holds: Sequence[Hold], action: str,
                 subject: Subject | None = None) -> PurgeCounts:
        """What a purge with ``action`` would do now (``purged`` stays 0); changes nothing."""


class PurgeFunc(Protocol):
    def __call__(self, *, cutoff: datetime, holds: Sequence[Hold], action: str, batch_size: int, limit: int,
                 marker: PurgeMarker, subject: Subject | None = None) -> PurgeCounts:
        """Delete or anonymise the eligible rows that no hold covers, inside the caller's
        transaction (``governance.retention`` owns it): at most ``limit`` rows, ``batch_size`` per
        statement. Idempotent: a purged row no longer matches."""


@dataclass(frozen=True)
class DataKindHandler:
    """A kind of stored data a retention policy can apply to.

    ``actions``: the ones the kind supports ("delete", "anonymise"). ``count`` and ``purge``: see
    ``CountFunc``/``PurgeFunc``; both receive ``cutoff`` (rows older than it are eligible) and the
    active ``holds``. ``erasable``: the handler accepts ``subject`` (erasure requests go through it,
    anonymising; the cutoff is then "now"). ``description`` and ``action_notes`` are shown to
    compliance officers on the retention page."""

    name: str
    label: str
    actions: tuple[str, ...]
    count: CountFunc
    purge: PurgeFunc
    description: str = ""
    action_notes: Mapping[str, str] = field(default_factory=dict)
    erasable: bool = False
    position: int = 100  # order on the retention page


@dataclass(frozen=True)
class SubjectType:
    """Something a legal hold or an erasure request can name by id.

    ``labels(ids)`` → {id: readable label} for the ids that exist (one query: list pages call it
    once per type); ``open_count(id)`` → how many of its conversations are still live (an
    erasure waits for them to close); ``audit_filter(ids)`` → a ``Q`` over ``AuditEvent`` matching
    the events about these subjects and their records (holds keep them, erasure anonymises them);
    ``anonymise(id, marker)`` clears the subject's own record (a customer's name and e-mail) and
    returns how many rows it changed."""

    name: str
    label: str
    target_type: str  # how audit events name it, e.g. "convo.conversation"
    labels: Callable[[Sequence[str]], dict[str, str]]
    open_count: Callable[[str], int]
    audit_filter: Callable[[Sequence[str]], Q]
    anonymise: Callable[[str, PurgeMarker], int] | None = None


_kinds: dict[str, DataKindHandler] = {}
_subjects: dict[str, SubjectType] = {}


def data_kind_register(handler: DataKindHandler) -> None:
    """Called from an ``AppConfig.ready()``; registering a name again replaces it (reloads)."""
    if not handler.actions:
        raise ValueError(f"data kind {handler.name!r} supports no action")
    _kinds[handler.name] = handler


def data_kinds() -> dict[str, DataKindHandler]:
    """The registered kinds, by ``position`` then name."""
    return {h.name: h for h in sorted(_kinds.values(), key=lambda h: (h.position, h.name))}


def data_kind(name: str) -> DataKindHandler | None:
    return _kinds.get(name)


def subject_type_register(subject_type: SubjectType) -> None:
    if subject_type.name == RANGE:
        raise ValueError(f"{RANGE!r} is governance's own hold scope")
    _subjects[subject_type.name] = subject_type


def subject_types() -> dict[str, SubjectType]:
    return dict(_subjects)


def subject_type(name: str) -> SubjectType | None:
    return _subjects.get(name)
