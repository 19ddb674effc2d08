"""Retention through the services: each kind deleted or anonymised with legal holds in place,
live conversations untouched, idempotent reruns, previews that change nothing, erasure refused
under a hold, and an audit chain that still verifies after payloads were purged (and catches a
payload changed any other way)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from convo.models import Contact, Conversation, ConversationStatus, Message, Role, Turn
from convo.retention import ANONYMISED_TEXT, ERASED_TEXT
from convo.services import conversation_close, conversation_start
from governance import retention
from governance.audit import chain_verify, payload_sha256, purge_marker
from governance.models import (
    AuditEvent,
    HoldScope,
    LegalHold,
    RetentionAction,
    RetentionPolicy,
    RetentionRun,
    RetentionRunStatus,
)
from governance.retention import (
    RetentionInvalid,
    RetentionRefused,
    data_erase,
    legal_hold_place,
    legal_hold_release,
    retention_policy_set,
    retention_run,
    retention_run_due,
)
from governance.retention_registry import DataKindHandler, PurgeCounts
from governance.services import audit_event_record
from knowledge.models import Audience, IngestionFile, IngestionJob
from knowledge.services import collection_ensure, ingestion_job_create_from_uploads

pytestmark = pytest.mark.django_db

QUESTION = "How long does standard delivery take within Germany?"
ORDER = "where is my order BW-10002"


# --- the world --------------------------------------------------------------------------------

@dataclass
class World:
    held: Conversation   # closed; its customer is under a legal hold (placed by the test that needs it)
    free: Conversation   # closed; no hold
    live: Conversation   # still with the assistant
    officer: object
    agent: object


@pytest.fixture
def world(demo, users, say) -> World:
    agent = users["agent"]

    def closed(name: str, texts: list[str]) -> Conversation:
        contact = Contact.objects.create(name=name, email=f"{name.split()[0].lower()}@example.com")
        conversation = conversation_start(contact=contact)
        for text in texts:
            say(text, conversation=conversation)
        return conversation_close(conversation_id=conversation.pk, agent=agent)

    held = closed("Hannah Held", [QUESTION, ORDER])
    free = closed("Fred Free", [QUESTION, ORDER])
    live = conversation_start(contact=Contact.objects.create(name="Lena Live", email="lena@example.com"))
    say(QUESTION, conversation=live)
    Conversation.objects.filter(pk__in=[held.pk, free.pk]).update(summary="Customer asked about delivery",
                                                                  csat_comment="Quick, thanks!")
    # The offline provider routes by intent; an OpenAI-compatible model would have called the tool
    # with the customer's words as arguments, as recorded here.
    for conversation in (held, free):
        turn = Turn.objects.filter(conversation=conversation, message__text=ORDER).get()
        Turn.objects.filter(pk=turn.pk).update(tool_call={"name": "order_status",
                                                          "arguments": {"order_id": "BW-10002"}})
    return World(held=held, free=free, live=live, officer=users["compliance"], agent=agent)


@pytest.fixture
def later(monkeypatch):
    """Run retention as if ``days`` had passed (only governance.retention's clock moves)."""
    real_now = timezone.now

    def _shift(days: int) -> None:
        monkeypatch.setattr(retention, "timezone", SimpleNamespace(now=lambda: real_now() + timedelta(days=days)))

    return _shift


def _hold_customer(world: World, conversation: Conversation, **extra) -> LegalHold:
    return legal_hold_place(actor=world.officer, name="Case 2026-114", reason="Litigation: keep everything",
                            subject_type=HoldScope.CONTACT, subject_id=str(conversation.contact_id), **extra)


def _policy(world: World, kind: str, action: str, days: int = 30) -> RetentionPolicy:
    return retention_policy_set(actor=world.officer, data_kind=kind, action=action, after_days=days)


def _texts(conversation: Conversation) -> list[str]:
    return list(Message.objects.filter(conversation=conversation).order_by("seq").values_list("text", flat=True))


def _turn_rows(conversation: Conversation) -> list[tuple]:
    return list(Turn.objects.filter(conversation=conversation).order_by("created_at").values_list(
        "intent", "decision", "model_version_id", "prompt_version_id", "tokens_in", "tool_call", "message__text"))


def _snapshot() -> dict:
    """Everything a purge could change."""
    return {
        "messages": sorted(Message.objects.values_list("pk", "text", "redacted_text")),
        "turns": sorted(Turn.objects.values_list("pk", "tool_call", "error", "sources")),
        "conversations": sorted(Conversation.objects.values_list("pk", "summary", "csat_comment", "state")),
        "contacts": sorted(Contact.objects.values_list("pk", "name", "email")),
        "audit": list(AuditEvent.objects.order_by("seq").values_list("seq", "data")),
        "files": sorted(IngestionFile.objects.values_list("pk", "storage_name")),
    }


def _purge_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="retention.purged").order_by("seq"))


# --- messages ---------------------------------------------------------------------------------

