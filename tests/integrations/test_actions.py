"""Action runs against the demo backend over real HTTP: validation, approval, execution,
failures, retries and reconciliation."""

from __future__ import annotations

import socket

import pytest

from governance.models import AuditEvent
from integrations.exceptions import ActionStateError, ConnectorError, InvalidParameters
from integrations.models import ActionDefinition, ActionRun, ActionRunEvent, RunStatus
from integrations.services import (
    action_params_validate,
    action_run_approve,
    action_run_execute,
    action_run_propose,
    action_run_reject,
)

pytestmark = pytest.mark.django_db

REFUND = {"order_id": "BW-10003", "amount": 40.0, "reason": "The zip broke after a week"}


@pytest.fixture
def refund(demo):
    return ActionDefinition.objects.get(name="refund_request")


@pytest.fixture
def order_status(demo):
    return ActionDefinition.objects.get(name="order_status")


@pytest.fixture
def agent(users):
    return users["agent"]


@pytest.fixture
def closed_port_url():
    """A loopback URL nothing listens on: the backend is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _propose(action, params, key="test:1", **kwargs) -> ActionRun:
    return action_run_propose(action=action, params=params, idempotency_key=key, **kwargs)


def _state(run: ActionRun) -> tuple:
    run.refresh_from_db()
    return (run.status, run.params, run.attempts, run.approved_by_id, run.error, run.events.count(),
            AuditEvent.objects.count())


def _approve_and_execute(run, agent, django_capture_on_commit_callbacks, params=None) -> ActionRun:
    with django_capture_on_commit_callbacks(execute=True):
        action_run_approve(run_id=run.pk, actor=agent, params=params)
    run.refresh_from_db()
    return run


# --- parameter validation -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({**REFUND, "amount": -5}, "amount: -5 is less than or equal to the minimum of 0"),
        ({**REFUND, "amount": "forty"}, "amount: 'forty' is not of type 'number'"),
        ({**REFUND, "order_id": "10003"}, "order_id: '10003' does not match"),
        ({**REFUND, "reason": "no"}, "reason: 'no' is too short"),
        ({"order_id": "BW-10003", "amount": 40.0}, "'reason' is a required property"),
        ({**REFUND, "iban": "DE00"}, "('iban' was unexpected)"),
    ],
)
def test_schema_errors_name_the_field(refund, params, message):
    with pytest.raises(InvalidParameters) as exc:
        action_params_validate(action=refund, params=params)
    assert message in str(exc.value)
    # A proposal with the same parameters is refused and leaves no trace.
    with pytest.raises(InvalidParameters):
        _propose(refund, params)
    assert not ActionRun.objects.exists()


def test_parameters_must_be_an_object(refund):
    with pytest.raises(InvalidParameters, match="JSON object"):
        action_params_validate(action=refund, params=["BW-10003"])


def test_email_format_is_checked(demo):
    lookup = ActionDefinition.objects.get(name="account_lookup")
    with pytest.raises(InvalidParameters, match="email: 'not-an-email' is not a 'email'"):
        action_params_validate(action=lookup, params={"email": "not-an-email"})


def test_disabled_action_cannot_be_proposed(refund):
    ActionDefinition.objects.filter(pk=refund.pk).update(enabled=False)
    refund.refresh_from_db()
    with pytest.raises(InvalidParameters, match="switched off"):
        _propose(refund, REFUND)
    assert not ActionRun.objects.exists()


# --- proposing ------------------------------------------------------------------------------

def test_propose_records_the_run_and_its_history(refund):
    run = _propose(refund, REFUND, subject_type="convo.conversation", subject_id="c-1")
    assert run.status == RunStatus.AWAITING_APPROVAL
    assert run.requires_approval
    assert [(e.from_status, e.to_status) for e in run.events.order_by("created_at")] == [
        ("", "proposed"), ("proposed", "awaiting_approval")]
    actions = list(AuditEvent.objects.filter(target_id=str(run.pk)).order_by("seq").values_list("action", flat=True))
    assert actions == ["action_run.proposed", "action_run.awaiting_approval"]


def test_same_key_and_params_return_the_same_run(refund):
    first = _propose(refund, REFUND, key="turn:abc")
    second = _propose(refund, dict(REFUND), key="turn:abc")
    assert second.pk == first.pk
    assert ActionRun.objects.count() == 1
    assert ActionRunEvent.objects.filter(run=first).count() == 2


def test_same_key_with_other_params_is_refused(refund):
    first = _propose(refund, REFUND, key="turn:abc")
    before = _state(first)
    with pytest.raises(InvalidParameters, match="different details"):
        _propose(refund, {**REFUND, "amount": 400.0}, key="turn:abc")
    assert ActionRun.objects.count() == 1
    assert _state(first) == before
    assert first.params == REFUND


def test_same_key_for_another_action_is_refused(refund, order_status):
    _propose(order_status, {"order_id": "BW-10003"}, key="turn:abc")
    with pytest.raises(InvalidParameters):
        _propose(refund, {"order_id": "BW-10003"}, key="turn:abc")


# --- approval rules -------------------------------------------------------------------------

def test_rule_never_is_approved_at_once(order_status):
    run = _propose(order_status, {"order_id": "BW-10002"})
    assert run.status == RunStatus.APPROVED
    assert not run.requires_approval


def test_rule_always_waits_for_a_person(refund):
    run = _propose(refund, {**REFUND, "amount": 0.01})
    assert run.status == RunStatus.AWAITING_APPROVAL
    assert run.requires_approval


@pytest.mark.parametrize(("amount", "status"), [
    (49.99, RunStatus.APPROVED),
    (50, RunStatus.APPROVED),
    (50.01, RunStatus.AWAITING_APPROVAL),
    (300, RunStatus.AWAITING_APPROVAL),
])
def test_rule_above_a_threshold(refund, amount, status):
    small_refund = ActionDefinition.objects.create(
        name="small_refund", title="Small refund", description="Refunds up to 50 EUR without approval.",
        connector=refund.connector, method="POST", path="/refunds", parameters_schema=refund.parameters_schema,
        approval_rule={"rule": "above", "field": "amount", "threshold": 50},
    )
    run = _propose(small_refund, {**REFUND, "amount": amount})
    assert run.status == status
    assert run.requires_approval == (status == RunStatus.AWAITING_APPROVAL)


def test_missing_rule_means_approval(refund):
    ActionDefinition.objects.filter(pk=refund.pk).update(approval_rule={})
    refund.refresh_from_db()
    assert _propose(refund, REFUND).status == RunStatus.AWAITING_APPROVAL


# --- approve, execute, reject -------------------------------------------------------------

def test_approve_executes_once_at_the_backend(refund, agent, demo_backend, django_capture_on_commit_callbacks):
    run = _propose(refund, REFUND, key="turn:approve-1")
    assert demo_backend.execution_counts == {}
    run = _approve_and_execute(run, agent, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED
    assert run.approved_by == agent
    assert run.http_status == 201
    assert run.result["refund_id"].startswith("RF-")
    assert run.result["amount_display"] == "40.00 EUR"
    assert run.attempts == 1
    assert run.finished_at is not None
    assert demo_backend.execution_counts == {"turn:approve-1": 1}
    assert [e.to_status for e in run.events.order_by("created_at")] == [
        "proposed", "awaiting_approval", "approved", "executing", "succeeded"]
    approved = AuditEvent.objects.get(action="action_run.approved", target_id=str(run.pk))
    assert approved.actor_label == "agent"


def test_approve_with_corrected_params(refund, agent, demo_backend, django_capture_on_commit_callbacks):
    run = _propose(refund, REFUND, key="turn:edit")
    run = _approve_and_execute(run, agent, django_capture_on_commit_callbacks, params={**REFUND, "amount": 25.5})
    assert run.status == RunStatus.SUCCEEDED
    assert run.params["amount"] == 25.5
    assert run.result["amount"] == 25.5
    edit = run.events.get(to_status="approved")
    assert edit.data["edited_from"]["amount"] == 40.0


def test_approve_with_params_that_break_the_schema_changes_nothing(refund, agent, demo_backend,
                                                                    django_capture_on_commit_callbacks):
    run = _propose(refund, REFUND)
    before = _state(run)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(InvalidParameters, match="amount"):
            action_run_approve(run_id=run.pk, actor=agent, params={**REFUND, "amount": "lots"})
    assert callbacks == []
    assert _state(run) == before
    assert demo_backend.execution_counts == {}


def test_approving_twice_is_refused_and_changes_nothing(refund, agent, demo_backend,
                                                        django_capture_on_commit_callbacks):
    run = _approve_and_execute(_propose(refund, REFUND, key="turn:twice"), agent, django_capture_on_commit_callbacks)
    before = _state(run)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(ActionStateError, match="succeeded, not awaiting approval"):
            action_run_approve(run_id=run.pk, actor=agent)
    assert callbacks == []
    assert _state(run) == before
    assert demo_backend.execution_counts == {"turn:twice": 1}


def test_approving_a_rejected_run_is_refused(refund, agent, demo_backend, django_capture_on_commit_callbacks):
    run = _propose(refund, REFUND)
    action_run_reject(run_id=run.pk, actor=agent, reason="Outside the return window")
    before = _state(run)
    assert before[0] == RunStatus.REJECTED
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(ActionStateError, match="rejected"):
            action_run_approve(run_id=run.pk, actor=agent)
    assert _state(run) == before
    assert demo_backend.execution_counts == {}


def test_reject_records_the_reason(refund, agent):
    run = _propose(refund, REFUND)
    action_run_reject(run_id=run.pk, actor=agent, reason="  Outside the return window ")
    run.refresh_from_db()
    assert run.status == RunStatus.REJECTED
    assert run.error == "Outside the return window"
    assert run.finished_at is not None
    assert AuditEvent.objects.get(action="action_run.rejected", target_id=str(run.pk)).data["reason"] == \
        "Outside the return window"


@pytest.mark.parametrize("reason", ["", "   "])
def test_reject_needs_a_reason(refund, agent, reason):
    run = _propose(refund, REFUND)
    before = _state(run)
    with pytest.raises(ActionStateError, match="Say why"):
        action_run_reject(run_id=run.pk, actor=agent, reason=reason)
    assert _state(run) == before
    assert run.status == RunStatus.AWAITING_APPROVAL


def test_rejecting_a_decided_run_is_refused(refund, agent):
    run = _propose(refund, REFUND)
    action_run_reject(run_id=run.pk, actor=agent, reason="No")
    before = _state(run)
    with pytest.raises(ActionStateError):
        action_run_reject(run_id=run.pk, actor=agent, reason="Again")
    assert _state(run) == before


def test_execute_ignores_runs_that_are_not_approved(refund):
    run = _propose(refund, REFUND)
    before = _state(run)
    assert action_run_execute(run_id=run.pk).status == RunStatus.AWAITING_APPROVAL
    assert _state(run) == before


# --- failures -------------------------------------------------------------------------------

def test_backend_4xx_fails_with_its_message_and_is_not_retried(refund, agent, demo_backend,
                                                                 django_capture_on_commit_callbacks):
    run = _propose(refund, {**REFUND, "order_id": "BW-99999"}, key="turn:unknown-order")
    run = _approve_and_execute(run, agent, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED
    assert run.http_status == 404
    assert run.error == "Order BW-99999 does not exist."
    assert run.attempts == 1
    assert demo_backend.execution_counts == {}


def test_backend_limit_violation_fails_with_its_message(refund, agent, users, demo_backend,
                                                        django_capture_on_commit_callbacks):
    run = _propose(refund, {**REFUND, "amount": 5000.0}, key="turn:too-much")
    run = _approve_and_execute(run, agent, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.AWAITING_APPROVAL  # above ACTION_FOUR_EYES_ABOVE: a second person
    run = _approve_and_execute(run, users["supervisor"], django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED
    assert run.http_status == 422
    assert "can still be refunded on order BW-10003" in run.error
    assert run.result["code"] == "amount_exceeds_total"


def test_backend_down_is_retryable_until_the_final_attempt(refund, agent, demo_backend, monkeypatch,
                                                          closed_port_url):
    run = _propose(refund, REFUND, key="turn:down")
    action_run_approve(run_id=run.pk, actor=agent)  # on_commit never fires here: not executed yet
    monkeypatch.setenv("DEMO_BACKEND_URL", closed_port_url)

    with pytest.raises(ConnectorError) as exc:
        action_run_execute(run_id=run.pk, final_attempt=False)
    assert exc.value.retryable
    assert "could not be reached" in str(exc.value)
    run.refresh_from_db()
    assert (run.status, run.attempts, run.finished_at) == (RunStatus.EXECUTING, 1, None)

    run = action_run_execute(run_id=run.pk, final_attempt=True)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.attempts == 2
    assert run.error == "brightwater-backend could not be reached (ConnectError)"
    assert run.http_status is None
    assert demo_backend.execution_counts == {}


def test_eager_task_settles_a_down_backend_as_failed(refund, agent, demo_backend, monkeypatch, closed_port_url,
                                                     django_capture_on_commit_callbacks):
    """Eager Celery (tests, the embedded default) cannot back off: the first attempt is final,
    instead of a Retry exception reaching the approver and the run staying executing."""
    monkeypatch.setenv("DEMO_BACKEND_URL", closed_port_url)
    run = _propose(refund, REFUND, key="turn:task-down")
    run = _approve_and_execute(run, agent, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED
    assert run.attempts == 1
    assert "could not be reached" in run.error


def test_worker_task_retries_until_its_last_attempt(refund, agent, demo_backend, monkeypatch, closed_port_url):
    """On a worker, a retryable failure asks Celery to retry with the action's backoff; after
    the action's max_attempts the last one settles the run."""
    from celery.exceptions import Retry

    from integrations.services import action_retry_countdown
    from integrations.tasks import execute_action_run

    refund.max_attempts, refund.retry_backoff_s, refund.retry_backoff_max_s = 4, 1, 5
    refund.save(update_fields=["max_attempts", "retry_backoff_s", "retry_backoff_max_s"])
    monkeypatch.setenv("DEMO_BACKEND_URL", closed_port_url)
    run = _propose(refund, REFUND, key="turn:worker-down")
    action_run_approve(run_id=run.pk, actor=agent)
    retry_calls = []

    def fake_retry(*, exc, countdown, max_retries):  # the broker is outside the process
        retry_calls.append((str(exc), countdown, max_retries))
        return Retry(exc=exc, when=countdown)

    monkeypatch.setattr(execute_action_run, "retry", fake_retry)
    retries = refund.max_attempts - 1
    for attempt in range(retries):
        execute_action_run.push_request(retries=attempt, is_eager=False)
        try:
            with pytest.raises(Retry):
                execute_action_run.run(str(run.pk))
        finally:
            execute_action_run.pop_request()
        run.refresh_from_db()
        assert run.status == RunStatus.EXECUTING
    assert [countdown for _, countdown, _ in retry_calls] == [1, 2, 4]
    assert [countdown for _, countdown, _ in retry_calls] == [
        action_retry_countdown(action=refund, retries=n) for n in range(retries)]
    execute_action_run.push_request(retries=retries, is_eager=False)
    try:
        execute_action_run.run(str(run.pk))
    finally:
        execute_action_run.pop_request()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.attempts == refund.max_attempts


