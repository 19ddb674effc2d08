"""Approving proposed actions: four eyes above an amount, never one's own proposal, edits
validated and voiding earlier approvals, stale pages refused, concurrent approvers.

Runs go to the demo backend over real HTTP; every refusal must leave the run, its events,
its approvals and the audit chain exactly as they were."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from governance.models import AuditEvent
from integrations.exceptions import (
    ActionStateError,
    ApprovalRefused,
    DuplicateApproval,
    InvalidParameters,
    OwnProposalApproval,
    StaleParameters,
)
from integrations.models import ActionApproval, ActionDefinition, ActionRun, RunStatus
from integrations.selectors import action_runs_with_approvals
from integrations.services import (
    action_run_approve,
    action_run_propose,
    action_run_reject,
    approvals_required_for,
)

pytestmark = pytest.mark.django_db

SMALL = {"order_id": "BW-10003", "amount": 40.0, "reason": "The zip broke after a week"}
LARGE = {**SMALL, "amount": 250.0}  # above the default ACTION_FOUR_EYES_ABOVE (100); order total 448.80


@pytest.fixture(autouse=True)
def _four_eyes_default(settings):
    # The tests state the default they rely on, whatever the environment running them says.
    settings.ACTION_FOUR_EYES_ABOVE = 100.0


@pytest.fixture
def refund(demo):
    return ActionDefinition.objects.get(name="refund_request")


@pytest.fixture
def agent(users):
    return users["agent"]


@pytest.fixture
def agent2(users):
    return users["agent2"]


@pytest.fixture
def supervisor(users):
    return users["supervisor"]


def _propose(action, params, key="test:1", **kwargs) -> ActionRun:
    with transaction.atomic():
        return action_run_propose(action=action, params=params, idempotency_key=key, **kwargs)


def _state(run: ActionRun) -> tuple:
    """Everything a refusal must leave alone."""
    run.refresh_from_db()
    approvals = list(ActionApproval.objects.filter(run=run).order_by("created_at")
                     .values_list("pk", "approver_id", "params", "edited", "voided_at"))
    events = list(run.events.order_by("created_at").values_list("pk", "from_status", "to_status", "data"))
    return (run.status, run.params, run.approvals_required, run.approved_by_id, run.attempts, run.updated_at,
            approvals, events, AuditEvent.objects.count())


def _approve(run, actor, capture, **kwargs) -> ActionRun:
    with capture(execute=True):
        action_run_approve(run_id=run.pk, actor=actor, **kwargs)
    run.refresh_from_db()
    return run


def _audit_actions(run) -> list[str]:
    return list(AuditEvent.objects.filter(target_id=str(run.pk)).order_by("seq").values_list("action", flat=True))


def _refused(run, capture, demo_backend, exc_type, match, **kwargs):
    """Call approve expecting a refusal; assert nothing changed and nothing was queued."""
    before = _state(run)
    counts = dict(demo_backend.execution_counts)
    with capture(execute=True) as callbacks:
        with pytest.raises(exc_type, match=match):
            action_run_approve(run_id=run.pk, **kwargs)
    assert callbacks == []
    assert _state(run) == before
    assert demo_backend.execution_counts == counts


# --- how many approvals ---------------------------------------------------------------------

@pytest.mark.parametrize(("rule", "setting", "amount", "needed"), [
    ({"rule": "always"}, 100.0, 40, 1),
    ({"rule": "always"}, 100.0, 100, 1),
    ({"rule": "always"}, 100.0, 100.01, 2),
    ({"rule": "always"}, 30.0, 40, 2),                               # the setting is the default
    ({"rule": "always"}, None, 5000, 1),                             # switched off globally
    ({"rule": "always", "four_eyes_above": 500}, 100.0, 250, 1),     # the rule overrides the setting
    ({"rule": "always", "four_eyes_above": 20}, None, 40, 2),
    ({"rule": "always", "four_eyes_above": None}, 100.0, 5000, 1),   # null: never for this action
    ({"rule": "above", "field": "amount", "threshold": 50}, 100.0, 40, 0),
    ({"rule": "above", "field": "amount", "threshold": 50}, 100.0, 60, 1),
    ({"rule": "above", "field": "amount", "threshold": 50}, 100.0, 150, 2),
    ({"rule": "never"}, 100.0, 5000, 0),
])
def test_approvals_required(refund, settings, rule, setting, amount, needed):
    settings.ACTION_FOUR_EYES_ABOVE = setting
    refund.approval_rule = rule
    assert approvals_required_for(action=refund, params={**SMALL, "amount": amount}) == needed


def test_four_eyes_needs_no_amount_field(demo):
    change_address = ActionDefinition.objects.get(name="change_address")
    assert approvals_required_for(action=change_address, params={"order_id": "BW-10001", "address": "x"}) == 1


def test_setting_default_applies_when_the_rule_says_nothing(refund, settings, agent, agent2, demo_backend,
                                                            django_capture_on_commit_callbacks):
    settings.ACTION_FOUR_EYES_ABOVE = 30.0
    assert "four_eyes_above" not in refund.approval_rule
    run = _propose(refund, SMALL)
    assert run.approvals_required == 2
    run = _approve(run, agent, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.AWAITING_APPROVAL
    run = _approve(run, agent2, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED


# --- below the threshold: one approval ------------------------------------------------------

def test_below_the_threshold_one_approval_runs_it(refund, agent, demo_backend, django_capture_on_commit_callbacks):
    run = _propose(refund, SMALL, key="turn:small")
    assert (run.status, run.approvals_required, run.approval_progress) == (
        RunStatus.AWAITING_APPROVAL, 1, "0 of 1 approval")
    run = _approve(run, agent, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED
    assert run.approved_by == agent
    assert demo_backend.execution_counts == {"turn:small": 1}
    [approval] = run.approvals.all()
    assert (approval.approver, approval.params, approval.edited, approval.voided_at) == (agent, SMALL, False, None)
    approved = run.events.get(to_status="approved")
    assert approved.data["progress"] == "1 of 1 approval"
    assert _audit_actions(run) == ["action_run.proposed", "action_run.awaiting_approval", "action_run.approved",
                                   "action_run.executing", "action_run.succeeded"]


# --- four eyes ------------------------------------------------------------------------------

def test_four_eyes_two_people_approve_and_it_runs_once(refund, agent, supervisor, demo_backend,
                                                       django_capture_on_commit_callbacks,
                                                       django_assert_num_queries):
    run = _propose(refund, LARGE, key="turn:large")
    assert (run.status, run.requires_approval, run.approvals_required) == (RunStatus.AWAITING_APPROVAL, True, 2)

    run = _approve(run, agent, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.AWAITING_APPROVAL
    assert run.approved_by is None
    assert demo_backend.execution_counts == {}
    partial = run.events.order_by("created_at").last()
    assert (partial.from_status, partial.to_status, partial.actor_label) == (
        "awaiting_approval", "awaiting_approval", "agent")
    assert partial.data["progress"] == "1 of 2 approvals"
    assert (partial.data["approvals_given"], partial.data["approvals_required"]) == (1, 2)
    audit = AuditEvent.objects.get(action="action_run.approval_added", target_id=str(run.pk))
    assert (audit.actor_label, audit.data["progress"], audit.data["params"]) == ("agent", "1 of 2 approvals", LARGE)

    # The "1 of 2" state reads from prefetched approvals without further queries.
    [listed] = action_runs_with_approvals(ActionRun.objects.filter(pk=run.pk))
    with django_assert_num_queries(0):
        assert (listed.approvals_given, listed.approvals_missing, listed.approval_progress) == (
            1, 1, "1 of 2 approvals")
        assert listed.approver_ids == {agent.pk}
        assert listed.current_approvals[0].approver.get_username() == "agent"

    run = _approve(run, supervisor, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED
    assert run.approved_by == supervisor
    assert run.result["amount"] == 250.0
    assert demo_backend.execution_counts == {"turn:large": 1}
    assert [(a.approver, a.params) for a in run.approvals.order_by("created_at")] == [
        (agent, LARGE), (supervisor, LARGE)]
    assert [e.to_status for e in run.events.order_by("created_at")] == [
        "proposed", "awaiting_approval", "awaiting_approval", "approved", "executing", "succeeded"]
    approved = run.events.get(to_status="approved")
    assert approved.data["approvers"] == ["agent", "supervisor"]
    assert approved.data["progress"] == "2 of 2 approvals"
    assert _audit_actions(run) == [
        "action_run.proposed", "action_run.awaiting_approval", "action_run.approval_added", "action_run.approved",
        "action_run.executing", "action_run.succeeded"]
    assert AuditEvent.objects.get(action="action_run.approved", target_id=str(run.pk)).actor_label == "supervisor"

    # Approving again after it ran is a state error and changes nothing.
    _refused(run, django_capture_on_commit_callbacks, demo_backend, ActionStateError,
             "succeeded, not awaiting approval", actor=agent)


def test_the_same_person_cannot_give_both_approvals(refund, agent, demo_backend, django_capture_on_commit_callbacks):
    run = _approve(_propose(refund, LARGE), agent, django_capture_on_commit_callbacks)
    _refused(run, django_capture_on_commit_callbacks, demo_backend, DuplicateApproval,
             "You already approved this; a second person must approve it.", actor=agent)
    # Sending the same parameters back is not an edit: still refused.
    _refused(run, django_capture_on_commit_callbacks, demo_backend, DuplicateApproval,
             "already approved", actor=agent, params=dict(LARGE))
    assert run.status == RunStatus.AWAITING_APPROVAL


def test_only_a_signed_in_person_approves(refund, demo_backend, django_capture_on_commit_callbacks):
    run = _propose(refund, SMALL)
    _refused(run, django_capture_on_commit_callbacks, demo_backend, ApprovalRefused, "signed-in person", actor=None)


# --- staff proposals ------------------------------------------------------------------------

def test_staff_proposal_records_who_proposed(refund, agent):
    run = _propose(refund, SMALL, actor=agent)
    assert run.proposed_by == agent
    assert run.events.get(to_status="proposed").actor_label == "agent"
    proposed = AuditEvent.objects.get(action="action_run.proposed", target_id=str(run.pk))
    assert (proposed.actor_id, proposed.actor_label) == (str(agent.pk), "agent")
    # The assistant's proposals name no one.
    assert _propose(refund, SMALL, key="test:2").proposed_by is None


def test_same_key_by_another_proposer_is_refused(refund, agent, agent2):
    _propose(refund, SMALL, key="office:1", actor=agent)
    assert _propose(refund, SMALL, key="office:1", actor=agent).proposed_by == agent
    with pytest.raises(InvalidParameters, match="different details"):
        _propose(refund, SMALL, key="office:1", actor=agent2)
    assert ActionRun.objects.count() == 1


def test_proposer_cannot_approve_their_own_proposal(refund, agent, agent2, demo_backend,
                                                    django_capture_on_commit_callbacks):
    run = _propose(refund, SMALL, key="office:own", actor=agent)
    _refused(run, django_capture_on_commit_callbacks, demo_backend, OwnProposalApproval,
             "You proposed this action", actor=agent)
    # Not with an edit either.
    _refused(run, django_capture_on_commit_callbacks, demo_backend, OwnProposalApproval,
             "someone else must approve", actor=agent, params={**SMALL, "amount": 20.0})
    run = _approve(run, agent2, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED
    assert demo_backend.execution_counts == {"office:own": 1}


def test_proposer_with_four_eyes_needs_two_others(refund, agent, agent2, supervisor, demo_backend,
                                                  django_capture_on_commit_callbacks):
    run = _propose(refund, LARGE, key="office:large", actor=agent)
    run = _approve(run, agent2, django_capture_on_commit_callbacks)
    _refused(run, django_capture_on_commit_callbacks, demo_backend, OwnProposalApproval, "proposed", actor=agent)
    run = _approve(run, supervisor, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED
    assert demo_backend.execution_counts == {"office:large": 1}


def test_proposer_may_withdraw_their_proposal(refund, agent):
    run = _propose(refund, SMALL, actor=agent)
    action_run_reject(run_id=run.pk, actor=agent, reason="Customer changed their mind")
    run.refresh_from_db()
    assert run.status == RunStatus.REJECTED
    assert AuditEvent.objects.get(action="action_run.rejected", target_id=str(run.pk)).actor_label == "agent"


def test_staff_proposal_below_every_rule_is_approved_at_once(demo, agent):
    order_status = ActionDefinition.objects.get(name="order_status")
    run = _propose(order_status, {"order_id": "BW-10002"}, actor=agent)
    assert (run.status, run.approvals_required, run.proposed_by) == (RunStatus.APPROVED, 0, agent)
    assert run.approval_progress == ""


# --- edits ----------------------------------------------------------------------------------

def test_edit_voids_earlier_approvals_and_counts_as_the_editors(refund, agent, agent2, supervisor, demo_backend,
                                                                django_capture_on_commit_callbacks):
    run = _approve(_propose(refund, LARGE, key="turn:edit"), agent, django_capture_on_commit_callbacks)
    edited = {**LARGE, "amount": 200.0}
    run = _approve(run, agent2, django_capture_on_commit_callbacks, params=edited)
    # agent approved 250, not 200: agent2's edit is one approval of 200; a second person must approve.
    assert run.status == RunStatus.AWAITING_APPROVAL
    assert run.params == edited
    assert demo_backend.execution_counts == {}
    first, second = run.approvals.order_by("created_at")
    assert (first.approver, first.params, first.voided_at is not None) == (agent, LARGE, True)
    assert (second.approver, second.params, second.edited, second.voided_at) == (agent2, edited, True, None)
    event = run.events.order_by("created_at").last()
    assert event.data["edited_from"] == LARGE and event.data["edited_to"] == edited
    assert event.data["voided_approvals"] == ["agent"]
    assert event.data["progress"] == "1 of 2 approvals"

    # The editor cannot give the second approval of their own edit; the first approver can, for the new values.
    _refused(run, django_capture_on_commit_callbacks, demo_backend, DuplicateApproval, "already approved",
             actor=agent2)
    run = _approve(run, agent, django_capture_on_commit_callbacks, expected_params=edited)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result["amount"] == 200.0
    assert demo_backend.execution_counts == {"turn:edit": 1}
    assert [(a.approver.username, a.voided_at is None) for a in run.approvals.order_by("created_at")] == [
        ("agent", False), ("agent2", True), ("agent", True)]


def test_edit_below_the_four_eyes_line_needs_one_approval(refund, agent, demo_backend,
                                                          django_capture_on_commit_callbacks):
    run = _propose(refund, LARGE, key="turn:lower")
    run = _approve(run, agent, django_capture_on_commit_callbacks, params=SMALL)
    assert run.status == RunStatus.SUCCEEDED
    assert run.approvals_required == 1
    assert demo_backend.execution_counts == {"turn:lower": 1}


def test_edit_above_the_four_eyes_line_needs_a_second_person(refund, agent, agent2, demo_backend,
                                                             django_capture_on_commit_callbacks):
    run = _propose(refund, SMALL, key="turn:raise")
    run = _approve(run, agent, django_capture_on_commit_callbacks, params=LARGE)
    assert (run.status, run.approvals_required, run.params) == (RunStatus.AWAITING_APPROVAL, 2, LARGE)
    run = _approve(run, agent2, django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED
    assert demo_backend.execution_counts == {"turn:raise": 1}


@pytest.mark.parametrize(("params", "message"), [
    ({**LARGE, "amount": "lots"}, "amount: 'lots' is not of type 'number'"),
    ({**LARGE, "order_id": "10003"}, "order_id: '10003' does not match"),
    ({"order_id": "BW-10003", "amount": 250.0}, "'reason' is a required property"),
    ({**LARGE, "iban": "DE00"}, "'iban' was unexpected"),
    (["BW-10003"], "JSON object"),
])
def test_invalid_edit_is_refused_and_changes_nothing(refund, agent, agent2, demo_backend,
                                                     django_capture_on_commit_callbacks, params, message):
    run = _approve(_propose(refund, LARGE), agent, django_capture_on_commit_callbacks)
    _refused(run, django_capture_on_commit_callbacks, demo_backend, InvalidParameters, message,
             actor=agent2, params=params)
    assert run.approvals.get().voided_at is None


# --- stale pages ----------------------------------------------------------------------------

def test_stale_params_are_refused(refund, agent, agent2, supervisor, demo_backend,
                                  django_capture_on_commit_callbacks):
    run = _propose(refund, LARGE, key="turn:stale")
    seen = dict(run.params)
    seen_hash = run.params_hash
    run = _approve(run, agent, django_capture_on_commit_callbacks, params={**LARGE, "amount": 300.0})
    # supervisor's page still shows 250.
    for kwargs in ({"expected_params": seen}, {"expected_params_hash": seen_hash},
                   {"expected_params": seen, "params": {**LARGE, "amount": 120.0}}):
        _refused(run, django_capture_on_commit_callbacks, demo_backend, StaleParameters,
                 "The parameters changed since you opened this; review them again.", actor=supervisor, **kwargs)
    # After a reload, the current values approve.
    run = _approve(run, supervisor, django_capture_on_commit_callbacks, expected_params_hash=run.params_hash)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result["amount"] == 300.0
    assert demo_backend.execution_counts == {"turn:stale": 1}


def test_params_hash_is_stable(refund):
    run = _propose(refund, LARGE)
    assert run.params_hash == ActionRun.objects.get(pk=run.pk).params_hash
    assert run.params_hash != _propose(refund, SMALL, key="test:2").params_hash


# --- decided runs ---------------------------------------------------------------------------

def test_rejected_run_cannot_be_approved_and_keeps_its_approvals(refund, agent, agent2, demo_backend,
                                                                 django_capture_on_commit_callbacks):
    run = _approve(_propose(refund, LARGE), agent, django_capture_on_commit_callbacks)
    action_run_reject(run_id=run.pk, actor=agent2, reason="Outside the return window")
    _refused(run, django_capture_on_commit_callbacks, demo_backend, ActionStateError, "rejected", actor=agent2)
    before = _state(run)
    with pytest.raises(ActionStateError, match="rejected"):
        action_run_reject(run_id=run.pk, actor=agent2, reason="Again")
    assert _state(run) == before
    assert run.approvals.get().approver == agent


# --- concurrency ----------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_two_approvers_at_once_approve_and_execute_exactly_once(refund, agent, agent2, demo_backend):
    """agent's approval holds the run's lock while agent2 approves; agent2 waits, then sees
    agent's approval and completes the run: one approved transition, one execution."""
    run = _propose(refund, LARGE, key="turn:race")
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first():
        try:
            with transaction.atomic():
                action_run_approve(run_id=run.pk, actor=agent)
                holding.set()
                release.wait(10)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            holding.set()
        finally:
            connection.close()

    def second():
        try:
            action_run_approve(run_id=run.pk, actor=agent2)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    t1 = threading.Thread(target=first)
    t1.start()
    assert holding.wait(10)
    t2 = threading.Thread(target=second)
    t2.start()
    # Wait until the second approver is blocked on the run's row lock.
    for _ in range(100):
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND datname = current_database()")
            if cursor.fetchone()[0]:
                break
        time.sleep(0.05)
    else:
        pytest.fail("the second approval never waited for the lock")
    release.set()
    t1.join(20)
    t2.join(20)
    assert errors == []
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.approved_by == agent2
    assert run.events.filter(to_status="approved").count() == 1
    assert run.events.filter(to_status="executing").count() == 1
    assert demo_backend.execution_counts == {"turn:race": 1}
    assert sorted(run.approvals.values_list("approver__username", flat=True)) == ["agent", "agent2"]
