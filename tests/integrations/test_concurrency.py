"""Twenty identical requests at the same moment: one run, one execution in the backend.

Real threads, each with its own database connection, against the demo backend over HTTP."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from integrations.models import ActionDefinition, ActionRun, RunStatus
from integrations.services import action_run_approve, action_run_execute, action_run_propose

pytestmark = pytest.mark.django_db(transaction=True)

REFUND = {"order_id": "BW-10003", "amount": 40.0, "reason": "The zip broke after a week"}
CLIENTS = 20


def _at_once(work) -> list:
    """Run ``work()`` in CLIENTS threads released together; return results or exceptions."""
    start = threading.Barrier(CLIENTS)
    results: list = [None] * CLIENTS

    def client(i):
        try:
            start.wait(timeout=30)
            results[i] = work()
        except Exception as exc:  # recorded for the assertions
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_twenty_identical_proposals_and_executions_run_once(demo, users, demo_backend):
    refund = ActionDefinition.objects.get(name="refund_request")

    def propose():
        with transaction.atomic():
            return action_run_propose(action=refund, params=dict(REFUND), idempotency_key="turn:twenty").pk

    proposed = _at_once(propose)
    assert not [r for r in proposed if isinstance(r, Exception)], proposed
    assert len(set(proposed)) == 1 and ActionRun.objects.filter(idempotency_key="turn:twenty").count() == 1
    run_id = proposed[0]

    action_run_approve(run_id=run_id, actor=users["agent"])  # commits; execution is below, by hand
    executed = _at_once(lambda: action_run_execute(run_id=run_id).status)
    assert not [r for r in executed if isinstance(r, Exception)], executed
    run = ActionRun.objects.get(pk=run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert demo_backend.execution_counts == {run.idempotency_key: 1}
    # Every caller saw the run settled or still executing under the winner, never a second call.
    assert set(executed) <= {RunStatus.SUCCEEDED, RunStatus.EXECUTING}