def test_messages_anonymised_except_held_live_and_recent(world, later):
    hold = _hold_customer(world, world.held)
    held_before, live_before = _texts(world.held), _texts(world.live)
    policy = _policy(world, "messages", RetentionAction.ANONYMISE)

    # Closed today: nothing is 30 days old yet.
    run = retention_run(policy=policy)
    assert (run.matched, run.purged) == (0, 0)

    later(31)
    run = retention_run(policy=policy)
    free_count = Message.objects.filter(conversation=world.free).count()
    held_count = len(held_before)
    assert run.status == RetentionRunStatus.DONE
    assert (run.matched, run.held_back, run.purged, run.remaining) == (free_count + held_count, held_count,
                                                                        free_count, 0)
    assert set(_texts(world.free)) == {ANONYMISED_TEXT}
    assert not Message.objects.filter(conversation=world.free).exclude(redacted_text="").exists()
    assert _texts(world.held) == held_before, "held messages are untouched"
    assert _texts(world.live) == live_before, "a live chat is never touched"
    free = Conversation.objects.get(pk=world.free.pk)
    assert (free.summary, free.csat_comment) == ("", "")
    assert Conversation.objects.get(pk=world.held.pk).summary == "Customer asked about delivery"
    # The decision records stay (another kind's policy).
    assert Turn.objects.filter(conversation=world.free).count() == 2

    event = _purge_events()[-1]
    assert event.target_type == "governance.retentionpolicy" and event.target_id == str(policy.pk)
    assert event.data["kind"] == "messages" and event.data["trigger"] == "policy"
    assert (event.data["matched"], event.data["purged"], event.data["held_back"]) == (run.matched, run.purged,
                                                                                      run.held_back)
    assert set(event.data["refs"]) == {"first", "last"}
    assert run.audit_seq == event.seq
    assert RetentionPolicy.objects.get(pk=policy.pk).last_run_at is not None
    assert hold.active and chain_verify().ok


def test_messages_delete_keeps_the_rows_turns_need(world, later):
    _hold_customer(world, world.held)
    held_before = _texts(world.held)
    policy = _policy(world, "messages", RetentionAction.DELETE)
    later(31)
    run = retention_run(policy=policy)
    inputs = set(Turn.objects.filter(conversation=world.free).values_list("message_id", flat=True))
    remaining = list(Message.objects.filter(conversation=world.free).values_list("pk", "text", "role"))
    # Only the customer messages the two AI turns were recorded on are left, anonymised.
    assert {pk for pk, _, _ in remaining} == inputs
    assert {(text, role) for _, text, role in remaining} == {(ANONYMISED_TEXT, Role.CUSTOMER)}
    assert run.detail["deleted"] == run.purged - 2 and run.detail["anonymised"] == 2
    assert Turn.objects.filter(conversation=world.free, reply__isnull=True).count() == 2, "replies were deleted"
    assert _texts(world.held) == held_before
    # Once the turns are deleted, a later messages run deletes their input messages too.
    retention_run(policy=_policy(world, "turns", RetentionAction.DELETE))
    rerun = retention_run(policy=policy)
    assert (rerun.purged, rerun.detail.get("deleted")) == (2, 2)
    assert not Message.objects.filter(conversation=world.free).exists()
    assert _texts(world.held) == held_before
    assert chain_verify().ok


# --- turns ------------------------------------------------------------------------------------

def test_turns_anonymised_keep_the_decision_skeleton(world, later):
    _hold_customer(world, world.held)
    held_before = _turn_rows(world.held)
    free_before = _turn_rows(world.free)
    assert any("arguments" in tool_call for *_, tool_call, _ in free_before), "the order question calls a tool"
    policy = _policy(world, "turns", RetentionAction.ANONYMISE)
    later(31)
    run = retention_run(policy=policy)
    assert (run.matched, run.held_back, run.purged) == (4, 2, 2)
    after = _turn_rows(world.free)
    for before, now in zip(free_before, after):
        assert now[:5] == before[:5], "intent, decision, versions and tokens stay"
        assert "arguments" not in now[5]
        assert now[5].get("name") == before[5].get("name")
        assert now[6] == ANONYMISED_TEXT
    replies = Message.objects.filter(pk__in=Turn.objects.filter(conversation=world.free).values("reply_id"))
    assert set(replies.values_list("text", flat=True)) == {ANONYMISED_TEXT}
    # The disclosure and the closing messages are not a turn's: the messages policy governs them.
    assert Message.objects.filter(conversation=world.free).exclude(text=ANONYMISED_TEXT).exists()
    assert _turn_rows(world.held) == held_before
    assert retention_run(policy=policy).matched == 2, "only the held turns still match"


