"""Writes of the integrations app: proposing, approving and executing action runs.

State machine: proposed → awaiting_approval → approved → executing → succeeded / failed,
or → rejected / expired; a succeeded run whose compensating run succeeded → compensated
(``action_run_compensate``). Every transition writes an ActionRunEvent and an audit event.

Approvals: a run awaiting approval needs ``approvals_required`` approvals (``ActionApproval``
rows) by different people, never by the person who proposed it; two ("four eyes") when its
amount is above the rule's ``four_eyes_above`` (default ``settings.ACTION_FOUR_EYES_ABOVE``).
A first of two approvals keeps the run awaiting approval (event awaiting → awaiting, audit
``action_run.approval_added``). Editing the parameters voids the approvals of the old ones and
counts as the editor's approval of the new ones.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from http import HTTPStatus

import jsonschema
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from governance.services import audit_event_record
from integrations.connectors import ProbeResult, connector_call, connector_probe, oauth_tokens_forget
from integrations.exceptions import (
    ActionStateError,
    ApprovalRefused,
    ConnectorError,
    DuplicateApproval,
    InvalidParameters,
    OwnProposalApproval,
    StaleParameters,
)
from integrations.models import (
    TERMINAL_STATUSES,
    ActionApproval,
    ActionDefinition,
    ActionRun,
    ActionRunEvent,
    Connector,
    ConnectorCall,
    RunStatus,
)
from integrations.registry import run_settled_handlers
from integrations.webhooks import action_run_webhook_emit

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
    if rule == "param":
        return _param_value_listed(params.get(action.approval_rule.get("field", "")),
                                   action.approval_rule.get("values") or [])
    return True


def four_eyes_required(*, action: ActionDefinition, params: dict) -> bool:
    """Whether two different people must approve: the rule's field above ``four_eyes_above``
    (or the ACTION_FOUR_EYES_ABOVE setting when the rule does not say; null means never)."""
    rule = action.approval_rule or {}
    threshold = rule["four_eyes_above"] if "four_eyes_above" in rule else settings.ACTION_FOUR_EYES_ABOVE
    if threshold is None:
        return False
    # A "param" rule's field is the listed parameter (e.g. a reason), not an amount.
    value = params.get("amount" if rule.get("rule") == "param" else rule.get("field", "amount"))
    if value is None:  # the action has no such field (e.g. an address change)
        return False
    try:
        return float(value) > float(threshold)
    except (TypeError, ValueError):
        return True  # an amount or threshold we cannot compare: ask for more eyes, not fewer


def approvals_required_for(*, action: ActionDefinition, params: dict) -> int:
    """0: runs without a person; 1: one approval; 2: two approvals by different people."""
    if not approval_required(action=action, params=params):
        return 0
    return 2 if four_eyes_required(action=action, params=params) else 1


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
                       subject_id: str = "", actor_label: str = "assistant", actor=None) -> ActionRun:
    """Record a proposal by the assistant (``actor`` None) or a staff member (``actor``). Runs
    inside the caller's transaction; does not execute (the caller does, as now).

    The same key with the same parameters (and proposer) returns the stored run; with other
    parameters it is refused, as a payment API would."""
    if not action.enabled:
        raise InvalidParameters(f"The action {action.name} is switched off.")
    action_params_validate(action=action, params=params)
    proposer_id = actor.pk if actor is not None else None

    def same_request(existing: ActionRun) -> ActionRun:
        if existing.params != params or existing.action_id != action.pk or existing.proposed_by_id != proposer_id:
            raise InvalidParameters("This request was already made with different details.")
        return existing

    existing = ActionRun.objects.filter(idempotency_key=idempotency_key).first()
    if existing:
        return same_request(existing)
    if actor is not None and actor_label == "assistant":
        actor_label = actor.get_username()
    required = approvals_required_for(action=action, params=params)
    needs_approval = required > 0
    try:
        # Concurrent identical requests: the unique key lets one insert win; the others wait
        # for it to commit, then get its run (as a payment API answers a replayed key).
        with transaction.atomic():
            run = ActionRun.objects.create(action=action, params=params, idempotency_key=idempotency_key,
                                           subject_type=subject_type, subject_id=subject_id,
                                           requires_approval=needs_approval, approvals_required=required,
                                           proposed_by=actor)
    except IntegrityError:
        return same_request(ActionRun.objects.get(idempotency_key=idempotency_key))
    ActionRunEvent.objects.create(run=run, from_status="", to_status=RunStatus.PROPOSED, actor_label=actor_label,
                                  data={"params": params})
    audit_event_record(actor=actor if actor is not None else actor_label, action="action_run.proposed", target=run,
                       data={"action": action.name, "params": params, "requires_approval": needs_approval,
                             "approvals_required": required})
    _transition(run, RunStatus.AWAITING_APPROVAL if needs_approval else RunStatus.APPROVED, actor_label="policy",
                data={"rule": action.approval_rule, "approvals_required": required})
    run.save(update_fields=["status", "updated_at"])
    return run


def _run_lock(run_id) -> ActionRun:
    # ``of=("self",)``: lock the run only, not the action definition joined in for reading.
    return ActionRun.objects.select_for_update(of=("self",)).select_related("action").get(pk=run_id)


def _ensure_awaiting_approval(run: ActionRun) -> None:
    if run.status != RunStatus.AWAITING_APPROVAL:
        raise ActionStateError(f"This action is {run.get_status_display().lower()}, not awaiting approval.")


def action_run_approve(*, run_id, actor, params: dict | None = None, expected_params: dict | None = None,
                       expected_params_hash: str = "") -> ActionRun:
    """A person approves the parameters they saw, optionally correcting them.

    ``expected_params`` (or ``expected_params_hash``, ``ActionRun.params_hash`` as the page
    showed it) are the parameters the approver's page displayed: if someone changed them since,
    the approval is refused (StaleParameters). ``params`` different from the stored ones is an
    edit: validated, it voids earlier approvals and counts as this person's approval of the
    new values. When enough different people have approved the current parameters the run is
    approved and its execution queued after commit; otherwise it stays awaiting approval.

    Refusals (ActionStateError and its ApprovalRefused kinds, InvalidParameters) change nothing.
    Runs in the caller's transaction when there is one (convo's view adds its review item);
    the execution is queued through the outbox in that transaction, so it runs iff it commits."""
    from integrations.tasks import execute_action_run_enqueue

    if actor is None or not getattr(actor, "is_authenticated", False):
        raise ApprovalRefused("Only a signed-in person can approve an action.")
    with transaction.atomic():
        run = _run_lock(run_id)
        _ensure_awaiting_approval(run)
        if run.proposed_by_id is not None and run.proposed_by_id == actor.pk:
            raise OwnProposalApproval("You proposed this action, so someone else must approve it. "
                                      "You can still withdraw it by rejecting it.")
        if (expected_params is not None and expected_params != run.params) or \
                (expected_params_hash and expected_params_hash != run.params_hash):
            raise StaleParameters("The parameters changed since you opened this; review them again.")
        live = list(run.approvals.filter(voided_at__isnull=True).select_related("approver").order_by("created_at"))
        edited = params is not None and params != run.params
        data: dict = {}
        if edited:
            action_params_validate(action=run.action, params=params)
            data = {"edited_from": run.params, "edited_to": params}
            if live:
                data["voided_approvals"] = [a.approver.get_username() for a in live]
                now = timezone.now()
                ActionApproval.objects.filter(pk__in=[a.pk for a in live]).update(voided_at=now, updated_at=now)
                live = []
            run.params = params
            # The edit may cross the four-eyes line either way; a person still approves it.
            run.approvals_required = max(1, approvals_required_for(action=run.action, params=params))
        elif any(a.approver_id == actor.pk for a in live):
            raise DuplicateApproval("You already approved this; a second person must approve it.")
        ActionApproval.objects.create(run=run, approver=actor, params=run.params, edited=edited)
        given, required = len(live) + 1, max(1, run.approvals_required)
        data.update({"params": run.params, "approvals_given": given, "approvals_required": required,
                     "approvers": [a.approver.get_username() for a in live] + [actor.get_username()],
                     "progress": f"{given} of {required} approval{'s' if required != 1 else ''}"})
        if given < required:
            ActionRunEvent.objects.create(run=run, from_status=run.status, to_status=run.status,
                                          actor_label=actor.get_username(), data=data)
            audit_event_record(actor=actor, action="action_run.approval_added", target=run,
                               data={"action": run.action.name, "from": run.status, **data})
            run.save(update_fields=["params", "approvals_required", "updated_at"])
            return run
        run.approved_by = actor
        _transition(run, RunStatus.APPROVED, actor=actor, data=data)
        run.save(update_fields=["status", "params", "approvals_required", "approved_by", "updated_at"])
        execute_action_run_enqueue(run.pk)
    return run


def action_run_reject(*, run_id, actor, reason: str) -> ActionRun:
    """A person rejects a run awaiting approval, with a reason the customer is told. The
    proposer may reject (withdraw) their own proposal; approvals given so far stay as history."""
    if not reason.strip():
        raise ActionStateError("Say why the action is rejected; the customer is told.")
    with transaction.atomic():
        run = _run_lock(run_id)
        _ensure_awaiting_approval(run)
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
                                         params=run.params, idempotency_key=run.idempotency_key,
                                         timeout=action.timeout_s)
    except ConnectorError as exc:
        if exc.retryable and not final_attempt:
            logger.warning("action run %s attempt %s failed, will retry: %s", run.pk, run.attempts, exc)
            raise
        return _settle(run.pk, ok=False, error=str(exc), http_status=exc.status, result=exc.body)
    if status == HTTPStatus.ACCEPTED:
        return _accepted(run.pk, result=payload)
    return _settle(run.pk, ok=True, result=payload, http_status=status)


def _accepted(run_id, *, result: dict) -> ActionRun:
    """The backend took the request and will report the outcome later (HTTP 202): the run stays
    executing until its inbound webhook settles it (``integrations.webhooks``), or until
    ``ACTION_ASYNC_RESULT_TIMEOUT_S`` passes (``action_runs_reconcile_stuck`` then fails it, so a
    person follows up). The customer is told nothing yet: nothing has happened yet."""
    with transaction.atomic(durable=True):
        run = ActionRun.objects.select_for_update().select_related("action").get(pk=run_id)
        if run.status != RunStatus.EXECUTING:
            return run
        run.result, run.http_status = result or {}, HTTPStatus.ACCEPTED
        ActionRunEvent.objects.create(run=run, from_status=run.status, to_status=run.status, actor_label="worker",
                                      data={"http_status": 202, "accepted": True, "result": run.result})
        audit_event_record(actor="worker", action="action_run.accepted", target=run,
                           data={"action": run.action.name, "result": run.result})
        run.save(update_fields=["result", "http_status", "updated_at"])
    return run


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
        if ok and run.compensation_of_id is not None:
            _compensated_mark(run)
        _notify_settled(run.pk)
        action_run_webhook_emit(run=run)
    return run


# --- Action catalogue: approval by parameter, retry policy -----------------------------------

def _param_value_listed(value, values: list) -> bool:
    """The "param" approval rule: is the parameter's value one of the listed ones? Strings
    compare without case or surrounding spaces ("Damaged" is "damaged"), so a person is asked
    rather than skipped over a capital letter."""
    def norm(v):
        return v.strip().casefold() if isinstance(v, str) else v

    return value is not None and norm(value) in {norm(v) for v in values}


def action_retry_countdown(*, action: ActionDefinition, retries: int) -> float:
    """Seconds to wait before retry number ``retries + 1``: the action's backoff base, doubled
    per retry, capped at its maximum (``retry_backoff_s``, ``retry_backoff_max_s``)."""
    return float(min(action.retry_backoff_s * (2 ** max(0, retries)), action.retry_backoff_max_s))


# --- Connectors: stored secrets, connection test, call records -------------------------------

def connector_secret_update(*, actor, connector_id, secret: str = "", clear: bool = False) -> Connector:
    """Store a connector's secret encrypted (``secret``), or remove it (``clear``); neither
    leaves the connector as it was. The audit event says what changed, never the value."""
    from integrations.connectors import secret_encrypt

    if not secret and not clear:
        return Connector.objects.get(pk=connector_id)
    with transaction.atomic():
        connector = Connector.objects.select_for_update().get(pk=connector_id)
        had = bool(connector.secret_encrypted)
        connector.secret_encrypted = secret_encrypt(secret) if secret else ""
        connector.save(update_fields=["secret_encrypted", "updated_at"])
        audit_event_record(actor=actor, action="connector.secret_set" if secret else "connector.secret_cleared",
                           target=connector, data={"connector": connector.name, "replaced": had and bool(secret)})
    if secret:
        oauth_tokens_forget()
    return connector


def connector_test(*, connector_id, actor) -> ProbeResult:
    """The "Test connection" button: call the health path with the connector's auth (outside
    any transaction), then audit the outcome. Returns status, latency or the error."""
    connector = Connector.objects.get(pk=connector_id)
    result = connector_probe(connector=connector)
    with transaction.atomic():
        audit_event_record(actor=actor, action="connector.tested", target=connector,
                           data={"connector": connector.name, "path": connector.health_path, "ok": result.ok,
                                 "status": result.status, "latency_ms": result.latency_ms, "error": result.error})
    return result


CONNECTOR_CALLS_KEEP = timedelta(days=7)


def connector_calls_prune(*, older_than: timedelta = CONNECTOR_CALLS_KEEP, batch_size: int = 5000) -> int:
    """Delete call records older than ``older_than`` in batches (short transactions, no long
    lock on a busy table); returns how many went."""
    cutoff = timezone.now() - older_than
    deleted = 0
    while True:
        ids = list(ConnectorCall.objects.filter(created_at__lt=cutoff).order_by("created_at")
                   .values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        deleted += ConnectorCall.objects.filter(pk__in=ids).delete()[0]


# --- Compensation ----------------------------------------------------------------------------------

def _dotted(source: dict, path: list[str]):
    value = source
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(part)
    return value


def compensation_params_build(*, run: ActionRun) -> dict:
    """The compensating run's parameters from the action's ``compensation_params`` mapping:
    ``"params.<path>"`` / ``"result.<path>"`` read the original run, ``{"value": x}`` is x."""
    params = {}
    for name, source in (run.action.compensation_params or {}).items():
        if isinstance(source, dict):
            params[name] = source.get("value")
            continue
        root, *path = str(source).split(".")
        try:
            params[name] = _dotted({"params": run.params, "result": run.result}.get(root, {}), path)
        except KeyError:
            raise InvalidParameters(f"Cannot compensate: the original run has no {source} for {name}.") from None
    return params


def action_run_compensate(*, run_id, actor, reason: str) -> ActionRun:
    """Undo a succeeded run: propose its action's compensation action (idempotency key
    ``compensate:<run id>``), which goes through the normal approval policy (and, proposed by
    ``actor``, cannot be approved by them). When that run succeeds the original becomes
    ``compensated`` (``_compensated_mark``). Asking again returns the compensating run already
    proposed. Refusals (ActionStateError, InvalidParameters) change nothing."""
    from integrations.tasks import execute_action_run_enqueue

    reason = (reason or "").strip()
    if not reason:
        raise ActionStateError("Say why the action is being undone.")
    with transaction.atomic():
        run = _run_lock(run_id)
        existing = ActionRun.objects.filter(compensation_of=run).first()
        if existing is not None:
            return existing
        if run.status != RunStatus.SUCCEEDED:
            raise ActionStateError(f"Only a succeeded action can be undone; this one is "
                                   f"{run.get_status_display().lower()}.")
        compensation = run.action.compensation_action
        if compensation is None:
            raise ActionStateError(f"{run.action.title} has no compensation action.")
        params = compensation_params_build(run=run)
        label = actor.get_username() if actor is not None and getattr(actor, "is_authenticated", False) else "system"
        person = actor if label != "system" else None
        compensating = action_run_propose(action=compensation, params=params, idempotency_key=f"compensate:{run.pk}",
                                          subject_type=run.subject_type, subject_id=run.subject_id,
                                          actor_label=label, actor=person)
        compensating.compensation_of = run
        compensating.save(update_fields=["compensation_of", "updated_at"])
        data = {"compensation_run": str(compensating.pk), "compensation_action": compensation.name,
                "params": params, "reason": reason}
        ActionRunEvent.objects.create(run=run, from_status=run.status, to_status=run.status, actor_label=label,
                                      data=data)
        audit_event_record(actor=person or label, action="action_run.compensation_requested", target=run,
                           data={"action": run.action.name, **data})
        if compensating.status == RunStatus.APPROVED:  # no approval needed: queued with this commit
            execute_action_run_enqueue(compensating.pk)
    return compensating


def _compensated_mark(compensating: ActionRun) -> None:
    """In the transaction that settles a compensating run as succeeded: the run it undoes
    becomes compensated (event and audit). Lock order: the compensating run, then the original."""
    original = ActionRun.objects.select_for_update(of=("self",)).select_related("action") \
        .get(pk=compensating.compensation_of_id)
    if original.status != RunStatus.SUCCEEDED:
        return
    _transition(original, RunStatus.COMPENSATED, actor_label="worker",
                data={"compensation_run": str(compensating.pk), "compensation_action": compensating.action.name})
    original.save(update_fields=["status", "updated_at"])


# --- Stuck runs: approved or executing with nothing queued to finish them ---------------------

def action_runs_reconcile_stuck(*, older_than_s: float = 60, batch_size: int = 100) -> int:
    """Queue the execution of runs left ``approved`` or ``executing`` with no live outbox message.

    A run that needs no approval is executed inline by the turn after its proposal commits, with
    no outbox message: a process that dies between that commit and the call leaves the run
    approved (or, mid-call, executing) and nothing would ever pick it up. Runs in those states
    not updated for ``older_than_s`` seconds whose ``integrations.execute_action_run`` message is
    missing, done or given up get one through the outbox, in one transaction; the task asks
    the backend with the run's idempotency key, so a run that did execute is reconciled, not
    repeated. Rows locked by someone else (a worker settling them) are skipped. Idempotent: a
    second sweep sees the live message and queues nothing. Returns how many were queued.

    Beat runs it every minute (``integrations.reconcile_stuck_runs``); the embedded default's
    ``manage.py outbox_relay`` loop runs it as well (registered in ``IntegrationsConfig.ready``)."""
    from config.models import OutboxMessage
    from integrations.tasks import EXECUTE_ACTION_RUN, execute_action_run_enqueue

    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than_s)
    # Accepted by the backend (202): waiting for its webhook, not stuck, until the timeout.
    waited_out = now - timedelta(seconds=settings.ACTION_ASYNC_RESULT_TIMEOUT_S)
    for run_id in ActionRun.objects.filter(status=RunStatus.EXECUTING, http_status=HTTPStatus.ACCEPTED,
                                           updated_at__lt=waited_out).values_list("pk", flat=True)[:batch_size]:
        logger.warning("action run %s: the backend accepted it but never reported the result", run_id)
        _settle(run_id, ok=False, http_status=None, result={},
                error="The backend accepted the request but did not report the result in time.")
    queued = 0
    with transaction.atomic():
        stuck = list(ActionRun.objects.select_for_update(skip_locked=True)
                     .filter(status__in=(RunStatus.APPROVED, RunStatus.EXECUTING), updated_at__lt=cutoff)
                     .exclude(http_status=HTTPStatus.ACCEPTED)
                     .order_by("updated_at").values_list("pk", flat=True)[:batch_size])
        for run_id in stuck:
            live = OutboxMessage.objects.filter(task_name=EXECUTE_ACTION_RUN, args=[str(run_id)],
                                                done_at__isnull=True, gave_up_at__isnull=True).exists()
            if live:
                continue
            logger.warning("action run %s is stuck with nothing queued to finish it: queueing its execution", run_id)
            execute_action_run_enqueue(run_id)
            queued += 1
    return queued


# --- Expiry: runs nobody approved in time ------------------------------------------------------

def action_runs_expire(*, now=None, batch_size: int = 500) -> int:
    """Expire runs awaiting approval for longer than ``settings.ACTION_APPROVAL_EXPIRES_HOURS``
    (by ``created_at``; 0 switches expiry off). Each goes to ``expired`` through ``_transition``
    (event and audit, by "policy"), with ``finished_at`` and the reason in ``error``; the settled
    handlers are told after commit, as for a rejection, so the customer hears of it. Rows locked
    by someone else (a person approving or rejecting them) are skipped; a run approved meanwhile
    is no longer awaiting approval. Idempotent. Returns how many expired.

    Beat runs it every 5 minutes (``integrations.expire_action_runs``); the embedded default's
    ``manage.py outbox_relay`` loop runs it as well (registered in ``IntegrationsConfig.ready``)."""
    hours = getattr(settings, "ACTION_APPROVAL_EXPIRES_HOURS", 72) or 0
    if hours <= 0:
        return 0
    now = now or timezone.now()
    cutoff = now - timedelta(hours=hours)
    reason = f"Not approved within {hours:g} hour{'' if hours == 1 else 's'}"
    expired = 0
    with transaction.atomic():
        runs = list(ActionRun.objects.select_for_update(of=("self",), skip_locked=True).select_related("action")
                    .filter(status=RunStatus.AWAITING_APPROVAL, created_at__lt=cutoff)
                    .order_by("created_at")[:batch_size])
        for run in runs:
            run.error = reason
            run.finished_at = now
            _transition(run, RunStatus.EXPIRED, actor_label="policy",
                        data={"reason": reason, "expires_hours": hours})
            run.save(update_fields=["status", "error", "finished_at", "updated_at"])
            _notify_settled(run.pk)
            expired += 1
    return expired
