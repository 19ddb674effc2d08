"""The audit chain: linked hashes, the append-only trigger, and tamper detection."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from governance.audit import GENESIS_HASH
from governance.models import AuditEvent
from governance.selectors import audit_chain_verify
from governance.services import audit_event_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain(django_user_model):
    """Four events by a person, by the system and about an object, appended in order."""
    user = django_user_model.objects.create_user(username="auditor", password="x-auditor-pass")
    with transaction.atomic():
        audit_event_record(actor=user, action="test.first", target=user, data={"n": 1})
        audit_event_record(action="test.second", data={"nested": {"b": 2, "a": [1, "x"]}})
        audit_event_record(actor="scheduler", action="test.third", target_type="x.y", target_id="42")
        audit_event_record(actor=user, action="test.fourth", data={"text": "Grüße €"})
    return list(AuditEvent.objects.order_by("seq"))


def _snapshot() -> list[tuple]:
    return list(AuditEvent.objects.order_by("seq").values_list("seq", "action", "data", "prev_hash", "hash"))


def _execute(sql: str, params=None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _tamper(sql: str, params=None) -> None:
    """What someone with direct database access could do after switching the trigger off."""
    _execute("ALTER TABLE governance_auditevent DISABLE TRIGGER USER")
    try:
        _execute(sql, params)
    finally:
        _execute("ALTER TABLE governance_auditevent ENABLE TRIGGER USER")


# --- the chain ----------------------------------------------------------------------------

def test_events_are_numbered_and_each_links_to_its_predecessor(chain):
    assert [e.seq for e in chain] == [1, 2, 3, 4]
    assert chain[0].prev_hash == GENESIS_HASH
    for previous, event in zip(chain, chain[1:]):
        assert event.prev_hash == previous.hash
    assert len({e.hash for e in chain}) == 4
    first, _, third, _ = chain
    assert (first.actor_label, first.target_type, first.target_id) == ("auditor", "auth.user", first.actor_id)
    assert (third.actor_id, third.actor_label, third.target_type, third.target_id) == ("", "scheduler", "x.y", "42")


def test_intact_chain_verifies(chain, capsys):
    report = audit_chain_verify()
    assert report.ok
    assert report.checked == 4
    assert report.first_broken_seq is None
    call_command("audit_verify")
    assert "audit chain intact: 4 events" in capsys.readouterr().out


def test_empty_chain_verifies():
    assert audit_chain_verify().ok
    assert audit_chain_verify().checked == 0


# --- the database refuses changes -----------------------------------------------------------

@pytest.mark.parametrize(
    ("sql", "operation"),
    [
        ("UPDATE governance_auditevent SET data = '{\"n\": 999}'::jsonb WHERE seq = 2", "UPDATE"),
        ("UPDATE governance_auditevent SET seq = seq + 100", "UPDATE"),
        ("DELETE FROM governance_auditevent WHERE seq = 4", "DELETE"),
        ("DELETE FROM governance_auditevent", "DELETE"),
        ("TRUNCATE governance_auditevent", "TRUNCATE"),
    ],
)
def test_trigger_refuses_raw_changes(chain, sql, operation):
    before = _snapshot()
    with pytest.raises(DatabaseError, match=rf"audit events are append-only \({operation} refused\)"):
        with transaction.atomic():
            _execute(sql)
    assert _snapshot() == before
    assert audit_chain_verify().ok


def test_trigger_refuses_orm_update_and_delete(chain):
    before = _snapshot()
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic():
            AuditEvent.objects.filter(seq=1).update(action="test.rewritten")
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic():
            chain[-1].delete()
    assert _snapshot() == before


# --- tamper detection (trigger switched off by a superuser) -------------------------------

def _assert_broken_at(seq: int, reason: str) -> None:
    report = audit_chain_verify()
    assert not report.ok
    assert report.first_broken_seq == seq
    assert reason in report.reason
    assert report.checked == seq - 1
    with pytest.raises(CommandError, match=rf"audit chain broken at seq {seq}"):
        call_command("audit_verify")


def test_edited_row_is_detected(chain):
    _tamper("UPDATE governance_auditevent SET data = '{\"nested\": {\"a\": [1, \"x\"], \"b\": 3}}'::jsonb "
            "WHERE seq = 2")
    _assert_broken_at(2, "content does not match its hash")


def test_edited_actor_is_detected(chain):
    _tamper("UPDATE governance_auditevent SET actor_label = 'someone-else' WHERE seq = 3")
    _assert_broken_at(3, "content does not match its hash")


def test_rehashed_row_still_breaks_the_next_link(chain):
    """Recomputing the edited row's own hash is not enough: the next row points at the old one."""
    from governance.audit import event_hash

    row = chain[1]
    forged = event_hash(seq=row.seq, prev_hash=row.prev_hash, occurred_at=row.occurred_at, actor_id=row.actor_id,
                        actor_label=row.actor_label, action="test.forged", target_type=row.target_type,
                        target_id=row.target_id, request_id=row.request_id, data=row.data)
    _tamper("UPDATE governance_auditevent SET action = 'test.forged', hash = %s WHERE seq = 2", [forged])
    _assert_broken_at(3, "previous-hash link is broken")