def test_turns_deleted_except_held_and_live(world, later):
    _hold_customer(world, world.held)
    live_turns = Turn.objects.filter(conversation=world.live).count()
    policy = _policy(world, "turns", RetentionAction.DELETE)
    later(31)
    run = retention_run(policy=policy)
    assert (run.matched, run.held_back, run.purged) == (4, 2, 2)
    assert not Turn.objects.filter(conversation=world.free).exists()
    assert Turn.objects.filter(conversation=world.held).count() == 2
    assert Turn.objects.filter(conversation=world.live).count() == live_turns == 1
    assert Message.objects.filter(conversation=world.free, role=Role.CUSTOMER).count() == 2, "messages stay"
    # The turns' audit events stay (ids only refer to them now).
    assert AuditEvent.objects.filter(action="ai.turn", data__conversation=str(world.free.pk)).count() == 2


def test_date_range_hold_covers_what_was_created_in_it(world, later):
    long_ago = timezone.now() - timedelta(days=400)
    Message.objects.filter(conversation=world.free).update(created_at=long_ago)
    today = timezone.localdate()
    legal_hold_place(actor=world.officer, name="Audit period", reason="Regulator's inspection",
                     subject_type=HoldScope.RANGE, from_date=today - timedelta(days=2), to_date=today)
    held_before = _texts(world.held)
    later(31)
    run = retention_run(policy=_policy(world, "messages", RetentionAction.ANONYMISE))
    assert set(_texts(world.free)) == {ANONYMISED_TEXT}, "created long before the hold's dates"
    assert _texts(world.held) == held_before, "created within them"
    assert run.held_back == len(held_before)


def test_conversation_hold_with_dates_holds_only_its_rows_in_those_dates(world, later):
    first = Message.objects.filter(conversation=world.held).order_by("seq").first()
    Message.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(days=90))
    legal_hold_place(actor=world.officer, name="Complaint 88", reason="Ombudsman complaint",
                     subject_type=HoldScope.CONVERSATION, subject_id=str(world.held.pk),
                     from_date=timezone.localdate() - timedelta(days=1))
    later(31)
    retention_run(policy=_policy(world, "messages", RetentionAction.ANONYMISE))
    texts = dict(Message.objects.filter(conversation=world.held).values_list("pk", "text"))
    assert texts.pop(first.pk) == ANONYMISED_TEXT, "before the hold's dates"
    assert ANONYMISED_TEXT not in texts.values()


# --- uploaded files ---------------------------------------------------------------------------

@pytest.fixture
def uploads(demo, settings, tmp_path, django_capture_on_commit_callbacks):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.MEDIA_ROOT = str(tmp_path / "media")
    collection = collection_ensure(name="Retention uploads", audience=Audience.CUSTOMER)
    jobs = []
    for name in ("old", "kept"):
        with django_capture_on_commit_callbacks(execute=True):
            jobs.append(ingestion_job_create_from_uploads(collection=collection, uploads=[
                SimpleUploadedFile(f"{name}.md", f"# {name.title()} care\n\nRinse the {name} paddle after use.\n"
                                   .encode())]))
    return tmp_path / "media", jobs


def test_uploaded_files_deleted_except_held(uploads, users, later):
    media, (old_job, kept_job) = uploads
    officer = users["compliance"]
    old_file, kept_file = IngestionFile.objects.get(job=old_job), IngestionFile.objects.get(job=kept_job)
    assert (media / old_file.storage_name).is_file() and (media / kept_file.storage_name).is_file()
    IngestionFile.objects.filter(pk=old_file.pk).update(created_at=timezone.now() - timedelta(days=200))
    today = timezone.localdate()
    legal_hold_place(actor=officer, name="Supplier dispute", reason="Keep this month's documents",
                     subject_type=HoldScope.RANGE, from_date=today - timedelta(days=3))
    # A customer hold does not cover knowledge uploads.
    legal_hold_place(actor=officer, name="Unrelated customer", reason="Other case",
                     subject_type=HoldScope.CONTACT, subject_id=str(Contact.objects.create(name="X").pk))
    policy = retention_policy_set(actor=officer, data_kind="uploaded_files", action=RetentionAction.DELETE,
                                  after_days=7)
    later(8)
    run = retention_run(policy=policy)
    assert (run.matched, run.held_back, run.purged) == (2, 1, 1)
    assert run.detail["bytes"] == old_file.size
    assert not (media / old_file.storage_name).exists()
    assert (media / kept_file.storage_name).is_file()
    old_file.refresh_from_db()
    assert old_file.storage_name == f"purged:{(timezone.now() + timedelta(days=8)):%Y-%m-%d}"
    assert old_file.document_id is not None, "the document made from it stays"
    assert IngestionJob.objects.count() == 2
    assert retention_run(policy=policy).matched == 1, "the purged file no longer matches"


def test_uploaded_files_cannot_be_anonymised(users):
    with pytest.raises(RetentionInvalid, match="Uploaded files can only be deleted"):
        retention_policy_set(actor=users["compliance"], data_kind="uploaded_files", action="anonymise",
                             after_days=7)


# --- audit payloads and the chain -------------------------------------------------------------

