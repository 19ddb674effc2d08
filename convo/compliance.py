"""Compliance: find any conversation, read the full decision record of every AI turn, and
export evidence bundles (JSON with the audit chain proof, or a readable HTML/PDF report).

Compliance officers and administrators only; they read everything and change nothing. Every
opening of a record writes ``compliance.viewed`` and every export ``compliance.exported`` to the
audit chain, in the transaction that read the data (``*_open`` and ``evidence_export`` below are
the entry points and own that transaction). Reads are assembled in a fixed number of queries
whatever the number of messages, turns, runs or items (``_collect``).

The bundle format is ``governance.evidence.EVIDENCE_FORMAT``; ``governance.evidence.bundle_verify``
checks one on its own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.postgres.aggregates import ArrayAgg
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Count, Exists, IntegerField, OuterRef, Prefetch, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.functional import SimpleLazyObject

from convo.models import Conversation, ConversationStatus, Decision, Intent, IntentKind, Message, Role, Turn
from governance.evidence import (
    EVIDENCE_FORMAT,
    audit_events_related,
    bundle_digest,
    chain_proof_build,
    event_as_dict,
    events_chain_status,
)
from governance.models import AuditEvent, ModelVersion, PromptVersion
from governance.permissions import can_read_conversations, can_read_governance, user_has_role, user_roles
from governance.roles import Role as StaffRole
from governance.services import audit_event_record
from integrations.models import ActionRun, ActionRunEvent
from integrations.selectors import action_runs_with_approvals
from review.models import ReviewEvent, ReviewItem

SUBJECT_TYPE = "convo.conversation"
TURN_TYPE = "convo.turn"
MESSAGE_TYPE = "convo.message"
RUN_SUBJECT_TYPE = "integrations.actionrun"
ITEM_TYPE = "review.reviewitem"
PAGE_SIZE = 50
COMPLIANCE_ROLES = frozenset({StaffRole.COMPLIANCE, StaffRole.ADMINISTRATOR})
FORMATS = ("json", "html", "pdf")


def may_audit(user) -> bool:
    """Compliance officers and administrators (superusers count as administrators)."""
    return user_has_role(user, COMPLIANCE_ROLES)


def nav_context(request) -> dict:
    """Template context processor (``convo.compliance.nav_context``): which back-office sections
    the navigation offers — ``nav_office`` (the inbox: those who read conversations),
    ``nav_compliance`` (compliance pages and retention: compliance
    officers, administrators) and ``nav_governance`` (versions and evaluations: model owners
    too). Lazy, and free on office pages: their view has already checked the role, and
    ``user_roles`` keeps the roles on the request's user, whereas ``perms`` in the template
    would cost two queries on every office page."""
    return {"nav_office": SimpleLazyObject(lambda: can_read_conversations(request.user)),
            "nav_compliance": SimpleLazyObject(lambda: may_audit(request.user)),
            "nav_governance": SimpleLazyObject(lambda: can_read_governance(request.user))}


def _require(actor) -> None:
    if not may_audit(actor):
        raise PermissionDenied("Compliance views are for compliance officers and administrators.")


def export_max_days() -> int:
    return int(getattr(settings, "COMPLIANCE_EXPORT_MAX_DAYS", 31))


def export_max_conversations() -> int:
    return int(getattr(settings, "COMPLIANCE_EXPORT_MAX_CONVERSATIONS", 200))


# --- search ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchOptions:
    """What the filter selects offer (three small queries)."""

    model_versions: list[ModelVersion]
    prompt_versions: list[PromptVersion]
    intents: list[str]


def search_options() -> SearchOptions:
    intents: list[str] = []
    for name, kind, action_name in Intent.objects.order_by("name").values_list("name", "kind", "action_name"):
        intents.append(name)
        if kind == IntentKind.ACTION and action_name:
            intents.append(f"action:{action_name}")  # the intent a half-filled action request records
    return SearchOptions(
        model_versions=list(ModelVersion.objects.order_by("name", "model_name")),
        prompt_versions=list(PromptVersion.objects.order_by("name", "-version")),
        intents=sorted(set(intents)),
    )


class SearchForm(forms.Form):
    """The filters of the search page and of the date-range export (``from``/``to`` are
    keywords in Python, hence added in ``__init__``)."""

    customer = forms.CharField(required=False, max_length=150, strip=True)
    intent = forms.CharField(required=False, max_length=80, strip=True)
    status = forms.ChoiceField(required=False, choices=[("", "Any")] + ConversationStatus.choices)
    resolution = forms.CharField(required=False, max_length=40, strip=True)
    decision = forms.ChoiceField(required=False, choices=[("", "Any")] + Decision.choices)

    def __init__(self, data=None, *, options: SearchOptions, require_dates: bool = False):
        super().__init__(data)
        self.require_dates = require_dates
        date_error = {"invalid": "Enter a date as YYYY-MM-DD."}
        self.fields["from"] = forms.DateField(required=require_dates, input_formats=["%Y-%m-%d"],
                                              error_messages=date_error)
        self.fields["to"] = forms.DateField(required=require_dates, input_formats=["%Y-%m-%d"],
                                            error_messages=date_error)
        # Choices from the versions already fetched: validating costs no further query.
        unknown = {"invalid_choice": "Unknown version: choose one from the list."}
        self.fields["model_version"] = forms.ChoiceField(
            required=False, choices=[("", "Any")] + [(str(v.pk), str(v)) for v in options.model_versions],
            error_messages=unknown)
        self.fields["prompt_version"] = forms.ChoiceField(
            required=False, choices=[("", "Any")] + [(str(v.pk), str(v)) for v in options.prompt_versions],
            error_messages=unknown)

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("from"), cleaned.get("to")
        if start and end and end < start:
            self.add_error("to", "The end date is before the start date.")
        return cleaned


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())


def conversation_search(*, filters: dict[str, Any]) -> QuerySet[Conversation]:
    """Every conversation matching ``filters`` (``SearchForm.cleaned_data``), newest first.

    The turn filters (intent, decision, model and prompt version) must all hold for one and the
    same turn. Each row carries its contact, its number of AI turns and the distinct intents and
    decisions of its turns, in the one query (correlated subqueries, no N+1)."""
    qs = Conversation.objects.select_related("contact")
    customer = filters.get("customer")
    if customer:
        qs = qs.filter(Q(contact__name__icontains=customer) | Q(contact__email__icontains=customer)
                       | Q(contact__external_id__icontains=customer))
    if filters.get("from"):
        qs = qs.filter(created_at__gte=_day_start(filters["from"]))
    if filters.get("to"):
        qs = qs.filter(created_at__lt=_day_start(filters["to"] + timedelta(days=1)))
    if filters.get("status"):
        qs = qs.filter(status=filters["status"])
    if filters.get("resolution"):
        qs = qs.filter(resolution__iexact=filters["resolution"])
    turn_filter = {}
    if filters.get("intent"):
        turn_filter["intent"] = filters["intent"].lower()
    if filters.get("decision"):
        turn_filter["decision"] = filters["decision"]
    if filters.get("model_version"):
        turn_filter["model_version_id"] = filters["model_version"]
    if filters.get("prompt_version"):
        turn_filter["prompt_version_id"] = filters["prompt_version"]
    if turn_filter:
        qs = qs.filter(Exists(Turn.objects.filter(conversation=OuterRef("pk"), **turn_filter)))
    turns = Turn.objects.filter(conversation=OuterRef("pk")).order_by().values("conversation")
    return qs.annotate(
        turn_count=Coalesce(Subquery(turns.annotate(n=Count("pk")).values("n"), output_field=IntegerField()),
                            Value(0)),
        intents=Subquery(turns.exclude(intent="").annotate(a=ArrayAgg("intent", distinct=True)).values("a")),
        decisions=Subquery(turns.exclude(decision="").annotate(a=ArrayAgg("decision", distinct=True)).values("a")),
    ).order_by("-created_at", "-pk")


# --- records ---------------------------------------------------------------------------------

@dataclass
class TurnRecord:
    """One AI turn with everything that explains it."""

    turn: Turn
    run: ActionRun | None = None
    review_items: list[ReviewItem] = field(default_factory=list)
    events: list[AuditEvent] = field(default_factory=list)

    @property
    def input_text(self) -> str:
        return self.turn.message.redacted_text or self.turn.message.text

    @property
    def input_redacted(self) -> bool:
        return bool(self.turn.message.redacted_text)


@dataclass
class ConversationRecord:
    """A conversation, its transcript with the decision record of each turn, its actions,
    review items and audit events (each with ``chain``: hash and link verified)."""

    conversation: Conversation
    messages: list[Message]
    turns: list[TurnRecord]
    runs: list[ActionRun]
    review_items: list[ReviewItem]
    events: list[AuditEvent]

    @property
    def timeline(self) -> list[dict]:
        """Messages in order; a customer message is followed by the record of its turn."""
        by_message = {t.turn.message_id: t for t in self.turns}
        return [{"message": m, "record": by_message.get(m.pk)} for m in self.messages]

    @property
    def chain_ok(self) -> bool:
        return all(e.chain["verified"] for e in self.events)


@dataclass
class _Collected:
    conversations: list[Conversation]
    messages: list[Message]
    turns: list[Turn]
    runs: list[ActionRun]
    items: list[ReviewItem]
    events: list[AuditEvent]


def _json_text(value) -> str:
    """JSON for showing a stored payload on a page (not Python's repr)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, cls=DjangoJSONEncoder) if value else ""


def _collect(conversations: list[Conversation], *, verify_links: bool = True) -> _Collected:
    """Everything recorded about ``conversations``, in a fixed number of queries (8, 7 without
    ``verify_links``) whatever their size."""
    ids = [c.pk for c in conversations]
    str_ids = [str(i) for i in ids]
    messages = list(Message.objects.filter(conversation_id__in=ids).select_related("author")
                    .order_by("conversation_id", "seq"))
    by_id = {m.pk: m for m in messages}
    turns = list(Turn.objects.filter(conversation_id__in=ids).select_related("model_version", "prompt_version")
                 .order_by("created_at", "pk"))
    for t in turns:  # message and reply come from the list above, not a query each
        t.message = by_id[t.message_id]
        if t.reply_id in by_id:
            t.reply = by_id[t.reply_id]
        t.tool_call_text = _json_text(t.tool_call)
    runs = list(action_runs_with_approvals(ActionRun.objects.filter(subject_type=SUBJECT_TYPE, subject_id__in=str_ids))
                .prefetch_related(Prefetch("events", queryset=ActionRunEvent.objects.order_by("created_at")))
                .order_by("created_at"))
    for run in runs:
        run.params_text, run.result_text = _json_text(run.params), _json_text(run.result)
    assistant_ids = [str(m.pk) for m in messages if m.role == Role.ASSISTANT]
    item_query = Q(subject_type=SUBJECT_TYPE, subject_id__in=str_ids)
    if runs:
        item_query |= Q(subject_type=RUN_SUBJECT_TYPE, subject_id__in=[str(r.pk) for r in runs])
    if assistant_ids:
        item_query |= Q(subject_type=MESSAGE_TYPE, subject_id__in=assistant_ids)
    items = list(ReviewItem.objects.filter(item_query).select_related("team", "claimed_by")
                 .prefetch_related(Prefetch("events", queryset=ReviewEvent.objects.select_related("actor")
                                            .order_by("created_at")))
                 .order_by("created_at"))
    since = min((c.created_at for c in conversations), default=None)
    events = list(audit_events_related(
        targets={SUBJECT_TYPE: str_ids, TURN_TYPE: [t.pk for t in turns], RUN_SUBJECT_TYPE: [r.pk for r in runs],
                 ITEM_TYPE: [i.pk for i in items]},
        data_refs={"conversation": str_ids},
        since=since,
    )) if conversations else []
    if verify_links:
        status = events_chain_status(events)
        for e in events:
            e.chain = status[e.seq]
    return _Collected(conversations, messages, turns, runs, items, events)


def _turn_records(collected: _Collected) -> list[TurnRecord]:
    runs = {str(r.pk): r for r in collected.runs}
    records = []
    for t in collected.turns:
        run = runs.get(t.action_run_id) if t.action_run_id else None
        items = [i for i in collected.items if
                 (i.subject_type == SUBJECT_TYPE and (i.data or {}).get("turn_id") == str(t.pk))
                 or (run is not None and i.subject_type == RUN_SUBJECT_TYPE and i.subject_id == str(run.pk))
                 or (t.reply_id and i.subject_type == MESSAGE_TYPE and i.subject_id == str(t.reply_id))]
        refs = {(TURN_TYPE, str(t.pk))} | {(ITEM_TYPE, str(i.pk)) for i in items}
        if run is not None:
            refs.add((RUN_SUBJECT_TYPE, str(run.pk)))
        events = [e for e in collected.events
                  if (e.target_type, e.target_id) in refs or (e.data or {}).get("turn") == str(t.pk)]
        records.append(TurnRecord(turn=t, run=run, review_items=items, events=events))
    return records


def _record_of(conversation: Conversation) -> ConversationRecord:
    collected = _collect([conversation])
    return ConversationRecord(conversation=conversation, messages=collected.messages,
                              turns=_turn_records(collected), runs=collected.runs,
                              review_items=collected.items, events=collected.events)


def conversation_record_open(*, actor, conversation_id) -> ConversationRecord:
    """The full record of a conversation, read and logged (``compliance.viewed``) in one
    transaction. Raises ``Conversation.DoesNotExist`` (nothing logged) for an unknown id."""
    _require(actor)
    with transaction.atomic(durable=True):
        conversation = Conversation.objects.select_related("contact", "assigned_agent").get(pk=conversation_id)
        record = _record_of(conversation)
        audit_event_record(actor=actor, action="compliance.viewed", target=conversation,
                           data={"view": "conversation_record", "conversation": str(conversation.pk)})
    return record


def turn_record_open(*, actor, turn_id) -> tuple[TurnRecord, ConversationRecord]:
    """The decision record of one turn (and its conversation's record), read and logged
    (``compliance.viewed``, target the turn). Raises ``Turn.DoesNotExist`` for an unknown id."""
    _require(actor)
    with transaction.atomic(durable=True):
        conversation_id = Turn.objects.values_list("conversation_id", flat=True).get(pk=turn_id)
        conversation = Conversation.objects.select_related("contact", "assigned_agent").get(pk=conversation_id)
        record = _record_of(conversation)
        turn_record = next(t for t in record.turns if str(t.turn.pk) == str(turn_id))
        audit_event_record(actor=actor, action="compliance.viewed", target=turn_record.turn,
                           data={"view": "decision_record", "conversation": str(conversation.pk),
                                 "turn": str(turn_record.turn.pk)})
    return turn_record, record


# --- evidence bundles ------------------------------------------------------------------------

class ExportRefused(Exception):
    """An export that is not made (too wide, too many conversations, bad filters)."""

    def __init__(self, message: str, *, errors: dict | None = None):
        super().__init__(message)
        self.message = message
        self.errors = errors or {}


@dataclass(frozen=True)
class ExportScope:
    """One conversation, or the conversations matching date-range filters."""

    conversation_id: Any = None
    filters: dict | None = None

    @property
    def kind(self) -> str:
        return "conversation" if self.conversation_id else "date_range"


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _user(user) -> str | None:
    return user.get_username() if user is not None else None


def _conversation_dict(c: Conversation) -> dict:
    contact = c.contact
    return {
        "id": str(c.pk), "created_at": _iso(c.created_at), "updated_at": _iso(c.updated_at),
        "channel": c.channel, "status": c.status, "resolution": c.resolution, "ai_disclosed": c.ai_disclosed,
        "closed_at": _iso(c.closed_at), "summary": c.summary, "assigned_agent": _user(c.assigned_agent),
        "csat": {"score": c.csat_score, "comment": c.csat_comment, "requested_at": _iso(c.csat_requested_at),
                 "submitted_at": _iso(c.csat_submitted_at)},
        "contact": {"id": str(contact.pk), "name": contact.name, "email": contact.email,
                    "external_id": contact.external_id},
    }


def _message_dict(m: Message) -> dict:
    return {
        "id": str(m.pk), "seq": m.seq, "role": m.role, "created_at": _iso(m.created_at),
        "text": m.redacted_text or m.text, "text_redacted": bool(m.redacted_text), "author": _user(m.author),
        "sources": m.sources, "data": m.data,
    }


def _model_version_dict(v: ModelVersion | None) -> dict | None:
    if v is None:
        return None
    return {"id": str(v.pk), "name": v.name, "provider": v.provider, "model_name": v.model_name,
            "endpoint": v.endpoint, "status": v.status}


def _prompt_version_dict(v: PromptVersion | None) -> dict | None:
    if v is None:
        return None
    return {"id": str(v.pk), "name": v.name, "version": v.version, "status": v.status,
            "template_sha256": hashlib.sha256(v.template.encode("utf-8")).hexdigest()}


def _turn_dict(r: TurnRecord) -> dict:
    t = r.turn
    return {
        "id": str(t.pk), "created_at": _iso(t.created_at), "status": t.status, "message_id": str(t.message_id),
        "input": r.input_text, "input_redacted": r.input_redacted,
        "intent": t.intent, "confidence": t.confidence, "decision": t.decision, "reason": t.reason,
        "guards": t.guards, "sources": t.sources, "provider": t.provider,
        "model_version": _model_version_dict(t.model_version), "prompt_version": _prompt_version_dict(t.prompt_version),
        "tool_call": t.tool_call, "action_run_id": t.action_run_id,
        "review_item_ids": [str(i.pk) for i in r.review_items],
        "tokens_in": t.tokens_in, "tokens_out": t.tokens_out, "cost": str(t.cost),
        "latency_ms": t.latency_ms, "model_ms": t.model_ms, "ttft_ms": t.ttft_ms, "error": t.error,
        "reply_id": str(t.reply_id) if t.reply_id else None,
        "reply": t.reply.text if t.reply_id else None,
        "audit_seqs": [e.seq for e in r.events if e.target_type == TURN_TYPE and e.target_id == str(t.pk)],
    }


def _run_dict(run: ActionRun) -> dict:
    return {
        "id": str(run.pk), "created_at": _iso(run.created_at), "action": run.action.name,
        "action_title": run.action.title, "risk_level": run.action.risk_level, "status": run.status,
        "params": run.params, "idempotency_key": run.idempotency_key, "requires_approval": run.requires_approval,
        "approvals_required": run.approvals_required, "proposed_by": _user(run.proposed_by) or "assistant",
        "approved_by": _user(run.approved_by), "attempts": run.attempts, "result": run.result, "error": run.error,
        "http_status": run.http_status, "finished_at": _iso(run.finished_at),
        "compensation_of": str(run.compensation_of_id) if run.compensation_of_id else None,
        "approvals": [{"approver": _user(a.approver), "params": a.params, "edited": a.edited,
                       "voided_at": _iso(a.voided_at), "created_at": _iso(a.created_at)} for a in run.approvals.all()],
        "events": [{"from": e.from_status, "to": e.to_status, "actor": e.actor_label, "data": e.data,
                    "created_at": _iso(e.created_at)} for e in run.events.all()],
    }


def _item_dict(item: ReviewItem) -> dict:
    return {
        "id": str(item.pk), "created_at": _iso(item.created_at), "kind": item.kind,
        "subject_type": item.subject_type, "subject_id": item.subject_id, "title": item.title,
        "summary": item.summary, "reason": item.reason, "priority": item.priority, "status": item.status,
        "team": item.team.name if item.team else None, "sla_due_at": _iso(item.sla_due_at),
        "sla_breached_at": _iso(item.sla_breached_at), "claimed_by": _user(item.claimed_by),
        "resolved_at": _iso(item.resolved_at), "outcome": item.outcome, "needed_human": item.needed_human,
        "data": item.data,
        "events": [{"kind": e.kind, "actor": _user(e.actor), "data": e.data, "created_at": _iso(e.created_at)}
                   for e in item.events.all()],
    }


def _json_ready(value):
    """What ``json.loads`` would give back for ``value`` (Decimals, UUIDs and dates as strings),
    so the digest recorded at export time is the digest of the file."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def _scope_conversations(scope: ExportScope) -> list[Conversation]:
    if scope.kind == "conversation":
        return [Conversation.objects.select_related("contact", "assigned_agent").get(pk=scope.conversation_id)]
    filters = scope.filters or {}
    start, end = filters.get("from"), filters.get("to")
    if not start or not end:
        raise ExportRefused("A date-range export needs both a start and an end date.")
    days = (end - start).days + 1
    if days > export_max_days():
        raise ExportRefused(f"The range covers {days} days; an export covers at most {export_max_days()} days. "
                            "Export a shorter range.")
    qs = conversation_search(filters=filters)
    ids = list(qs.values_list("pk", flat=True)[:export_max_conversations() + 1])
    if len(ids) > export_max_conversations():
        raise ExportRefused(f"More than {export_max_conversations()} conversations match; an export holds at most "
                            f"{export_max_conversations()}. Narrow the range or the filters.")
    return list(Conversation.objects.filter(pk__in=ids).select_related("contact", "assigned_agent")
                .order_by("created_at", "pk"))


def _bundle_build(*, actor, scope: ExportScope, conversations: list[Conversation], fmt: str) -> dict:
    collected = _collect(conversations, verify_links=False)
    records = _turn_records(collected)
    turns_by_conversation: dict[Any, list[TurnRecord]] = {}
    for r in records:
        turns_by_conversation.setdefault(r.turn.conversation_id, []).append(r)
    messages_by_conversation: dict[Any, list[Message]] = {}
    for m in collected.messages:
        messages_by_conversation.setdefault(m.conversation_id, []).append(m)
    runs_by_conversation: dict[str, list[ActionRun]] = {}
    for run in collected.runs:
        runs_by_conversation.setdefault(run.subject_id, []).append(run)
    run_conversation = {str(r.pk): r.subject_id for r in collected.runs}
    message_conversation = {str(m.pk): str(m.conversation_id) for m in collected.messages}
    items_by_conversation: dict[str, list[ReviewItem]] = {}
    for item in collected.items:
        owner = {SUBJECT_TYPE: item.subject_id, RUN_SUBJECT_TYPE: run_conversation.get(item.subject_id),
                 MESSAGE_TYPE: message_conversation.get(item.subject_id)}.get(item.subject_type)
        items_by_conversation.setdefault(owner, []).append(item)

    conversations_out = []
    for c in conversations:
        conversations_out.append({
            **_conversation_dict(c),
            "messages": [_message_dict(m) for m in messages_by_conversation.get(c.pk, [])],
            "turns": [_turn_dict(r) for r in turns_by_conversation.get(c.pk, [])],
            "action_runs": [_run_dict(r) for r in runs_by_conversation.get(str(c.pk), [])],
            "review_items": [_item_dict(i) for i in items_by_conversation.get(str(c.pk), [])],
        })
    audit = [event_as_dict(e) for e in collected.events]
    highest = max((e.seq for e in collected.events), default=None)
    scope_out: dict[str, Any] = {"kind": scope.kind}
    if scope.kind == "conversation":
        scope_out["conversation"] = str(scope.conversation_id)
    bundle = {
        "format": EVIDENCE_FORMAT,
        "generated_at": timezone.now().isoformat(),
        "generated_by": {"id": str(actor.pk), "username": actor.get_username(), "roles": sorted(user_roles(actor))},
        "requested_format": fmt,
        "scope": scope_out,
        "filters": _json_ready({k: v for k, v in (scope.filters or {}).items() if v not in ("", None)}),
        "limits": {"max_days": export_max_days(), "max_conversations": export_max_conversations()},
        "counts": {
            "conversations": len(conversations_out), "messages": len(collected.messages),
            "turns": len(records), "action_runs": len(collected.runs), "review_items": len(collected.items),
            "audit_events": len(audit),
        },
        "conversations": conversations_out,
        "audit": audit,
        "chain_proof": chain_proof_build(highest_seq=highest),
    }
    return _json_ready(bundle)


def evidence_export(*, actor, scope: ExportScope, fmt: str) -> dict:
    """Build the evidence bundle of ``scope`` and record ``compliance.exported`` (format, scope,
    counts, the bundle's SHA-256) in the same transaction; the bundle then carries that event as
    ``export_event``. Raises ``ExportRefused`` (nothing recorded) for a scope too wide, and
    ``Conversation.DoesNotExist`` for an unknown conversation."""
    _require(actor)
    if fmt not in FORMATS:
        raise ExportRefused(f"Unknown format {fmt!r}.")
    with transaction.atomic(durable=True):
        conversations = _scope_conversations(scope)
        bundle = _bundle_build(actor=actor, scope=scope, conversations=conversations, fmt=fmt)
        data = {"format": fmt, "bundle_format": EVIDENCE_FORMAT, "scope": bundle["scope"],
                "filters": bundle["filters"], "counts": bundle["counts"], "bundle_sha256": bundle_digest(bundle)}
        if scope.kind == "conversation":
            data["conversation"] = str(scope.conversation_id)
            target = conversations[0]
        else:
            data["conversations"] = [c["id"] for c in bundle["conversations"]]
            target = None
        event = audit_event_record(actor=actor, action="compliance.exported", target=target, data=data)
    bundle["export_event"] = event_as_dict(event)
    return bundle