def test_deleted_row_is_detected(chain):
    _tamper("DELETE FROM governance_auditevent WHERE seq = 2")
    _assert_broken_at(2, "row seq 2 is missing")


def test_deleted_last_row_is_not_detectable_by_links_alone(chain):
    """Documenting the limit: truncating the tail leaves a valid (shorter) chain."""
    _tamper("DELETE FROM governance_auditevent WHERE seq = 4")
    report = audit_chain_verify()
    assert report.ok and report.checked == 3


def test_reordered_rows_are_detected(chain):
    # Swap rows 2 and 3 (in three steps: seq is unique).
    _tamper("UPDATE governance_auditevent SET seq = -2 WHERE seq = 2;"
            "UPDATE governance_auditevent SET seq = 2 WHERE seq = 3;"
            "UPDATE governance_auditevent SET seq = 3 WHERE seq = -2")
    assert list(AuditEvent.objects.order_by("seq").values_list("action", flat=True)) == [
        "test.first", "test.third", "test.second", "test.fourth"]
    _assert_broken_at(2, "previous-hash link is broken")


def test_trigger_is_back_on_after_tampering(chain):
    _tamper("UPDATE governance_auditevent SET action = 'x' WHERE seq = 1")
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic():
            _execute("DELETE FROM governance_auditevent WHERE seq = 1")


# --- recording is part of the act's transaction -------------------------------------------

@pytest.fixture
def flushable_db(transactional_db):
    """A transactional test database. Its flush can empty the append-only audit table
    (see ``pytest_configure`` in tests/conftest.py) and the role groups come back through
    governance's post_migrate handler."""
    yield


@pytest.mark.django_db(transaction=True)
def test_recording_outside_a_transaction_is_refused(flushable_db):
    assert not connection.in_atomic_block
    with pytest.raises(RuntimeError, match="inside the transaction"):
        audit_event_record(action="test.loose")
    assert AuditEvent.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_event_rolls_back_with_the_act(flushable_db):
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic():
            audit_event_record(action="test.doomed")
            1 / 0  # noqa: B018
    assert AuditEvent.objects.count() == 0
    with transaction.atomic():
        event = audit_event_record(action="test.kept")
    assert event.seq == 1
    assert audit_chain_verify().ok


def test_a_new_event_cannot_pose_as_a_purged_one(db):
    from governance.models import AuditEvent

    before = AuditEvent.objects.count()
    with pytest.raises(ValueError, match="reserved key '_purged'"), transaction.atomic():
        audit_event_record(action="test.forged", data={"_purged": {"digest": "0" * 64, "policy": "x", "at": "now"}})
    assert AuditEvent.objects.count() == before