def test_audit_payloads_anonymised_and_the_chain_still_verifies(world, later, capsys):
    _hold_customer(world, world.held)
    held_events = AuditEvent.objects.filter(data__conversation=str(world.held.pk))
    held_before = list(held_events.values_list("seq", "data"))
    assert held_before, "the held conversation's turns have audit events"
    originals = dict(AuditEvent.objects.values_list("seq", "data"))
    policy = _policy(world, "audit_payloads", RetentionAction.ANONYMISE, days=1)
    later(2)
    run = retention_run(policy=policy)
    assert run.purged > 0 and run.held_back >= len(held_before)
    assert run.remaining == 0 and run.matched == run.purged + run.held_back
    purged = AuditEvent.objects.filter(data__has_key="_purged")
    assert purged.count() == run.purged
    for seq, data in purged.values_list("seq", "data"):
        assert data["_purged"]["digest"] == payload_sha256(originals[seq])
        assert data["_purged"]["policy"] == "retention:audit_payloads"
    assert list(held_events.values_list("seq", "data")) == held_before
    assert not AuditEvent.objects.filter(action__startswith="retention.", data__has_key="_purged").exists()
    assert not AuditEvent.objects.filter(data={}, data__has_key="_purged").exists()
    event = _purge_events()[-1]
    listed = {seq for low, high in event.data["audit_seqs"] for seq in range(low, high + 1)}
    assert listed == set(purged.values_list("seq", flat=True))
    report = chain_verify()
    assert report.ok, report.reason
    call_command("audit_verify")
    assert "audit chain intact" in capsys.readouterr().out
    # A second run finds nothing more to purge.
    again = retention_run(policy=policy)
    assert (again.purged, again.matched - again.held_back) == (0, 0)
    assert chain_verify().ok


def test_signed_checkpoints_survive_a_purge(world, later):
    """A purge keeps every hash, so checkpoints signed before it still hold, and the next one signs over it."""
    from governance.audit import audit_checkpoint_create

    before = audit_checkpoint_create()
    later(2)
    run = retention_run(policy=_policy(world, "audit_payloads", RetentionAction.ANONYMISE, days=1))
    assert run.purged > 0
    after = audit_checkpoint_create()
    assert after.seq > before.seq
    report = chain_verify()
    assert report.ok and report.checkpoints == 2, report.reason


def test_audit_payloads_cannot_be_deleted(users):
    with pytest.raises(RetentionInvalid, match="Audit payloads can only be anonymised"):
        retention_policy_set(actor=users["compliance"], data_kind="audit_payloads", action="delete", after_days=30)


@pytest.fixture
def chain(db):
    with transaction.atomic():
        for n in range(1, 6):
            audit_event_record(action=f"test.event{n}", data={"n": n, "email": f"person{n}@example.com"})
    return list(AuditEvent.objects.order_by("seq"))


def _sql(sql: str, params=None, *, purge_flag: bool = False) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        if purge_flag:
            cursor.execute("SET LOCAL tandem.audit_purge = 'on'")
        cursor.execute(sql, params)


def _tamper(sql: str, params=None) -> None:
    """Direct database access with the triggers off (someone with superuser rights)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)
        cursor.execute("SET LOCAL session_replication_role = origin")


def _marker(event: AuditEvent, *, data=None) -> str:
    from governance.audit import canonical_json

    return canonical_json(purge_marker(data=event.data if data is None else data, policy="retention:x",
                                       at=timezone.now()))


def test_payload_edited_without_a_purge_is_caught(chain):
    _tamper("UPDATE governance_auditevent SET data = '{\"n\": 3, \"email\": \"x@example.com\"}' WHERE seq = 3")
    report = chain_verify()
    assert (report.ok, report.first_broken_seq, report.reason) == (False, 3, "row content does not match its hash")


def test_marker_with_a_wrong_digest_is_caught(chain):
    _sql("UPDATE governance_auditevent SET data = %s::jsonb WHERE seq = 2",
         [_marker(chain[1], data={"n": 99})], purge_flag=True)
    report = chain_verify()
    assert (report.ok, report.first_broken_seq) == (False, 2)
    assert report.reason == "row content does not match its hash"


def test_fake_marker_not_listed_by_a_purge_event_is_caught(chain):
    """The right digest, set through the trigger's own door, but by no retention purge."""
    _sql("UPDATE governance_auditevent SET data = %s::jsonb WHERE seq = 2", [_marker(chain[1])], purge_flag=True)
    report = chain_verify()
    assert (report.ok, report.first_broken_seq) == (False, 2)
    assert "no later retention.purged event lists" in report.reason
    with pytest.raises(CommandError, match="audit chain broken at seq 2: payload of seq 2 was replaced"):
        call_command("audit_verify")
    # An event listing it *before* the marker was set does not count; a later one does.
    with transaction.atomic():
        audit_event_record(action="retention.purged", data={"audit_seqs": [[1, 1]]})
    assert not chain_verify().ok
    with transaction.atomic():
        audit_event_record(action="retention.purged", data={"audit_seqs": [[2, 2]]})
    assert chain_verify().ok


