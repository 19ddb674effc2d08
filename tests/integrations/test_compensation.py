"""The action catalogue (schema, approval rules, retry policy, compensation mapping) and
compensation over real HTTP against the demo backend: an address change undone by a second
address change back to the old address, through the normal approval policy."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from governance.models import AuditEvent
from integrations.connectors import connector_call
from integrations.exceptions import ActionStateError, InvalidParameters, OwnProposalApproval
from integrations.models import ActionDefinition, ActionRun, Connector, RunStatus
from integrations.services import (
    action_retry_countdown,
    action_run_approve,
    action_run_compensate,
    action_run_execute,
    action_run_propose,
    approvals_required_for,
)

pytestmark = pytest.mark.django_db

ORDER = "BW-10001"  # processing: its address can still change
NEW_ADDRESS = "Neue Strasse 5, 10115 Berlin, Germany"
ADDRESS = {"type": "string", "minLength": 10, "maxLength": 300}


@pytest.fixture
def connector(demo) -> Connector:
    return Connector.objects.get(name="brightwater-backend")


@pytest.fixture
def restore(connector) -> ActionDefinition:
    return ActionDefinition.objects.create(
        name="address_restore", title="Restore delivery address", description="Undo an address change.",
        connector=connector, path="/orders/{order_id}/address",
        parameters_schema={"type": "object", "properties": {"order_id": {"type": "string"}, "address": ADDRESS},
                           "required": ["order_id", "address"], "additionalProperties": False},
        approval_rule={"rule": "always"})


@pytest.fixture
def address_set(connector, restore) -> ActionDefinition:
    return ActionDefinition.objects.create(
        name="address_set", title="Set delivery address", description="Change an address, keeping the old one.",
        connector=connector, path="/orders/{order_id}/address",
        parameters_schema={"type": "object",
                           "properties": {"order_id": {"type": "string"}, "address": ADDRESS,
                                          "previous_address": ADDRESS},
                           "required": ["order_id", "address"], "additionalProperties": False},
        approval_rule={"rule": "never"}, compensation_action=restore,
        compensation_params={"order_id": "result.order_id", "address": "params.previous_address"})


def current_address(connector) -> str:
    _, order = connector_call(connector=connector, method="GET", path_template="/orders/{order_id}",
                              params={"order_id": ORDER}, idempotency_key="read")
    return order["shipping_address"]


@pytest.fixture
def changed(connector, address_set):
    """A succeeded address change, and the address it replaced."""
    old = current_address(connector)
    run = action_run_propose(action=address_set, params={"order_id": ORDER, "address": NEW_ADDRESS,
                                                         "previous_address": old}, idempotency_key="turn:1")
    run = action_run_execute(run_id=run.pk)
    assert run.status == RunStatus.SUCCEEDED and current_address(connector) == NEW_ADDRESS
    return run, old


def _snapshot(run: ActionRun) -> tuple:
    run.refresh_from_db()
    return run.status, run.events.count(), ActionRun.objects.count(), AuditEvent.objects.count()


def test_compensation_goes_through_approval_and_marks_the_original(
        changed, connector, users, demo_backend, django_capture_on_commit_callbacks):
    original, old = changed
    agent, supervisor = users["agent"], users["supervisor"]
    with django_capture_on_commit_callbacks(execute=True):
        compensating = action_run_compensate(run_id=original.pk, actor=agent, reason="The customer moved back")
    assert compensating.idempotency_key == f"compensate:{original.pk}"
    assert compensating.action.name == "address_restore"
    assert compensating.params == {"order_id": ORDER, "address": old}
    assert (compensating.status, compensating.proposed_by, compensating.compensation_of_id) == \
        (RunStatus.AWAITING_APPROVAL, agent, original.pk)
    original.refresh_from_db()
    assert original.status == RunStatus.SUCCEEDED  # not undone until the compensation succeeds
    requested = original.events.order_by("created_at").last()
    assert requested.data["reason"] == "The customer moved back"
    assert requested.data["compensation_run"] == str(compensating.pk)
    assert AuditEvent.objects.filter(action="action_run.compensation_requested", target_id=str(original.pk)).exists()
    assert current_address(connector) == NEW_ADDRESS

    # Asking again (a double click, another agent) returns the same proposal, changes nothing.
    before = _snapshot(original)
    assert action_run_compensate(run_id=original.pk, actor=supervisor, reason="again").pk == compensating.pk
    assert _snapshot(original) == before

    # The normal approval policy: never by the person who proposed it.
    with pytest.raises(OwnProposalApproval):
        action_run_approve(run_id=compensating.pk, actor=agent)
    with django_capture_on_commit_callbacks(execute=True):
        action_run_approve(run_id=compensating.pk, actor=supervisor)
    compensating.refresh_from_db()
    original.refresh_from_db()
    assert compensating.status == RunStatus.SUCCEEDED
    assert original.status == RunStatus.COMPENSATED
    last = original.events.order_by("created_at").last()
    assert (last.from_status, last.to_status, last.data["compensation_run"]) == \
        (RunStatus.SUCCEEDED, RunStatus.COMPENSATED, str(compensating.pk))
    assert AuditEvent.objects.filter(action="action_run.compensated", target_id=str(original.pk)).count() == 1
    assert current_address(connector) == old  # really undone, over HTTP
    counts = demo_backend.execution_counts
    assert counts["turn:1"] == 1 and counts[f"compensate:{original.pk}"] == 1

    # A compensated run cannot be compensated again, nor settled again.
    with pytest.raises(ActionStateError):
        action_run_compensate(run_id=compensating.pk, actor=supervisor, reason="undo the undo")


def test_a_compensation_that_needs_no_approval_runs_after_commit(changed, restore, connector, users,
                                                                 django_capture_on_commit_callbacks):
    original, old = changed
    restore.approval_rule = {"rule": "never"}
    restore.save()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        compensating = action_run_compensate(run_id=original.pk, actor=users["agent"], reason="Wrong address")
    assert callbacks, "execution is queued after commit"
    compensating.refresh_from_db()
    original.refresh_from_db()
    assert (compensating.status, original.status) == (RunStatus.SUCCEEDED, RunStatus.COMPENSATED)
    assert current_address(connector) == old


def test_a_failed_compensation_leaves_the_original_succeeded(changed, restore, users, demo_backend,
                                                             django_capture_on_commit_callbacks):
    original, _ = changed
    restore.approval_rule = {"rule": "never"}
    restore.compensation_params = {}
    restore.path = "/orders/BW-10002/address"  # shipped: the backend refuses with 409
    restore.save()
    with django_capture_on_commit_callbacks(execute=True):
        compensating = action_run_compensate(run_id=original.pk, actor=users["agent"], reason="Wrong address")
    compensating.refresh_from_db()
    original.refresh_from_db()
    assert compensating.status == RunStatus.FAILED and "already shipped" in compensating.error
    assert original.status == RunStatus.SUCCEEDED


@pytest.mark.parametrize("case", ["not_succeeded", "no_compensation", "missing_value", "no_reason"])
def test_refusals_change_nothing(case, changed, address_set, users):
    original, _ = changed
    message = {"not_succeeded": "Only a succeeded action can be undone; this one is awaiting approval.",
               "no_compensation": "has no compensation action",
               "missing_value": "Cannot compensate: the original run has no params.previous_address for address.",
               "no_reason": "Say why the action is being undone."}[case]
    target = original
    if case == "not_succeeded":
        address_set.approval_rule = {"rule": "always"}
        address_set.save()
        target = action_run_propose(action=address_set, params={"order_id": ORDER, "address": NEW_ADDRESS},
                                    idempotency_key="turn:2")
    elif case == "no_compensation":
        ActionDefinition.objects.filter(pk=address_set.pk).update(compensation_action=None)
    elif case == "missing_value":
        target = action_run_propose(action=address_set, params={"order_id": ORDER, "address": NEW_ADDRESS},
                                    idempotency_key="turn:3")
        target = action_run_execute(run_id=target.pk)
    before = _snapshot(target)
    with pytest.raises((ActionStateError, InvalidParameters), match=message):
        action_run_compensate(run_id=target.pk, actor=users["agent"], reason="" if case == "no_reason" else "x")
    assert _snapshot(target) == before


# --- the catalogue --------------------------------------------------------------------------------

def test_approval_by_parameter(address_set):
    address_set.approval_rule = {"rule": "param", "field": "address", "values": ["PO Box 1, 10115 Berlin"]}
    assert approvals_required_for(action=address_set, params={"order_id": ORDER, "address": " po box 1, 10115 berlin"}) == 1
    assert approvals_required_for(action=address_set, params={"order_id": ORDER, "address": NEW_ADDRESS}) == 0
    assert approvals_required_for(action=address_set, params={"order_id": ORDER}) == 0


def test_retry_policy_backoff(address_set):
    address_set.retry_backoff_s, address_set.retry_backoff_max_s = 2, 10
    assert [action_retry_countdown(action=address_set, retries=n) for n in range(5)] == [2, 4, 8, 10, 10]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("parameters_schema", {"type": "objekt"}, "Not a valid JSON Schema (type): 'objekt' is not valid"),
    ("parameters_schema", {"type": "object", "properties": {"a": {"minLength": -1}}},
     "Not a valid JSON Schema (properties/a/minLength)"),
    ("parameters_schema", {"type": "string"}, 'must be a JSON Schema of "type": "object"'),
    ("approval_rule", {"rule": "sometimes"}, "rule must be one of never, always, above, param"),
    ("approval_rule", {"rule": "param", "field": "address"}, '"param" needs "values"'),
    ("approval_rule", {"rule": "param", "field": "colour", "values": ["red"]}, "'colour' is not one of the action"),
    ("approval_rule", {"rule": "above", "field": "address"}, "needs a numeric threshold"),
    ("approval_rule", {"rule": "always", "four_eyes_above": "lots"}, "four_eyes_above must be a number or null"),
    ("approval_rule", {"rule": "never", "threshold": 3, "colour": 1}, "Unknown key(s): colour"),
    ("compensation_params", {"address": "old.address"}, 'read from "params.<name>" or "result.<name>"'),
    ("compensation_params", {"address": {"val": 1}}, 'a literal is written {"value": ...}'),
    ("retry_backoff_max_s", 0.5, "The longest wait cannot be shorter than the first one."),
])
def test_definition_validation(address_set, field, value, message):
    setattr(address_set, field, value)
    with pytest.raises(ValidationError) as exc:
        address_set.full_clean()
    assert message in " ".join(exc.value.message_dict.get(field, [])), exc.value.message_dict


def test_a_definition_cannot_compensate_itself(address_set):
    address_set.compensation_action = address_set
    with pytest.raises(ValidationError, match="An action cannot compensate itself."):
        address_set.full_clean()


def _form(action: ActionDefinition, **overrides) -> dict:
    data = {
        "name": action.name, "title": action.title, "description": action.description, "enabled": "on",
        "risk_level": action.risk_level, "connector": action.connector_id, "method": action.method,
        "path": action.path, "parameters_schema": json.dumps(action.parameters_schema), "timeout_s": "",
        "approval_rule": json.dumps(action.approval_rule), "max_attempts": action.max_attempts,
        "retry_backoff_s": action.retry_backoff_s, "retry_backoff_max_s": action.retry_backoff_max_s,
        "compensation_action": action.compensation_action_id or "",
        "compensation_params": json.dumps(action.compensation_params), "examples": "[]", "ask": "{}",
        "result_template": "",
    }
    data.update(overrides)
    return data


def test_the_admin_refuses_an_invalid_schema_and_rule(client, users, address_set):
    client.force_login(users["admin"])
    url = reverse("admin:integrations_actiondefinition_change", args=[address_set.pk])
    response = client.post(url, _form(address_set, parameters_schema='{"type": "object", "required": "order_id"}',
                                      approval_rule='{"rule": "param", "field": "address", "values": []}'))
    assert response.status_code == 200
    text = response.content.decode()
    assert "Not a valid JSON Schema (required): &#x27;order_id&#x27; is not of type &#x27;array&#x27;" in text
    assert "&quot;param&quot; needs &quot;values&quot;" in text
    address_set.refresh_from_db()
    assert address_set.parameters_schema["required"] == ["order_id", "address"]
    # A valid edit is stored: timeout override and an approval rule by parameter.
    response = client.post(url, _form(address_set, timeout_s="2.5", approval_rule=json.dumps(
        {"rule": "param", "field": "address", "values": ["PO Box 1, 10115 Berlin"]})))
    assert response.status_code == 302, response.content.decode()[:2000]
    address_set.refresh_from_db()
    assert address_set.timeout_s == 2.5 and address_set.approval_rule["rule"] == "param"


def test_the_action_list_page_query_count(client, users, address_set, django_assert_num_queries):
    client.force_login(users["admin"])
    url = reverse("admin:integrations_actiondefinition_changelist")
    client.get(url)
    # session, user, count, full count, the connectors of the filter, the actions with their
    # connector and compensation action
    with django_assert_num_queries(6):
        response = client.get(url)
    assert "Restore delivery address" in response.content.decode()


def test_the_demo_address_change_can_be_undone(demo, users, connector, django_capture_on_commit_callbacks):
    """The demo catalogue's change_address undoes itself: the backend answers with the previous
    address, which the compensation maps back."""
    change = ActionDefinition.objects.get(name="change_address")
    assert change.compensation_action == change
    old = current_address(connector)
    run = action_run_propose(action=change, params={"order_id": ORDER, "address": NEW_ADDRESS},
                             idempotency_key="turn:demo-address")
    with django_capture_on_commit_callbacks(execute=True):
        action_run_approve(run_id=run.pk, actor=users["agent"])
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.result["previous_address"] == old
    assert current_address(connector) == NEW_ADDRESS

    undo = action_run_compensate(run_id=run.pk, actor=users["agent2"], reason="Wrong street")
    assert (undo.status, undo.params) == (RunStatus.AWAITING_APPROVAL, {"order_id": ORDER, "address": old})
    with django_capture_on_commit_callbacks(execute=True):
        action_run_approve(run_id=undo.pk, actor=users["agent"])
    run.refresh_from_db()
    assert run.status == RunStatus.COMPENSATED and current_address(connector) == old
