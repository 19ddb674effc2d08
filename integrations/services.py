"""Writes of the integrations app: proposing, approving and executing action runs.

State machine: proposed → awaiting_approval → approved → executing → succeeded / failed,
or → rejected / expired. Every transition writes an ActionRunEvent and an audit event.
"""

from __future__ import annotations

import logging

import jsonschema
from django.db import transaction
from django.utils import timezone

from governance.services import audit_event_record
from integrations.connectors import connector_call
from integrations.exceptions import ActionStateError, ConnectorError, InvalidParameters
from integrations.models import TERMINAL_STATUSES, ActionDefinition, ActionRun, ActionRunEvent, RunStatus
from integrations.registry import run_settled_handlers

logger = logging.getLogger(__name__)


def action_params_validate(*, action: ActionDefinition, params: dict) -> dict:
    """Validate against the action's JSON Schema; the error names the field and the problem."""
    if not isinstance(params, dict):
        raise InvalidParameters("Parameters must be a JSON object.")
    validator = jsonschema.Draft202012Validator(action.parameters_schema,
                                                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.path) or "parameters"
        raise InvalidParameters(f"{where}: {first.message}")
    return params


def approval_required(*, action: ActionDefinition, params: dict) -> bool:
    rule = (action.approval_rule or {}).get("rule", "always")
    if rule == "never":
        return False
    if rule == "above":
        value = params.get(action.approval_rule.get("field", "amount"))
        try:
            return float(value) > float(action.approval_rule.get("threshold", 0))
        except (TypeError, ValueError):
            return True
    return True


def _transition(run: ActionRun, to: str, *, actor=None, actor_label: str = "", data: dict | None = None) -> None:
    previous = run.status
    run.status = to
    ActionRunEvent.objects.create(run=run, from_status=previous, to_status=to,
                                  actor_label=actor_label or (actor.get_username() if actor else "system"),
                                  data=data or {})
    audit_event_record(actor=actor or actor_label or None, action=f"action_run.{to}", target=run,
                       data={"action": run.action.name, "from": previous, **(data or {})})


def _notify_settled(run_id) -> None:
    for handler in run_settled_handlers():
        transaction.on_commit(lambda h=handler: h(str(run_id)))


def action_run_propose(*, action: ActionDefinition, params: dict, idempotency_key: str, subject_type: str = "",
                       subject_id: str = "", actor_label: str = "assistant") -> ActionRun:
    """Record a proposal. Runs inside the caller's transaction.

    The same key with the same parameters returns the stored run; with other parameters it
    is refused, as a payment API would."""
    if not action.enabled:
        raise InvalidParameters(f"The action {action.name} is switched off.")
    action_params_validate(action=action, params=params)
    existing = ActionRun.objects.filter(idempotency_key=idempotency_key).first()
    if existing:
        if existing.params != params or existing.action_id != action.pk:
            raise InvalidParameters("This request was already made with different details.")
        return existing
    needs_approval = approval_required(action=action, params=params)
    run = ActionRun.objects.create(action=action, params=params, idempotency_key=idempotency_key,
                                   subject_type=subject_type, subject_id=subject_id, requires_approval=needs_approval)
    ActionRunEvent.objects.create(run=run, from_status="", to_status=RunStatus.PROPOSED, actor_label=actor_label,
                                  data={"params": params})
    audit_event_record(actor=actor_label, action="action_run.proposed", target=run,
                       data={"action": action.name, "params": params, "requires_approval": needs_approval})
    _transition(run, RunStatus.AWAITING_APPROVAL if needs_approval else RunStatus.APPROVED, actor_label="policy",
                data={"rule": action.approval_rule})
    run.save(update_fields=["status", "updated_at"])
    return run


def action_run_approve(*, run_id, actor, params: dict | None = None) -> ActionRun:
    """A person approves (optionally with corrected parameters); execution is queued after commit."""
    from integrations.tasks import execute_action_run

    with transaction.atomic():
        run = ActionRun.objects.select_for_update().select_related("action").get(pk=run_id)
        if run.status != RunStatus.AWAITING_APPROVAL:
            raise ActionStateError(f"This action is {run.get_status_display().lower()}, not awaiting approval.")
        data = {}
        if params is not None and params != run.params:
            action_params_validate(action=run.action, params=params)
            data = {"edited_from": run.params, "edited_to": params}
            run.params = params
        run.approved_by = actor
        _transition(run, RunStatus.APPROVED, actor=actor, data=data)
        run.save(update_fields=["status", "params", "approved_by", "updated_at"])
        transaction.on_commit(lambda: execute_action_run.delay(str(run.pk)))
    return run


def action_run_reject(*, run_id, actor, reason: str) -> ActionRun:
    if not reason.strip():
        raise ActionStateError("Say why the action is rejected; the customer is told.")
    with transaction.atomic():
        run = ActionRun.objects.select_for_update().select_related("action").get(pk=run_id)
        if run.status != RunStatus.AWAITING_APPROVAL:
            raise ActionStateError(f"This action is {run.get_status_display().lower()}, not awaiting approval.")
        run.error = reason.strip()
        run.finished_at = timezone.now()
        _transition(run, RunStatus.REJECTED, actor=actor, data={"reason": reason.strip()})
        run.save(update_fields=["status", "error", "finished_at", "updated_at"])
        _notify_settled(run.pk)
    return run


def action_run_execute(*, run_id, final_attempt: bool = True) -> ActionRun:
    """Call the backend for an approved run, exactly once in effect.

    The run is marked executing and committed before the call, so a crash mid-call leaves
    it executing; running this again asks the backend with the same idempotency key, which
    answers with the stored result instead of repeating the effect (reconciliation).
    Raises ConnectorError when a retryable failure should be retried by the caller."""
    with transaction.atomic(durable=True):
        run = ActionRun.objects.select_for_update().select_related("action__connector").get(pk=run_id)
        if run.status in TERMINAL_STATUSES or run.status not in (RunStatus.APPROVED, RunStatus.EXECUTING):
            return run
        run.attempts += 1
        if run.status == RunStatus.APPROVED:
            _transition(run, RunStatus.EXECUTING, actor_label="worker", data={"attempt": run.attempts})
        else:
            ActionRunEvent.objects.create(run=run, from_status=run.status, to_status=run.status,
                                          actor_label="worker", data={"attempt": run.attempts, "reconcile": True})
        run.save(update_fields=["status", "attempts", "updated_at"])
    action = run.action
    try:
        status, payload = connector_call(connector=action.connector, method=action.method, path_template=action.path,
                                         params=run.params, idempotency_key=run.idempotency_key)
    except ConnectorError as exc:
        if exc.retryable and not final_attempt:
            logger.warning("action run %s attempt %s failed, will retry: %s", run.pk, run.attempts, exc)
            raise
        return _settle(run.pk, ok=False, error=str(exc), http_status=exc.status, result=exc.body)
    return _settle(run.pk, ok=True, result=payload, http_status=status)


def _settle(run_id, *, ok: bool, result: dict, http_status: int | None, error: str = "") -> ActionRun:
    with transaction.atomic(durable=True):
        run = ActionRun.objects.select_for_update().select_related("action").get(pk=run_id)
        if run.status in TERMINAL_STATUSES:
            return run
        run.result, run.http_status, run.error = result or {}, http_status, error
        run.finished_at = timezone.now()
        _transition(run, RunStatus.SUCCEEDED if ok else RunStatus.FAILED, actor_label="worker",
                    data={"http_status": http_status, "error": error})
        run.save(update_fields=["status", "result", "http_status", "error", "finished_at", "updated_at"])
        _notify_settled(run.pk)
    return run