def test_listing_covers_only_earlier_rows(chain):
    """A purge event cannot vouch for a row after it (the listing is written after the purge)."""
    with transaction.atomic():
        audit_event_record(action="retention.purged", data={"audit_seqs": [[1, 10]]})
    _sql("UPDATE governance_auditevent SET data = %s::jsonb WHERE seq = 5", [_marker(chain[4])], purge_flag=True)
    assert chain_verify().ok
    with transaction.atomic():
        late = audit_event_record(action="test.after", data={"secret": "s3cret"})
    _sql("UPDATE governance_auditevent SET data = %s::jsonb WHERE seq = %s", [_marker(late), late.seq],
         purge_flag=True)
    report = chain_verify()
    assert (report.ok, report.first_broken_seq) == (False, late.seq)


@pytest.mark.parametrize(("sql", "flag"), [
    ("UPDATE governance_auditevent SET data = '{\"n\": 0}'::jsonb WHERE seq = 1", True),  # not a marker
    ("UPDATE governance_auditevent SET data = %(marker)s::jsonb WHERE seq = 1", False),  # no purge flag
    ("UPDATE governance_auditevent SET data = %(marker)s::jsonb, actor_label = 'x' WHERE seq = 1", True),
    ("UPDATE governance_auditevent SET data = %(marker)s::jsonb, hash = md5('x') || md5('y') WHERE seq = 1", True),
    ("UPDATE governance_auditevent SET data = jsonb_set(%(marker)s::jsonb, '{_purged,extra}', '1') WHERE seq = 1",
     True),
    ("UPDATE governance_auditevent SET data = jsonb_set(%(marker)s::jsonb, '{_purged,digest}', '\"abc\"') "
     "WHERE seq = 1", True),
    ("UPDATE governance_auditevent SET data = %(marker)s::jsonb || '{\"n\": 1}' WHERE seq = 1", True),
])
def test_trigger_allows_only_a_marker_with_the_purge_flag(chain, sql, flag):
    before = list(AuditEvent.objects.order_by("seq").values_list("seq", "data", "hash", "actor_label"))
    with pytest.raises(DatabaseError, match=r"append-only \(UPDATE refused\)"):
        _sql(sql, {"marker": _marker(chain[0])}, purge_flag=flag)
    assert list(AuditEvent.objects.order_by("seq").values_list("seq", "data", "hash", "actor_label")) == before


@pytest.mark.parametrize(("sql", "operation"), [
    ("DELETE FROM governance_auditevent WHERE seq = 3", "DELETE"),
    ("TRUNCATE governance_auditevent", "TRUNCATE"),
])
def test_delete_and_truncate_still_refused_with_the_purge_flag(chain, sql, operation):
    with pytest.raises(DatabaseError, match=rf"append-only \({operation} refused\)"):
        _sql(sql, purge_flag=True)
    assert AuditEvent.objects.count() == 5


def test_purged_and_retention_rows_cannot_be_purged_again(chain):
    _sql("UPDATE governance_auditevent SET data = %s::jsonb WHERE seq = 1", [_marker(chain[0])], purge_flag=True)
    with pytest.raises(DatabaseError, match="UPDATE refused"):  # a marker is final
        _sql("UPDATE governance_auditevent SET data = %s::jsonb WHERE seq = 1",
             [_marker(chain[0], data={"other": 1})], purge_flag=True)
    with transaction.atomic():
        listing = audit_event_record(action="retention.purged", data={"audit_seqs": [[1, 1]]})
    with pytest.raises(DatabaseError, match="UPDATE refused"):  # the listing itself is kept
        _sql("UPDATE governance_auditevent SET data = %s::jsonb WHERE seq = %s", [_marker(listing), listing.seq],
             purge_flag=True)
    assert chain_verify().ok


# --- runs: previews, idempotence, limits, failures, scheduling ------------------------------------

def test_dry_run_changes_nothing_and_predicts_the_run(world, later):
    _hold_customer(world, world.held)
    policies = [_policy(world, "messages", RetentionAction.ANONYMISE),
                _policy(world, "turns", RetentionAction.DELETE),
                _policy(world, "audit_payloads", RetentionAction.ANONYMISE, days=1)]
    later(31)
    before = _snapshot()
    events = AuditEvent.objects.count()
    previews = [retention_run(policy=p, dry_run=True, actor=world.officer) for p in policies]
    after = _snapshot()
    assert after == before
    assert AuditEvent.objects.count() == events, "a preview writes no audit event"
    assert all(p.dry_run and p.status == RetentionRunStatus.DONE and p.purged == 0 for p in previews)
    assert all(p.started_by == world.officer for p in previews)
    assert RetentionPolicy.objects.filter(last_run_at__isnull=False).count() == 0
    first = retention_run(policy=policies[0])
    assert (first.matched, first.held_back, first.purged) == (previews[0].matched, previews[0].held_back,
                                                              previews[0].matched - previews[0].held_back)