def test_backend_back_up_after_a_failed_attempt_succeeds(refund, agent, demo_backend, monkeypatch, closed_port_url):
    run = _propose(refund, REFUND, key="turn:flaky")
    action_run_approve(run_id=run.pk, actor=agent)
    with monkeypatch.context() as m:
        m.setenv("DEMO_BACKEND_URL", closed_port_url)
        with pytest.raises(ConnectorError):
            action_run_execute(run_id=run.pk, final_attempt=False)
    run = action_run_execute(run_id=run.pk, final_attempt=False)
    assert run.status == RunStatus.SUCCEEDED
    assert run.attempts == 2
    assert demo_backend.execution_counts == {"turn:flaky": 1}


# --- reconciliation -------------------------------------------------------------------------

def test_reconciling_a_run_left_executing_does_not_repeat_the_effect(refund, agent, demo_backend,
                                                                     django_capture_on_commit_callbacks):
    run = _approve_and_execute(_propose(refund, REFUND, key="turn:crash"), agent, django_capture_on_commit_callbacks)
    first_result = dict(run.result)
    assert demo_backend.execution_counts == {"turn:crash": 1}
    # The worker died after the backend answered but before the result was stored.
    ActionRun.objects.filter(pk=run.pk).update(status=RunStatus.EXECUTING, result={}, finished_at=None)

    run = action_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.attempts == 2
    assert run.result == first_result
    assert demo_backend.execution_counts == {"turn:crash": 1}
    reconcile = run.events.filter(data__reconcile=True).get()
    assert (reconcile.from_status, reconcile.to_status) == ("executing", "executing")


