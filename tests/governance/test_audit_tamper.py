"""Tamper detection: every single-row edit, deletion or reordering, a truncated tail and a
rewritten chain are reported by ``audit_verify``; checkpoints are signed and append-only."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.test import override_settings
from django.utils import timezone

from governance.audit import (
    AuditChainBroken,
    audit_checkpoint_create,
    chain_verify,
    checkpoint_key_check,
    checkpoint_signature,
    event_hash,
)
from governance.models import AuditCheckpoint, AuditEvent
from governance.services import audit_event_record
from governance.tasks import audit_checkpoint

pytestmark = pytest.mark.django_db

EVENTS = 6


@pytest.fixture
def chain(django_user_model):
    user = django_user_model.objects.create_user(username="auditor", password="x-auditor-pass")
    with transaction.atomic():
        for n in range(1, EVENTS + 1):
            audit_event_record(actor=user if n % 2 else "scheduler", action=f"test.event{n}", target=user,
                               data={"n": n, "nested": {"text": "Grüße €", "list": [n, "x"]}})
    return user


def _tamper(sql: str, params=None) -> None:
    """Direct database access with user triggers off for this statement only (SET LOCAL inside a
    savepoint, switched back before it is released: the test's own transaction goes on)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)
        cursor.execute("SET LOCAL session_replication_role = origin")


def _broken(seq: int, reason: str, *args: str) -> None:
    with pytest.raises(CommandError, match=rf"audit chain broken at seq {seq}: ") as info:
        call_command("audit_verify", *args)
    assert reason in str(info.value)


def _verified(capsys, *args: str) -> str:
    call_command("audit_verify", *args)
    return capsys.readouterr().out


# --- an intact chain ---------------------------------------------------------------------

def test_intact_chain_with_checkpoints_verifies_clean(chain, capsys):
    first = audit_checkpoint_create()
    with transaction.atomic():
        audit_event_record(action="test.after")
    second = audit_checkpoint_create()
    assert (first.seq, second.seq) == (EVENTS, EVENTS + 1)
    assert "audit chain intact: 7 events, 2 signed checkpoints" in _verified(capsys)
    report = chain_verify()
    assert report.ok and report.checked == 7 and report.checkpoints == 2


# --- single-row edits ----------------------------------------------------------------------

@pytest.mark.parametrize("assignment", [
    "data = jsonb_set(data, '{n}', '99')",
    "data = data - 'nested'",
    "actor_id = 'someone'",
    "actor_label = 'someone-else'",
    "action = 'test.rewritten'",
    "target_type = 'auth.group'",
    "target_id = '999'",
    "occurred_at = occurred_at + interval '1 microsecond'",
    "request_id = 'forged-request'",
    "hash = md5(hash) || md5(hash)",
])
def test_edited_field_is_detected(chain, assignment):
    _tamper(f"UPDATE governance_auditevent SET {assignment} WHERE seq = 3")  # noqa: S608 (fixed strings)
    _broken(3, "row content does not match its hash")


def test_edited_link_is_detected(chain):
    _tamper("UPDATE governance_auditevent SET prev_hash = %s WHERE seq = 3", ["0" * 64])
    _broken(3, "previous-hash link is broken")


def test_edited_and_rehashed_row_breaks_the_next_link(chain):
    row = AuditEvent.objects.get(seq=3)
    forged = event_hash(seq=3, prev_hash=row.prev_hash, occurred_at=row.occurred_at, actor_id=row.actor_id,
                        actor_label=row.actor_label, action="test.forged", target_type=row.target_type,
                        target_id=row.target_id, request_id=row.request_id, data=row.data)
    _tamper("UPDATE governance_auditevent SET action = 'test.forged', hash = %s WHERE seq = 3", [forged])
    _broken(4, "previous-hash link is broken")


# --- deletions and reordering --------------------------------------------------------------

@pytest.mark.parametrize("seq", [1, 3, EVENTS - 1])
def test_deleted_row_is_named(chain, seq):
    _tamper("DELETE FROM governance_auditevent WHERE seq = %s", [seq])
    _broken(seq, f"row seq {seq} is missing (found {seq + 1})")


@pytest.mark.parametrize(("a", "b"), [(3, 4), (1, 2), (2, 5), (EVENTS - 1, EVENTS)])
def test_swapped_rows_are_detected(chain, a, b):
    _tamper("UPDATE governance_auditevent SET seq = -1 WHERE seq = %s;"
            "UPDATE governance_auditevent SET seq = %s WHERE seq = %s;"
            "UPDATE governance_auditevent SET seq = %s WHERE seq = -1", [a, a, b, b])
    assert AuditEvent.objects.get(seq=a).action == f"test.event{b}"
    _broken(a, "previous-hash link is broken")


# --- the tail: checkpoints ------------------------------------------------------------------

def test_truncated_tail_after_a_checkpoint_is_detected(chain):
    audit_checkpoint_create()
    _tamper("DELETE FROM governance_auditevent WHERE seq > 4")
    assert AuditEvent.objects.count() == 4
    _broken(5, f"chain truncated: a signed checkpoint holds seq {EVENTS} but the chain ends at seq 4 "
               f"(rows 5..{EVENTS} deleted)")


def test_deleted_last_row_after_a_checkpoint_is_detected(chain):
    audit_checkpoint_create()
    _tamper("DELETE FROM governance_auditevent WHERE seq = %s", [EVENTS])
    _broken(EVENTS, f"a signed checkpoint holds seq {EVENTS} but the chain ends at seq {EVENTS - 1}")


def test_rewritten_chain_is_caught_by_the_checkpoint(chain):
    """Someone edits row 3 and recomputes every hash after it: the links hold, the signed head does not."""
    audit_checkpoint_create()
    rows = list(AuditEvent.objects.filter(seq__gte=3).order_by("seq"))
    prev = rows[0].prev_hash
    for row in rows:
        action = "test.forged" if row.seq == 3 else row.action
        digest = event_hash(seq=row.seq, prev_hash=prev, occurred_at=row.occurred_at, actor_id=row.actor_id,
                            actor_label=row.actor_label, action=action, target_type=row.target_type,
                            target_id=row.target_id, request_id=row.request_id, data=row.data)
        _tamper("UPDATE governance_auditevent SET action = %s, prev_hash = %s, hash = %s WHERE seq = %s",
                [action, prev, digest, row.seq])
        prev = digest
    _broken(EVENTS, f"row hash differs from the signed checkpoint at seq {EVENTS}")


def test_exported_checkpoints_catch_a_tail_deleted_with_its_stored_checkpoint(chain, tmp_path, capsys):
    call_command("audit_checkpoint")
    line = capsys.readouterr().out.strip()
    exported = json.loads(line)
    assert (exported["seq"], exported["alg"]) == (EVENTS, "HMAC-SHA256")
    path = tmp_path / "checkpoints.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    assert "6 events, 2 signed checkpoints" in _verified(capsys, "--checkpoints", str(path))  # stored + exported
    _tamper("DELETE FROM governance_auditevent WHERE seq > 4; DELETE FROM governance_auditcheckpoint")
    assert "audit chain intact: 4 events, 0 signed checkpoints" in _verified(capsys)
    _broken(5, "chain truncated", "--checkpoints", str(path))


# --- forged checkpoints ---------------------------------------------------------------------

def test_forged_checkpoint_signature_is_detected(chain):
    head = AuditEvent.objects.get(seq=EVENTS)
    signed_at = timezone.now()
    with transaction.atomic():
        AuditCheckpoint.objects.create(seq=EVENTS, hash=head.hash, signed_at=signed_at, signature="f" * 64)
    _broken(EVENTS, f"stored checkpoint at seq {EVENTS} has an invalid signature")


def test_checkpoint_signed_with_another_key_is_detected(chain):
    head = AuditEvent.objects.get(seq=EVENTS)
    signed_at = timezone.now()
    signature = checkpoint_signature(seq=EVENTS, hash=head.hash, signed_at=signed_at, key=b"not-the-key")
    with transaction.atomic():
        AuditCheckpoint.objects.create(seq=EVENTS, hash=head.hash, signed_at=signed_at, signature=signature)
    _broken(EVENTS, "invalid signature")


def test_altered_checkpoint_row_is_detected(chain):
    checkpoint = audit_checkpoint_create()
    _tamper("UPDATE governance_auditcheckpoint SET signed_at = signed_at - interval '1 day' WHERE id = %s",
            [checkpoint.pk])
    _broken(EVENTS, "invalid signature")


def test_forged_exported_checkpoint_is_detected(chain, tmp_path):
    path = tmp_path / "checkpoints.jsonl"
    path.write_text(json.dumps({"seq": 99, "hash": "a" * 64, "signed_at": timezone.now().isoformat(),
                                "signature": "b" * 64}) + "\n", encoding="utf-8")
    _broken(99, "exported checkpoint at seq 99 has an invalid signature", "--checkpoints", str(path))


@override_settings(AUDIT_CHECKPOINT_KEY="rotated-key")
def test_checkpoint_key_comes_from_the_setting(chain):
    checkpoint = audit_checkpoint_create()
    assert checkpoint.signature == checkpoint_signature(seq=checkpoint.seq, hash=checkpoint.hash,
                                                        signed_at=checkpoint.signed_at, key=b"rotated-key")
    with override_settings(AUDIT_CHECKPOINT_KEY="another-key"):
        assert not chain_verify().ok


# --- checkpoint rows are append-only ---------------------------------------------------------

@pytest.mark.parametrize(("sql", "operation"), [
    ("UPDATE governance_auditcheckpoint SET hash = repeat('0', 64)", "UPDATE"),
    ("UPDATE governance_auditcheckpoint SET signed_at = now()", "UPDATE"),
    ("DELETE FROM governance_auditcheckpoint", "DELETE"),
    ("TRUNCATE governance_auditcheckpoint", "TRUNCATE"),
])
def test_checkpoint_rows_refuse_changes(chain, sql, operation):
    checkpoint = audit_checkpoint_create()
    with pytest.raises(DatabaseError, match=rf"audit checkpoints are append-only \({operation} refused\)"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    assert AuditCheckpoint.objects.get().signature == checkpoint.signature
    with pytest.raises(DatabaseError, match="append-only"):
        with transaction.atomic():
            AuditCheckpoint.objects.filter(pk=checkpoint.pk).update(seq=1)


# --- signing ---------------------------------------------------------------------------------

def test_checkpointing_is_idempotent_and_incremental(chain):
    first = audit_checkpoint_create()
    assert audit_checkpoint_create() == first
    with transaction.atomic():
        audit_event_record(action="test.after")
    assert audit_checkpoint_create().seq == EVENTS + 1
    assert AuditCheckpoint.objects.count() == 2


def test_empty_chain_has_no_checkpoint(capsys):
    assert audit_checkpoint_create() is None
    call_command("audit_checkpoint")
    assert capsys.readouterr().out == ""


def test_tampered_segment_is_never_signed(chain):
    audit_checkpoint_create()
    with transaction.atomic():
        audit_event_record(action="test.after")
    _tamper("UPDATE governance_auditevent SET action = 'x' WHERE seq = %s", [EVENTS + 1])
    with pytest.raises(AuditChainBroken, match=f"seq {EVENTS + 1}: row content"):
        audit_checkpoint_create()
    with pytest.raises(CommandError, match="not signed"):
        call_command("audit_checkpoint")
    assert AuditCheckpoint.objects.count() == 1


def test_truncation_is_never_signed_over(chain):
    audit_checkpoint_create()
    _tamper("DELETE FROM governance_auditevent WHERE seq = %s", [EVENTS])
    with pytest.raises(AuditChainBroken, match="does not match the signed checkpoint"):
        audit_checkpoint_create()


def test_beat_task_signs_the_head(chain, caplog):
    with caplog.at_level(logging.INFO, logger="governance.tasks"):
        assert audit_checkpoint.delay().get() == EVENTS
    assert '"type":"audit_checkpoint"' in caplog.text


# --- the key in production --------------------------------------------------------------------

def test_production_warns_without_its_own_key(monkeypatch):
    monkeypatch.delenv("AUDIT_CHECKPOINT_KEY", raising=False)
    with override_settings(SETTINGS_MODULE="config.settings.production", AUDIT_CHECKPOINT_KEY=""):
        assert [m.id for m in checkpoint_key_check()] == ["governance.W001"]
    with override_settings(SETTINGS_MODULE="config.settings.production", AUDIT_CHECKPOINT_KEY="k" * 40):
        assert checkpoint_key_check() == []
    with override_settings(SETTINGS_MODULE="config.settings.dev", AUDIT_CHECKPOINT_KEY=""):
        assert checkpoint_key_check() == []


def test_signed_at_is_part_of_the_signature():
    moment = timezone.now()
    one = checkpoint_signature(seq=1, hash="a" * 64, signed_at=moment, key=b"k")
    assert one != checkpoint_signature(seq=1, hash="a" * 64, signed_at=moment + timedelta(microseconds=1), key=b"k")
    assert one != checkpoint_signature(seq=2, hash="a" * 64, signed_at=moment, key=b"k")


@pytest.mark.django_db(transaction=False)
def test_production_deploy_check_warns_only_without_the_key():
    from tests.test_deploy_check import manage

    result = manage("check", "--deploy", "--fail-level", "WARNING", AUDIT_CHECKPOINT_KEY=None)
    assert result.returncode != 0
    assert "governance.W001" in result.stderr
    assert "governance.W001" not in manage("check", "--deploy").stderr