def test_rerun_is_idempotent(world, later):
    _hold_customer(world, world.held)
    policy = _policy(world, "messages", RetentionAction.ANONYMISE)
    later(31)
    first = retention_run(policy=policy)
    snapshot = _snapshot()["messages"]
    second = retention_run(policy=policy)
    assert first.purged > 0
    assert (second.matched, second.purged, second.held_back) == (first.held_back, 0, first.held_back)
    assert _snapshot()["messages"] == snapshot
    assert len(_purge_events()) == 2, "every run is audited, even one that purged nothing"


def test_run_limit_leaves_the_rest_for_the_next_run(world, later):
    policy = _policy(world, "messages", RetentionAction.ANONYMISE)
    later(31)
    total = Message.objects.filter(conversation__status=ConversationStatus.CLOSED).count()
    first = retention_run(policy=policy, batch_size=2, limit=3)
    assert (first.purged, first.remaining) == (3, total - 3)
    second = retention_run(policy=policy, batch_size=2)
    assert (second.matched, second.purged, second.remaining) == (total - 3, total - 3, 0)
    assert not Message.objects.filter(conversation__status=ConversationStatus.CLOSED).exclude(
        text=ANONYMISED_TEXT).exists()


def test_failing_run_rolls_back_and_is_recorded(world, later, monkeypatch, caplog):
    from governance import retention_registry

    def purge_then_fail(**kwargs):
        Message.objects.filter(conversation=world.free).update(text="changed")
        raise RuntimeError("storage unavailable")

    handler = DataKindHandler(name="exploding", label="Exploding", actions=("delete",),
                              count=lambda **kwargs: PurgeCounts(), purge=purge_then_fail)
    monkeypatch.setitem(retention_registry._kinds, "exploding", handler)
    policy = retention_policy_set(actor=world.officer, data_kind="exploding", action="delete", after_days=1)
    before = _texts(world.free)
    with caplog.at_level(logging.ERROR, logger="governance.retention"):
        with pytest.raises(RuntimeError, match="storage unavailable"):
            retention_run(policy=policy)
    assert _texts(world.free) == before, "the purge rolled back"
    run = RetentionRun.objects.get(policy=policy)
    assert run.status == RetentionRunStatus.FAILED and run.error == "RuntimeError: storage unavailable"
    assert AuditEvent.objects.filter(action="retention.failed", target_id=str(policy.pk)).count() == 1
    assert not AuditEvent.objects.filter(action="retention.purged").exists()
    # The scheduler goes on with the other policies.
    messages = _policy(world, "messages", RetentionAction.ANONYMISE, days=1)
    later(2)
    runs = retention_run_due()
    assert {(r.data_kind, r.status) for r in runs} == {("exploding", "failed"), ("messages", "done")}
    assert RetentionPolicy.objects.get(pk=messages.pk).last_run_at is not None


def test_run_due_skips_disabled_policies_and_the_task_reports(world, later):
    from governance.tasks import retention_run_due as task

    _policy(world, "messages", RetentionAction.ANONYMISE)
    retention_policy_set(actor=world.officer, data_kind="turns", action=RetentionAction.DELETE, after_days=30,
                         enabled=False)
    later(31)
    result = task.delay().get()
    assert [(r["kind"], r["status"]) for r in result] == [("messages", "done")]
    assert result[0]["purged"] > 0
    assert Turn.objects.filter(conversation=world.free).count() == 2


def test_periodic_job_is_registered_for_the_embedded_default():
    from django.conf import settings

    from config.periodic import relay_jobs

    func, every = relay_jobs()["retention-run-due"]
    assert func is retention_run_due and every == 86_400
    assert settings.CELERY_BEAT_SCHEDULE["retention-run-due"]["task"] == "governance.retention_run_due"


def test_command_prints_counts(world, later, capsys):
    _hold_customer(world, world.held)
    _policy(world, "messages", RetentionAction.ANONYMISE)
    later(31)
    call_command("retention_run", "--dry-run")
    out = capsys.readouterr().out
    assert "messages: anonymise after 30 days (preview): matched" in out and "would purge" in out
    assert not Message.objects.filter(text=ANONYMISED_TEXT).exists()
    call_command("retention_run", "--kind", "messages")
    out = capsys.readouterr().out
    purged = Message.objects.filter(text=ANONYMISED_TEXT).count()
    assert f"purged {purged}" in out and "(audit #" in out
    with pytest.raises(CommandError, match="unknown kind 'nope'"):
        call_command("retention_run", "--kind", "nope")
    with pytest.raises(CommandError, match="no retention policy for turns"):
        call_command("retention_run", "--kind", "turns")


# --- policies ---------------------------------------------------------------------------------