def test_executing_a_settled_run_again_does_nothing(refund, agent, demo_backend, django_capture_on_commit_callbacks):
    run = _approve_and_execute(_propose(refund, REFUND, key="turn:settled"), agent, django_capture_on_commit_callbacks)
    before = _state(run)
    action_run_execute(run_id=run.pk)
    assert _state(run) == before
    assert demo_backend.execution_counts == {"turn:settled": 1}


def test_read_action_runs_without_approval(order_status, demo_backend):
    run = action_run_execute(run_id=_propose(order_status, {"order_id": "BW-10002"}, key="turn:read").pk)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result["order_id"] == "BW-10002"
    assert run.result["status"] == "shipped"


def test_a_database_away_is_waited_for_without_using_the_actions_attempts(refund, agent, demo_backend, monkeypatch):
    """A database restart makes the task retry in a few seconds instead of failing its message;
    the run keeps all its attempts for the backend."""
    from celery.exceptions import Retry
    from django.db import OperationalError

    from integrations import tasks

    run = _propose(refund, REFUND, key="turn:db-away")
    action_run_approve(run_id=run.pk, actor=agent)
    calls = []

    def db_away(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    def fake_retry(*, exc, countdown, max_retries):  # the broker is outside the process
        calls.append((type(exc).__name__, countdown))
        return Retry(exc=exc, when=countdown)

    monkeypatch.setattr(tasks, "action_run_execute", db_away)
    monkeypatch.setattr(tasks.execute_action_run, "retry", fake_retry)
    tasks.execute_action_run.push_request(retries=0, is_eager=False)
    try:
        with pytest.raises(Retry):
            tasks.execute_action_run.run(str(run.pk))
    finally:
        tasks.execute_action_run.pop_request()
    [(kind, countdown)] = calls
    assert kind == "OperationalError" and 2 <= countdown <= 5
    run.refresh_from_db()
    assert (run.status, run.attempts) == (RunStatus.APPROVED, 0)
    assert demo_backend.execution_counts == {}
