#!/usr/bin/env python
"""The audit chain at scale: verification speed, write overhead per turn, and a tamper trial.

Not a test: it prints figures. From the repo root:

    .venv/bin/python bench/audit.py                               # 1,000,000 events, 20 tampers
    .venv/bin/python bench/audit.py --events 20000 --tampers 20   # CI smoke (well under a minute)
    .venv/bin/python bench/audit.py --keep-db ...                 # keep the database (prints its name)

Everything goes through the real code paths:

1. a fresh database ``tandem_bench_audit_<random>`` is created on the configured PostgreSQL
   server (the embedded one unless ``DATABASE_URL`` is set), migrated (the append-only triggers
   included), and dropped at the end unless ``--keep-db`` is given;
2. ``--events`` events are chained in Python exactly as ``audit_event_record`` chains them (the
   payload round-tripped through ``canonical_json``, hashed with ``governance.audit.event_hash``,
   each linked to the previous hash) and loaded with COPY: AI turns, action proposals, review
   decisions, version activations, over the last year. Then ANALYZE, and a first signed
   checkpoint (``audit_checkpoint_create``, which verifies the whole chain before signing);
3. **verify**: ``manage.py audit_verify`` over the whole chain (``verify_s``);
4. **write overhead**: ``--writes`` calls of ``audit_event_record`` one at a time, each inside
   its own transaction as a turn's service would make it (``write_p95_ms`` is the call, advisory
   lock included; the commit is printed apart). Then a second checkpoint covers the new head;
5. **tamper trial**: ``--tampers`` times, one random single-row tamper made directly in the
   database with user triggers off (``SET LOCAL session_replication_role = replica``): an edit of
   one field (data, actor, action, target, occurred_at or request id), the deletion of a row (a
   quarter of them the newest row, which only the signed checkpoint can reveal), or two rows
   exchanging their seq. ``manage.py audit_verify`` must then fail and name the tampered seq;
   the original rows are put back and the next trial starts. A final ``audit_verify`` checks
   that the chain is whole again.

The last line is ``events=E verify_s=V write_p95_ms=W tamper_detected=K/T``.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.benchlib import fresh_database, percentile  # noqa: E402

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
os.environ.setdefault("DEBUG", "0")  # no query log in memory while measuring
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

COLUMNS = ("id", "seq", "occurred_at", "actor_id", "actor_label", "action", "target_type", "target_id",
           "request_id", "data", "prev_hash", "hash")
ACTIONS = [("turn.answered", "convo.turn", 60), ("action.proposed", "integrations.actionrun", 15),
           ("review.resolved", "review.reviewitem", 15), ("conversation.exported", "convo.conversation", 5),
           ("model_version.activated", "governance.modelversion", 5)]
INTENTS = ["order_status", "refund", "opening_hours", "change_address", "complaint", "other"]
EDITS = [
    "data = data || '{\"tampered\": true}'::jsonb",
    "actor_id = actor_id || '9'",
    "actor_label = actor_label || 'x'",
    "action = 'tampered.' || action",
    "target_type = target_type || 'x'",
    "target_id = target_id || '0'",
    "occurred_at = occurred_at + interval '1 second'",
    "request_id = request_id || 'x'",
]
BROKEN_AT = re.compile(r"audit chain broken at seq (\d+): (.*)")


def event_rows(*, count: int, seed: int):
    """(COPY row) for each of ``count`` events, chained as ``audit_event_record`` chains them."""
    import json

    from config.models import uuid7
    from governance.audit import GENESIS_HASH, canonical_json, event_hash

    rng = random.Random(seed)
    actions = [(a, t) for a, t, _ in ACTIONS]
    weights = [w for _, _, w in ACTIONS]
    start = datetime.now(UTC) - timedelta(days=365)
    step_us = max(1, int(365 * 86400 * 1_000_000 / count))
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        occurred_at = start + timedelta(microseconds=seq * step_us + rng.randrange(step_us))
        action, target_type = rng.choices(actions, weights)[0]
        human = action.startswith("review.") or action.startswith("model_version.")
        actor_id, actor_label = (str(rng.randrange(1, 200)), f"agent{rng.randrange(1, 200)}") if human else ("", "system")
        payload = {"conversation": f"{rng.getrandbits(128):032x}", "intent": rng.choice(INTENTS),
                   "confidence": round(rng.random(), 4), "model_version": rng.randrange(1, 4),
                   "prompt_version": rng.randrange(1, 6), "tokens": [rng.randrange(50, 900), rng.randrange(10, 400)],
                   "escalated": rng.random() < 0.1, "sources": [f"chunk-{rng.randrange(10**6)}" for _ in range(2)]}
        data = json.loads(canonical_json(payload))  # as audit_event_record does: what jsonb gives back
        target_id, request_id = str(rng.randrange(1, 10**9)), f"{rng.getrandbits(64):016x}"
        digest = event_hash(seq=seq, prev_hash=prev, occurred_at=occurred_at, actor_id=actor_id,
                            actor_label=actor_label, action=action, target_type=target_type, target_id=target_id,
                            request_id=request_id, data=data)
        yield (uuid7(), seq, occurred_at, actor_id, actor_label, action, target_type, target_id, request_id,
               canonical_json(data), prev, digest)
        prev = digest


def load_events(*, count: int, seed: int) -> None:
    from django.db import connection, transaction

    started = time.perf_counter()
    sql = f"COPY governance_auditevent ({', '.join(COLUMNS)}) FROM STDIN"
    with transaction.atomic(), connection.cursor() as cursor:
        with cursor.cursor.copy(sql) as copy:
            for row in event_rows(count=count, seed=seed):
                copy.write_row(row)
                if row[1] % 100_000 == 0:
                    print(f"chained and loaded {row[1]:,}/{count:,} in {time.perf_counter() - started:.1f} s",
                          flush=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE governance_auditevent")


def audit_verify() -> tuple[bool, int | None, str]:
    """``manage.py audit_verify`` as an operator runs it: (intact, first broken seq, message)."""
    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = io.StringIO()
    try:
        call_command("audit_verify", stdout=out)
    except CommandError as exc:
        match = BROKEN_AT.search(str(exc))
        return False, int(match.group(1)) if match else None, str(exc)
    return True, None, out.getvalue().strip()


def _raw(sql: str, params=None, *, fetch: bool = False):
    """Direct database access with user triggers (the append-only ones) off for this transaction only."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)
        return cursor.fetchall() if fetch else None


