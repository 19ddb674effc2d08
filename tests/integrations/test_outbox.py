"""The transactional outbox (config/outbox.py) and action execution through it.

Celery is eager here (config.settings.test), so "sending" runs the task in-process, as in the
embedded default; one test switches eagerness off to play a broker that refuses messages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery import shared_task
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from config.celery import app as celery_app
from config.models import OutboxMessage
from config.outbox import OutboxError, outbox_enqueue, outbox_relay
from integrations.models import ActionDefinition, ActionRun, Connector, RunStatus
from integrations.services import action_run_approve, action_run_propose

PROBE = "tests.outbox_probe"
probe_calls: list[str] = []


@shared_task(name=PROBE)
def outbox_probe(value: str) -> None:
    probe_calls.append(value)


@pytest.fixture(autouse=True)
def _probe_reset(settings):
    probe_calls.clear()
    settings.OUTBOX_RESEND_AFTER_S = 10
    settings.OUTBOX_LEASE_S = 120
    settings.OUTBOX_MAX_SENDS = 3


def _later(message: OutboxMessage, seconds: float) -> None:
    """Let ``seconds`` pass for the relay: move the message's timestamps that far into the past."""
    shift = timedelta(seconds=seconds)
    OutboxMessage.objects.filter(pk=message.pk).update(
        created_at=F("created_at") - shift, resend_at=F("resend_at") - shift,
        dispatched_at=F("dispatched_at") - shift, done_at=F("done_at") - shift)


def _enqueue_committed(capture, value: str, *, execute: bool) -> OutboxMessage:
    """Enqueue in a transaction that commits; ``execute=False`` plays a process that died
    right after the commit, before its on-commit hook could send anything."""
    with capture(execute=execute):
        with transaction.atomic():
            message = outbox_enqueue(PROBE, [value])
    message.refresh_from_db()
    return message


def test_enqueue_refuses_to_run_outside_a_transaction():
    with pytest.raises(OutboxError, match="inside the transaction"):
        outbox_enqueue(PROBE, ["x"])


@pytest.mark.django_db
def test_arguments_must_be_json():
    with transaction.atomic(), pytest.raises(OutboxError, match="JSON"):
        outbox_enqueue(PROBE, [object()])