def test_policy_set_is_audited_and_unchanged_values_are_not(users):
    officer = users["compliance"]
    policy = retention_policy_set(actor=officer, data_kind="messages", action="anonymise", after_days=365)
    retention_policy_set(actor=officer, data_kind="messages", action="anonymise", after_days=365)
    changed = retention_policy_set(actor=users["admin"], data_kind="messages", action="delete", after_days="90",
                                   enabled=False)
    assert changed.pk == policy.pk and RetentionPolicy.objects.count() == 1
    assert (changed.action, changed.after_days, changed.enabled, changed.updated_by) == ("delete", 90, False,
                                                                                         users["admin"])
    events = list(AuditEvent.objects.filter(action="retention.policy_set").order_by("seq").values_list("data",
                                                                                                       flat=True))
    assert len(events) == 2
    assert events[0]["previous"] is None
    assert events[1]["previous"] == {"action": "anonymise", "after_days": 365, "enabled": True}


@pytest.mark.parametrize(("kind", "action", "days", "message", "field"), [
    ("emails", "delete", 30, "Unknown kind of data 'emails'", "data_kind"),
    ("messages", "shred", 30, "Messages can only be anonymised or deleted, not 'shred'", "action"),
    ("messages", "delete", 0, "at least 1 day", "after_days"),
    ("messages", "delete", -5, "at least 1 day", "after_days"),
    ("messages", "delete", "ten", "whole number", "after_days"),
    ("messages", "delete", 40_000, "At most 36,500 days", "after_days"),
])
def test_policy_set_refuses_bad_input(users, kind, action, days, message, field):
    with pytest.raises(RetentionInvalid, match=message) as info:
        retention_policy_set(actor=users["compliance"], data_kind=kind, action=action, after_days=days)
    assert info.value.field == field
    assert not RetentionPolicy.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="retention.").exists()


@pytest.mark.parametrize("role", ["agent", "supervisor", "modelowner"])
def test_only_compliance_and_administrators_manage_retention(users, role):
    with pytest.raises(PermissionDenied):
        retention_policy_set(actor=users[role], data_kind="messages", action="delete", after_days=30)
    with pytest.raises(PermissionDenied):
        legal_hold_place(actor=users[role], name="x", reason="y", subject_type=HoldScope.RANGE,
                         from_date=timezone.localdate())
    assert not RetentionPolicy.objects.exists() and not LegalHold.objects.exists()


# --- legal holds ------------------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "message", "field"), [
    ({"subject_type": "contact", "subject_id": "00000000-0000-7000-8000-000000000000"}, "No customer with the id",
     "subject_id"),
    ({"subject_type": "conversation", "subject_id": "not-an-id"}, "No conversation with the id", "subject_id"),
    ({"subject_type": "contact", "subject_id": ""}, "Enter the id of the customer", "subject_id"),
    ({"subject_type": "range"}, "needs a start date, an end date or both", "from_date"),
    ({"subject_type": "range", "from_date": "2026-05-02", "to_date": "2026-05-01"}, "start date is after", "to_date"),
    ({"subject_type": "planet"}, "Unknown scope 'planet'", "subject_type"),
    ({"subject_type": "range", "from_date": "2026-05-01", "name": " "}, "Give the hold a name", "name"),
    ({"subject_type": "range", "from_date": "2026-05-01", "reason": ""}, "Say why the data must be kept", "reason"),
])
def test_hold_place_refuses_bad_input(users, fields, message, field):
    from datetime import date

    values = {"name": "Case", "reason": "Litigation", "subject_id": "", "from_date": None, "to_date": None, **fields}
    for key in ("from_date", "to_date"):
        if isinstance(values[key], str):
            values[key] = date.fromisoformat(values[key])
    with pytest.raises(RetentionInvalid, match=message) as info:
        legal_hold_place(actor=users["compliance"], **values)
    assert info.value.field == field
    assert not LegalHold.objects.exists()


def test_hold_release_is_audited_once(world, later):
    hold = _hold_customer(world, world.held)
    placed = AuditEvent.objects.get(action="retention.hold_placed")
    assert placed.target_id == str(hold.pk) and placed.data["subject_id"] == str(world.held.contact_id)
    assert "Hannah" not in str(placed.data), "retention events are never purged: no names in them"
    with pytest.raises(RetentionInvalid, match="Say why the hold can be released"):
        legal_hold_release(actor=world.officer, hold_id=hold.pk, reason="  ")
    released = legal_hold_release(actor=world.officer, hold_id=hold.pk, reason="Case settled")
    assert (released.active, released.released_by, released.release_reason) == (False, world.officer, "Case settled")
    with pytest.raises(RetentionInvalid, match="was already released on") as info:
        legal_hold_release(actor=users_admin(world), hold_id=hold.pk, reason="Again")
    assert info.value.code == "released"
    assert AuditEvent.objects.filter(action="retention.hold_released").count() == 1
    # Released: the policy reaches the data again.
    later(31)
    retention_run(policy=_policy(world, "messages", RetentionAction.ANONYMISE))
    assert set(_texts(world.held)) == {ANONYMISED_TEXT}