def tamper_once(rng: random.Random, head: int) -> tuple[str, int, list[tuple]]:
    """One random single-row tamper; returns (what, the seq verification must name, originals)."""
    kind = rng.choice(["edit", "delete", "reorder"])
    if kind == "reorder":
        a = rng.randrange(1, head)
        b = a + 1 if rng.random() < 0.5 else rng.randrange(a + 1, head + 1)
        seqs, expected = [a, b], a
    else:
        s = head if (kind == "delete" and rng.random() < 0.25) else rng.randrange(1, head + 1)
        seqs, expected = [s], s
    select = ", ".join(f"{c}::text" if c in ("id", "data") else c for c in COLUMNS)
    originals = _raw(f"SELECT {select} FROM governance_auditevent WHERE seq = ANY(%s)", [seqs], fetch=True)  # noqa: S608
    if kind == "edit":
        edit = rng.choice(EDITS)
        _raw(f"UPDATE governance_auditevent SET {edit} WHERE seq = %s", [seqs[0]])  # noqa: S608 (fixed strings)
        what = f"edit seq {seqs[0]}: {edit.split(' = ')[0]}"
    elif kind == "delete":
        _raw("DELETE FROM governance_auditevent WHERE seq = %s", [seqs[0]])
        what = f"delete seq {seqs[0]}{' (the newest)' if seqs[0] == head else ''}"
    else:
        _raw("UPDATE governance_auditevent SET seq = -1 WHERE seq = %s;"
             "UPDATE governance_auditevent SET seq = %s WHERE seq = %s;"
             "UPDATE governance_auditevent SET seq = %s WHERE seq = -1", [a, a, b, b])
        what = f"swap seq {a} and {b}"
    return what, expected, originals