@pytest.mark.django_db
def test_a_rolled_back_transaction_enqueues_nothing(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            outbox_enqueue(PROBE, ["rolled back"])
            raise RuntimeError("the caller's transaction fails")
    assert callbacks == []
    assert OutboxMessage.objects.count() == 0
    assert outbox_relay() == 0
    assert probe_calls == []


@pytest.mark.django_db
def test_a_committed_transaction_dispatches_once(django_capture_on_commit_callbacks):
    message = _enqueue_committed(django_capture_on_commit_callbacks, "committed", execute=True)
    assert probe_calls == ["committed"]
    assert message.sends == 1 and message.dispatched_at is not None
    assert message.done_at is not None  # the task_postrun handler saw it succeed
    _later(message, 3600)
    assert outbox_relay() == 0
    assert probe_calls == ["committed"]


@pytest.mark.django_db
def test_the_relay_sends_an_undispatched_message_after_the_delay_and_not_before(django_capture_on_commit_callbacks):
    message = _enqueue_committed(django_capture_on_commit_callbacks, "crashed", execute=False)
    assert message.dispatched_at is None and probe_calls == []

    assert outbox_relay() == 0  # just written: its own on-commit hook may still be sending it
    _later(message, 9)
    assert outbox_relay() == 0
    assert probe_calls == []

    _later(message, 2)
    assert outbox_relay() == 1
    assert probe_calls == ["crashed"]
    message.refresh_from_db()
    assert message.sends == 1 and message.done_at is not None
    _later(message, 3600)
    assert outbox_relay() == 0
    assert probe_calls == ["crashed"]


@pytest.mark.django_db
def test_a_dispatched_message_that_never_finished_is_sent_again_after_the_lease(django_capture_on_commit_callbacks):
    message = _enqueue_committed(django_capture_on_commit_callbacks, "killed", execute=False)
    # Sent, then the worker holding it was killed: dispatched, never done.
    OutboxMessage.objects.filter(pk=message.pk).update(dispatched_at=timezone.now(), sends=1,
                                                       resend_at=timezone.now() + timedelta(seconds=120))
    _later(message, 119)
    assert outbox_relay() == 0
    _later(message, 2)
    assert outbox_relay() == 1
    message.refresh_from_db()
    assert probe_calls == ["killed"] and message.sends == 2 and message.done_at is not None


@pytest.mark.django_db
def test_the_lease_doubles_with_every_send(django_capture_on_commit_callbacks, monkeypatch, settings):
    """A message still queued behind a backlog is not re-sent every lease, flooding the queue."""
    import config.outbox as outbox

    settings.OUTBOX_MAX_SENDS = 10
    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
    monkeypatch.setattr(outbox, "_publish", lambda task, args, headers: None)  # sent, never run
    message = _enqueue_committed(django_capture_on_commit_callbacks, "queued", execute=True)
    assert message.sends == 1
    for sends, lease in [(2, 120), (3, 240), (4, 480)]:
        _later(message, lease - 1)
        assert outbox_relay() == 0
        _later(message, 1)
        assert outbox_relay() == 1
        message.refresh_from_db()
        assert message.sends == sends


@pytest.mark.django_db
def test_a_message_that_never_finishes_is_given_up_after_the_maximum_sends(django_capture_on_commit_callbacks):
    message = _enqueue_committed(django_capture_on_commit_callbacks, "poison", execute=False)
    OutboxMessage.objects.filter(pk=message.pk).update(dispatched_at=timezone.now(), sends=3)
    _later(message, 3600)
    assert outbox_relay() == 0
    message.refresh_from_db()
    assert message.gave_up_at is not None and "gave up after 3 sends" in message.last_error
    assert probe_calls == []


@pytest.mark.django_db
def test_a_refused_send_leaves_the_message_to_the_relay(django_capture_on_commit_callbacks, monkeypatch):
    """The broker is down at commit: the committing request is not failed, the message stays
    undispatched with the reason, and the relay sends it once the broker is back."""
    import config.outbox as outbox

    published = []

    def broker_down(task, args, headers):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setitem(celery_app.conf, "task_always_eager", False)
    monkeypatch.setattr(outbox, "_publish", broker_down)
    message = _enqueue_committed(django_capture_on_commit_callbacks, "outage", execute=True)
    assert message.dispatched_at is None and message.sends == 0 and "broker down" in message.last_error

    _later(message, 11)
    assert outbox_relay() == 0  # still down: nothing counted, nothing lost
    message.refresh_from_db()
    assert message.dispatched_at is None and message.sends == 0 and message.gave_up_at is None

    monkeypatch.setattr(outbox, "_publish", lambda task, args, headers: published.append((task.name, args, headers)))
    assert outbox_relay() == 0  # the failed send was put back for the delay, not retried at once
    _later(message, 11)
    assert outbox_relay() == 1
    message.refresh_from_db()
    assert published == [(PROBE, ["outage"], {"tandem_outbox_id": str(message.pk)})]
    assert message.sends == 1 and message.dispatched_at is not None


# --- action execution through the outbox ---------------------------------------------------------

REFUND = {"order_id": "BW-10003", "amount": 12.5, "reason": "Outbox test refund"}


@pytest.fixture
def refund(db, demo_backend):
    demo_backend.reset()
    connector = Connector.objects.create(name="outbox-test-backend", base_url=demo_backend.url, timeout_s=5)
    return ActionDefinition.objects.create(
        name="outbox_test_refund", title="Refund", description="Refund part of an order.", connector=connector,
        method="POST", path="/refunds", approval_rule={"rule": "always", "four_eyes_above": None},
        parameters_schema={"type": "object", "required": ["order_id", "amount", "reason"],
                           "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"},
                                          "reason": {"type": "string"}}})