def users_admin(world: World):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username="admin")


# --- erasure ----------------------------------------------------------------------------------

def test_erasure_refused_under_a_customer_hold(world):
    _hold_customer(world, world.held)
    before = _snapshot()
    events = AuditEvent.objects.count()
    with pytest.raises(RetentionRefused, match="Customer Hannah Held is under legal hold \\(“Case 2026-114”\\)"):
        data_erase(actor=world.officer, subject_type="contact", subject_id=str(world.held.contact_id),
                   reason="GDPR request #5")
    assert _snapshot()["messages"] == before["messages"]
    assert _snapshot()["contacts"] == before["contacts"]
    refused = AuditEvent.objects.get(action="retention.refused")
    assert refused.seq == events + 1, "the refusal is the only new event"
    assert refused.data["code"] == "held" and refused.target_id == str(world.held.contact_id)
    assert refused.data["reason"].startswith("contact is under legal hold") and "Hannah" not in str(refused.data)
    assert chain_verify().ok


def test_erasure_of_a_conversation_refused_when_its_customer_or_dates_are_held(world):
    hold = _hold_customer(world, world.held)
    with pytest.raises(RetentionRefused, match="under legal hold"):
        data_erase(actor=world.officer, subject_type="conversation", subject_id=str(world.held.pk), reason="Request")
    legal_hold_release(actor=world.officer, hold_id=hold.pk, reason="Settled")
    legal_hold_place(actor=world.officer, name="Inspection", reason="Regulator", subject_type=HoldScope.RANGE,
                     to_date=timezone.localdate())
    before = _texts(world.free)
    with pytest.raises(RetentionRefused, match="under legal hold \\(“Inspection”\\)"):
        data_erase(actor=world.officer, subject_type="conversation", subject_id=str(world.free.pk), reason="Request")
    assert _texts(world.free) == before
    assert AuditEvent.objects.filter(action="retention.refused").count() == 2


def test_erasure_refused_while_a_conversation_is_open(world):
    before = _texts(world.live)
    with pytest.raises(RetentionRefused, match="still open: nothing was erased"):
        data_erase(actor=world.officer, subject_type="contact", subject_id=str(world.live.contact_id),
                   reason="Request")
    assert _texts(world.live) == before
    assert AuditEvent.objects.get(action="retention.refused").data["code"] == "open"


def test_erasure_anonymises_everything_of_the_customer(world, capsys):
    _hold_customer(world, world.held)  # another customer's hold does not stop this one
    held_texts, live_texts = _texts(world.held), _texts(world.live)
    contact_id = str(world.free.contact_id)
    result = data_erase(actor=world.officer, subject_type="contact", subject_id=contact_id,
                        reason="GDPR request #7")
    assert set(_texts(world.free)) == {ERASED_TEXT}
    assert all("arguments" not in row[5] for row in _turn_rows(world.free))
    contact = Contact.objects.get(pk=contact_id)
    assert (contact.name, contact.email) == ("", "")
    conversation = Conversation.objects.get(pk=world.free.pk)
    assert (conversation.summary, conversation.csat_comment) == ("", "")
    turn_events = AuditEvent.objects.filter(action="ai.turn", data__has_key="_purged")
    assert turn_events.count() == 2
    assert all(d["_purged"]["policy"] == "erasure" for d in turn_events.values_list("data", flat=True))
    # The other customers' data is untouched.
    assert _texts(world.held) == held_texts and _texts(world.live) == live_texts
    event = AuditEvent.objects.get(seq=result.audit_seq)
    assert (event.action, event.data["trigger"], event.target_type, event.target_id) == (
        "retention.purged", "erasure", "convo.contact", contact_id)
    assert event.data["kinds"]["messages"]["purged"] == len(_texts(world.free))
    assert "Fred" not in str(event.data), "the erased customer's name is not kept in the audit log"
    assert result.purged > 0
    assert chain_verify().ok
    call_command("audit_verify")
    assert "audit chain intact" in capsys.readouterr().out


def test_erasure_refuses_bad_input(world):
    with pytest.raises(RetentionInvalid, match="Say why the data is erased"):
        data_erase(actor=world.officer, subject_type="contact", subject_id=str(world.free.contact_id), reason="")
    with pytest.raises(RetentionInvalid, match="No customer with the id"):
        data_erase(actor=world.officer, subject_type="contact", subject_id=str(world.free.pk), reason="x")
    with pytest.raises(RetentionInvalid, match="Erase a customer or a conversation"):
        data_erase(actor=world.officer, subject_type="range", subject_id="", reason="x")
    with pytest.raises(PermissionDenied):
        data_erase(actor=world.agent, subject_type="contact", subject_id=str(world.free.contact_id), reason="x")
    assert not AuditEvent.objects.filter(action__startswith="retention.").exists()