def restore(originals: list[tuple]) -> None:
    placeholders = ", ".join(["%s"] * len(COLUMNS))
    ids = [row[0] for row in originals]
    values = ", ".join(f"({placeholders})" for _ in originals)
    sql = f"INSERT INTO governance_auditevent ({', '.join(COLUMNS)}) VALUES {values}"  # noqa: S608 (fixed strings)
    _raw("DELETE FROM governance_auditevent WHERE id = ANY(%s::uuid[])", [ids])
    _raw(sql, [value for row in originals for value in row])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events to chain and load")
    parser.add_argument("--writes", type=int, default=2000, help="audit_event_record calls timed one at a time")
    parser.add_argument("--tampers", type=int, default=20, help="random single-row tampers to detect")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-db", action="store_true", help="keep the benchmark database (prints its name)")
    args = parser.parse_args(argv)
    if args.events < 2 or args.writes < 1 or args.tampers < 0:
        parser.error("--events must be at least 2, --writes positive, --tampers not negative")

    run_started = time.perf_counter()
    summary: list[str] = []
    command = " ".join([".venv/bin/python bench/audit.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"$ {command}")
    with fresh_database("tandem_bench_audit", keep=args.keep_db):
        from django.db import transaction

        from governance.audit import audit_checkpoint_create
        from governance.models import AuditEvent
        from governance.services import audit_event_record

        t0 = time.perf_counter()
        load_events(count=args.events, seed=args.seed)
        load_s = time.perf_counter() - t0
        summary.append(f"chained (event_hash) and loaded (COPY) {args.events:,} events in {load_s:.1f} s "
                       f"({args.events / load_s:,.0f}/s)")
        print(summary[-1], flush=True)
        t0 = time.perf_counter()
        checkpoint = audit_checkpoint_create()
        summary.append(f"first signed checkpoint (verifies all {checkpoint.seq:,} events first) in "
                       f"{time.perf_counter() - t0:.1f} s")
        print(summary[-1], flush=True)

        # --- verify -------------------------------------------------------------------------
        t0 = time.perf_counter()
        intact, _, message = audit_verify()
        verify_s = time.perf_counter() - t0
        summary.append(f"audit_verify: {message} in {verify_s:.1f} s ({args.events / verify_s:,.0f} events/s)")
        print(summary[-1], flush=True)
        if not intact:
            return 1

        # --- write overhead -------------------------------------------------------------------
        calls, commits = [], []
        for n in range(args.writes):
            with transaction.atomic():
                t0 = time.perf_counter()
                audit_event_record(actor="bench", action="turn.answered", target_type="convo.turn",
                                   target_id=str(n), data={"intent": "order_status", "confidence": 0.91,
                                                           "tokens": [412, 96], "escalated": False})
                t1 = time.perf_counter()
            commits.append((time.perf_counter() - t1) * 1000)
            calls.append((t1 - t0) * 1000)
        write_p95 = percentile(calls, 95)
        summary.append(f"audit_event_record x{args.writes} (own transaction each): p50={percentile(calls, 50):.2f} "
                       f"p95={write_p95:.2f} p99={percentile(calls, 99):.2f} ms; commit p95="
                       f"{percentile(commits, 95):.2f} ms")
        print(summary[-1], flush=True)
        head = audit_checkpoint_create().seq
        assert head == AuditEvent.objects.count() == args.events + args.writes  # noqa: S101

        # --- tamper trial ---------------------------------------------------------------------
        rng = random.Random(args.seed)
        detected = located = 0
        trial_started = time.perf_counter()
        for trial in range(1, args.tampers + 1):
            what, expected, originals = tamper_once(rng, head)
            t0 = time.perf_counter()
            intact, broken_at, message = audit_verify()
            took = time.perf_counter() - t0
            restore(originals)
            detected += not intact
            located += broken_at == expected
            verdict = "DETECTED" if not intact else "MISSED"
            print(f"tamper {trial}/{args.tampers}: {what} -> {verdict} in {took:.1f} s: {message}", flush=True)
        if args.tampers:
            summary.append(f"tamper trial: {detected}/{args.tampers} detected, {located}/{args.tampers} at the "
                           f"tampered seq, in {time.perf_counter() - trial_started:.0f} s")
            print(summary[-1], flush=True)
        intact, _, message = audit_verify()
        summary.append(f"after the trial: {message}")
        print(summary[-1], flush=True)
        summary.append(f"load average (1 min) {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; the run took "
                       f"{time.perf_counter() - run_started:.0f} s")
        print(f"\n== summary ==\n$ {command}")
        print("\n".join(summary))
        print(f"events={args.events} verify_s={verify_s:.2f} write_p95_ms={write_p95:.2f} "
              f"tamper_detected={detected}/{args.tampers}")
        return 0 if intact and detected == located == args.tampers else 1


if __name__ == "__main__":
    sys.exit(main())