@pytest.fixture
def approver(db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(username="outbox-approver", password="x-approver-pass")


def _approved(refund, approver, capture, *, execute: bool, key: str) -> ActionRun:
    with transaction.atomic():
        run = action_run_propose(action=refund, params=REFUND, idempotency_key=key)
    with capture(execute=execute):
        action_run_approve(run_id=run.pk, actor=approver)
    run.refresh_from_db()
    return run


def test_approving_a_run_queues_its_execution_in_the_same_transaction(refund, approver, demo_backend,
                                                                      django_capture_on_commit_callbacks):
    run = _approved(refund, approver, django_capture_on_commit_callbacks, execute=True, key="outbox:approve")
    message = OutboxMessage.objects.get()
    assert (message.task_name, message.args) == ("integrations.execute_action_run", [str(run.pk)])
    assert run.status == RunStatus.SUCCEEDED and message.sends == 1 and message.done_at is not None
    assert demo_backend.execution_counts["outbox:approve"] == 1


def test_a_refused_approval_queues_nothing(refund, approver, demo_backend, django_capture_on_commit_callbacks):
    run = _approved(refund, approver, django_capture_on_commit_callbacks, execute=True, key="outbox:twice")
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(Exception, match="not awaiting approval"):
        action_run_approve(run_id=run.pk, actor=approver)
    assert OutboxMessage.objects.count() == 1


def test_duplicate_dispatch_executes_once(refund, approver, demo_backend, django_capture_on_commit_callbacks):
    """At least once in delivery, once in effect: the real task run twice more, and a relay
    re-send after the lease, reach the backend's side effect once."""
    from integrations.tasks import execute_action_run

    run = _approved(refund, approver, django_capture_on_commit_callbacks, execute=False, key="outbox:dup")
    assert run.status == RunStatus.APPROVED and demo_backend.execution_counts.get("outbox:dup") is None
    message = OutboxMessage.objects.get()

    execute_action_run.apply(args=[str(run.pk)])
    execute_action_run.apply(args=[str(run.pk)])
    _later(message, 600)
    assert outbox_relay() == 1
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.attempts == 1
    assert demo_backend.execution_counts["outbox:dup"] == 1


def test_a_run_interrupted_after_the_call_is_reconciled_not_repeated(refund, approver, demo_backend, monkeypatch,
                                                                    django_capture_on_commit_callbacks):
    """The worker dies after the backend acted but before the result was stored: the run stays
    executing; the next delivery asks again with the same key and records the replayed result."""
    import integrations.services as services
    from integrations.tasks import execute_action_run

    original = services._settle

    def killed(*args, **kwargs):
        raise SystemExit("worker killed mid-task")

    monkeypatch.setattr(services, "_settle", killed)
    with pytest.raises(SystemExit):
        _approved(refund, approver, django_capture_on_commit_callbacks, execute=True, key="outbox:killed")
    run = ActionRun.objects.get(idempotency_key="outbox:killed")
    assert run.status == RunStatus.EXECUTING and demo_backend.execution_counts["outbox:killed"] == 1
    message = OutboxMessage.objects.get()
    assert message.done_at is None

    monkeypatch.setattr(services, "_settle", original)
    execute_action_run.apply(args=[str(run.pk)])
    _later(message, 600)
    assert outbox_relay() == 1
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.attempts == 2
    assert run.events.filter(data__reconcile=True).count() == 1
    assert demo_backend.execution_counts["outbox:killed"] == 1


@pytest.mark.django_db
def test_the_relay_prunes_finished_messages_after_a_week(django_capture_on_commit_callbacks):
    old = _enqueue_committed(django_capture_on_commit_callbacks, "old", execute=True)
    recent = _enqueue_committed(django_capture_on_commit_callbacks, "recent", execute=True)
    unfinished = _enqueue_committed(django_capture_on_commit_callbacks, "unfinished", execute=False)
    OutboxMessage.objects.filter(pk=unfinished.pk).update(gave_up_at=timezone.now())
    _later(old, 8 * 86400)
    _later(unfinished, 8 * 86400)
    outbox_relay()
    assert set(OutboxMessage.objects.values_list("pk", flat=True)) == {recent.pk, unfinished.pk}
