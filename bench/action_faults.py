#!/usr/bin/env python
"""Fault test of approved actions: SIGKILL the Celery worker mid-execution, many times.

Not a unit test: it drives real processes. From the repo root (Redis must run on 127.0.0.1:6379):

    .venv/bin/python bench/action_faults.py --kills 5 --runs 40        # about a minute
    .venv/bin/python bench/action_faults.py --kills 20 --runs 200 --keep-db

What it does, all of it its own and thrown away at the end:

1. a fresh database ``tandem_bench_actions_<random>`` on the configured PostgreSQL server (the
   embedded one unless ``DATABASE_URL`` is set), migrated; a Redis database of its own
   (``--redis-db``, default 13, FLUSHDB'd at the start and the end: never the CI's 15); the demo
   backend as its own process on a free port (``--latency`` per request, so kills land mid-call);
   a Celery worker ``-Q actions -c 2`` in its own process group, started with the settings of a
   real deployment (``REDIS_URL``, not eager);
2. ``--runs`` refund runs are proposed (approval: always), then approved in ``--kills + 1``
   batches, each batch in one transaction, so each commit hands the batch to the outbox;
3. after each batch but the last, once the worker has started executing, after a random
   0-300 ms (a run takes ~0.15-0.3 s, so most kills land inside one), it is killed with SIGKILL: alternately the whole worker (main process and pool, as
   a lost machine: its unacknowledged messages stay in Redis for the visibility timeout, so the
   outbox relay's lease sends them again) and one pool process (Celery requeues its message:
   ``acks_late`` + ``reject_on_worker_lost``), and restarted;
4. a broker outage is simulated once (``--no-outage`` to skip): the shared Redis is never
   restarted (other people's runs use it), so instead the worker is stopped and every publish
   of this process fails (``config.outbox._publish`` raises) while one batch is approved, for
   ``--outage-s``; the outbox keeps those messages undispatched, and once "the broker is back"
   the relay sends them;
5. the relay (``config.outbox.outbox_relay``) runs in a thread every 0.5 s, with
   ``OUTBOX_RESEND_AFTER_S=2`` and ``OUTBOX_LEASE_S=--lease`` (8 s; production: 10 s and 120 s);
6. it waits until every run is terminal (at most ``--timeout`` s) and reads the demo backend's
   effective executions per idempotency key (``GET /_stats``; replays are not executions).

Ends with exactly one line:
``kills=N runs=M duplicate_executions=D lost_actions=L max_settle_s=S`` where D counts executions
beyond the first per key, L approved runs not terminal, or succeeded without an execution at the
backend, and S the longest time from an approval's commit to its run's terminal state.
Exit status 1 when D or L is not 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.benchlib import create_database, drop_database, percentile  # noqa: E402

ORDERS = ["BW-10001", "BW-10002", "BW-10003", "BW-10005", "BW-10006", "BW-10007", "BW-10008"]
AMOUNT = 0.05  # small enough that no order runs out of refundable money in a long run
SCHEMA = {"type": "object", "required": ["order_id", "amount", "reason"], "additionalProperties": False,
          "properties": {"order_id": {"type": "string", "pattern": r"^BW-\d{5}$"},
                         "amount": {"type": "number", "exclusiveMinimum": 0},
                         "reason": {"type": "string", "minLength": 3}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url(db: dict) -> str:
    """A DATABASE_URL for the worker process pointing at ``db`` (unix socket or TCP)."""
    from urllib.parse import quote, urlencode

    auth = quote(db.get("USER") or "postgres") + (":" + quote(db["PASSWORD"]) if db.get("PASSWORD") else ":")
    host = db.get("HOST") or ""
    query = dict(db.get("OPTIONS") or {})
    if host.startswith("/"):
        query["host"] = host
        location = ""
    else:
        location = host + (f":{db['PORT']}" if db.get("PORT") else "")
    suffix = ("?" + urlencode(query)) if query else ""
    return f"postgresql://{auth}@{location}/{quote(db['NAME'])}{suffix}"


def configure_environment(*, redis_db: int, lease_s: float) -> str:
    """Environment of this process and its worker: a real broker, not eager. Before Django."""
    redis_url = f"redis://127.0.0.1:6379/{redis_db}"
    os.environ.update({
        "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "config.settings.dev", "DEBUG": "0",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "REDIS_URL": redis_url, "CELERY_TASK_ALWAYS_EAGER": "0",
        "OUTBOX_RESEND_AFTER_S": "2", "OUTBOX_LEASE_S": str(lease_s),
    })
    return redis_url


class ActionRig:
    """A throwaway database, demo backend, Celery worker and outbox relay for action benchmarks."""

    def __init__(self, *, label: str, redis_db: int, lease_s: float, latency_s: float, concurrency: int,
                 keep_db: bool = False) -> None:
        self.label, self.keep_db, self.latency_s, self.concurrency = label, keep_db, latency_s, concurrency
        self.redis_url = configure_environment(redis_db=redis_db, lease_s=lease_s)
        self.db_name = f"tandem_bench_{label}_{secrets.token_hex(4)}"
        self.backend: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.worker_starts = 0
        self.backend_url = ""
        self._relay_stop = threading.Event()
        self._relay: threading.Thread | None = None
        self.log_dir = REPO_ROOT / "var" / "log"
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> ActionRig:
        from django.conf import settings

        self.db = settings.DATABASES["default"]
        create_database(self.db, self.db_name)
        # Connections are made lazily from settings: pointing the default alias at the new
        # database before django.setup() makes every ORM query of this process use it.
        self.db["NAME"] = self.db_name
        try:
            import django

            django.setup()
            from django.core.management import call_command

            self._redis_flush()
            t0 = time.perf_counter()
            call_command("migrate", verbosity=0, interactive=False)
            self.migrate_s = time.perf_counter() - t0
            self._backend_start()
            self._catalogue()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.relay_stop()
        self.worker_kill(whole=True)
        if self.backend is not None:
            self.backend.terminate()
            self.backend.wait(timeout=10)
            self.backend = None
        self._redis_flush()
        if self.keep_db:
            print(f"kept database {self.db_name}")
        else:
            drop_database(self.db, self.db_name)

    def _redis_flush(self) -> None:
        import redis

        redis.Redis.from_url(self.redis_url).flushdb()

    def _backend_start(self) -> None:
        port = free_port()
        self.backend_url = f"http://127.0.0.1:{port}"
        log = open(self.log_dir / f"bench_{self.label}_backend.log", "w")  # noqa: SIM115 - closed with the process
        self.backend = subprocess.Popen(
            [sys.executable, "-m", "integrations.demo_backend", "--host", "127.0.0.1", "--port", str(port),
             "--latency", str(self.latency_s), "--quiet"], cwd=REPO_ROOT, stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.backend_url + "/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the demo backend did not start")

    def _catalogue(self) -> None:
        from django.contrib.auth import get_user_model

        from integrations.models import ActionDefinition, Connector

        connector = Connector.objects.create(name="bench-backend", base_url=self.backend_url, timeout_s=5)
        self.action = ActionDefinition.objects.create(
            name="bench_refund", title="Refund (benchmark)", description="Refund part of an order.",
            connector=connector, method="POST", path="/refunds", parameters_schema=SCHEMA, risk_level="high",
            approval_rule={"rule": "always", "four_eyes_above": None})
        self.approver = get_user_model().objects.create_user(username="bench-approver",
                                                             password=secrets.token_urlsafe(16))

    # -- the worker ------------------------------------------------------------------------

    def worker_start(self) -> None:
        env = {**os.environ, "DATABASE_URL": database_url(self.db), "EMBEDDINGS": "openai"}  # no model warm-up
        log = open(self.log_dir / f"bench_{self.label}_worker.log", "a" if self.worker_starts else "w")  # noqa: SIM115 - closed with the process
        self.worker_starts += 1
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "actions", "-c", str(self.concurrency),
             "-P", "prefork", "-n", f"{self.db_name}-{self.worker_starts}@%h", "--without-gossip",
             "--without-mingle", "--without-heartbeat", "-l", "warning"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=log, start_new_session=True)

    def worker_children(self) -> list[int]:
        if self.worker is None:
            return []
        try:
            text = Path(f"/proc/{self.worker.pid}/task/{self.worker.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def worker_kill(self, *, whole: bool) -> str:
        """SIGKILL the worker: its whole process group, or one pool process (which the main
        process replaces). Returns what was killed."""
        if self.worker is None:
            return "nothing"
        children = self.worker_children()
        if not whole and children:
            os.kill(random.choice(children), signal.SIGKILL)
            return "pool process"
        try:
            os.killpg(self.worker.pid, signal.SIGKILL)  # our own session: main process and pool
        except ProcessLookupError:
            pass
        self.worker.wait(timeout=10)
        self.worker = None
        return "whole worker"

    # -- the relay (beat's job in production) ------------------------------------------------

    def relay_start(self, every_s: float = 0.5) -> None:
        from django.db import connection

        from config.outbox import outbox_relay

        def loop():
            try:
                while not self._relay_stop.wait(every_s):
                    try:
                        outbox_relay()
                    except Exception as exc:  # noqa: BLE001 - keep relaying, as beat would
                        print(f"relay error: {exc!r}", file=sys.stderr)
            finally:
                connection.close()

        self._relay = threading.Thread(target=loop, name="outbox-relay", daemon=True)
        self._relay.start()

    def relay_stop(self) -> None:
        self._relay_stop.set()
        if self._relay is not None:
            self._relay.join(timeout=30)
            self._relay = None

    # -- runs ------------------------------------------------------------------------------

    def propose(self, count: int) -> list:
        from django.db import transaction

        from integrations.services import action_run_propose

        runs = []
        with transaction.atomic():
            for n in range(count):
                params = {"order_id": ORDERS[n % len(ORDERS)], "amount": AMOUNT, "reason": f"bench refund {n}"}
                runs.append(action_run_propose(action=self.action, params=params,
                                               idempotency_key=f"bench:{self.db_name}:{n}"))
        return runs

    def approve(self, runs: list) -> float:
        """Approve ``runs`` in one transaction; returns the wall-clock time of its commit."""
        from django.db import transaction

        from integrations.services import action_run_approve

        committed = [0.0]
        with transaction.atomic():
            # Registered first, so it runs first after the commit, before the outbox's sends.
            transaction.on_commit(lambda: committed.__setitem__(0, time.time()))
            for run in runs:
                action_run_approve(run_id=run.pk, actor=self.approver)
        return committed[0]

    def executions(self) -> dict[str, int]:
        with urllib.request.urlopen(self.backend_url + "/_stats", timeout=5) as response:
            return json.loads(response.read())["execution_counts"]


def executing_events_since(moment) -> int:
    from integrations.models import ActionRunEvent

    return ActionRunEvent.objects.filter(actor_label="worker", created_at__gt=moment).count()


def wait_for_execution(since, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if executing_events_since(since):
            return True
        time.sleep(0.02)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--redis-db", type=int, default=13)
    parser.add_argument("--lease", type=float, default=8.0, help="OUTBOX_LEASE_S for this run (seconds)")
    parser.add_argument("--latency", type=float, default=0.1, help="demo backend latency per request (s)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for every run to settle")
    parser.add_argument("--outage-s", type=float, default=2.0)
    parser.add_argument("--no-outage", action="store_true", help="skip the simulated broker outage")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args(argv)
    if args.kills < 0 or args.runs < args.kills + 1:
        parser.error("--runs must be at least --kills + 1")
    if args.redis_db == 15:
        parser.error("Redis database 15 is the CI's")
    rng = random.Random(args.seed)
    random.seed(args.seed)
    command = " ".join([".venv/bin/python bench/action_faults.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"$ {command}", flush=True)

    started = time.perf_counter()
    with ActionRig(label="actions", redis_db=args.redis_db, lease_s=args.lease, latency_s=args.latency,
                   concurrency=2, keep_db=args.keep_db) as rig:
        from django.db.models import Count
        from django.utils import timezone

        import config.outbox as outbox
        from config.models import OutboxMessage
        from integrations.models import TERMINAL_STATUSES, ActionRun, RunStatus

        print(f"database {rig.db_name} migrated in {rig.migrate_s:.1f} s; demo backend {rig.backend_url}; "
              f"Redis db {args.redis_db}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
        runs = rig.propose(args.runs)
        batches = [runs[i::args.kills + 1] for i in range(args.kills + 1)]
        outage_batch = -1 if args.no_outage else len(batches) // 2
        committed_at: dict = {}
        rig.relay_start()
        rig.worker_start()
        kills = 0
        for i, batch in enumerate(batches):
            if i == outage_batch:
                rig.worker_kill(whole=True)
                real_publish = outbox._publish

                def broker_down(task, task_args, headers):
                    raise ConnectionError("simulated broker outage")

                outbox._publish = broker_down
                moment = rig.approve(batch)
                held = OutboxMessage.objects.filter(dispatched_at__isnull=True, done_at__isnull=True).count()
                print(f"outage: worker stopped, publishing refused; batch {i + 1} approved, "
                      f"{held} message(s) held undispatched by the outbox", flush=True)
                time.sleep(args.outage_s)
                outbox._publish = real_publish
                rig.worker_start()
            else:
                moment = rig.approve(batch)
            committed_at.update({run.pk: moment for run in batch})
            if i < args.kills:
                since = timezone.now()
                if rig.worker is None:
                    rig.worker_start()
                wait_for_execution(since, timeout_s=20)
                time.sleep(rng.uniform(0, 0.3))
                what = rig.worker_kill(whole=(i % 2 == 0))
                kills += 1
                print(f"kill {kills}: SIGKILL {what} after batch {i + 1} ({len(batch)} runs)", flush=True)
                if rig.worker is None:
                    rig.worker_start()

        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            if not ActionRun.objects.filter(pk__in=committed_at).exclude(status__in=TERMINAL_STATUSES).exists():
                break
            time.sleep(0.2)
        rig.relay_stop()

        counts = rig.executions()
        final = {run.pk: run for run in ActionRun.objects.filter(pk__in=committed_at)}
        duplicates = sum(max(0, counts.get(run.idempotency_key, 0) - 1) for run in final.values())
        not_terminal = [run for run in final.values() if run.status not in TERMINAL_STATUSES]
        phantom = [run for run in final.values()
                   if run.status == RunStatus.SUCCEEDED and counts.get(run.idempotency_key, 0) == 0]
        lost = len(not_terminal) + len(phantom)
        settle = [run.finished_at.timestamp() - committed_at[pk] for pk, run in final.items() if run.finished_at]
        tally = dict(ActionRun.objects.filter(pk__in=committed_at).values_list("status")
                     .annotate(n=Count("pk")).order_by())
        sends = list(OutboxMessage.objects.values_list("sends", flat=True))
        reconciled = ActionRun.objects.filter(pk__in=committed_at, events__data__reconcile=True).distinct().count()
        print(f"runs by status: {tally}; reconciled after a kill (asked again with the same key): {reconciled}; "
              f"outbox: {len(sends)} messages, {sum(sends)} sends, {sum(1 for s in sends if s > 1)} sent more "
              f"than once, {OutboxMessage.objects.filter(gave_up_at__isnull=False).count()} given up; "
              f"worker started {rig.worker_starts} times")
        if settle:
            print(f"settle time (approval commit -> terminal): p50 {percentile(settle, 50):.2f} s, "
                  f"p95 {percentile(settle, 95):.2f} s, max {max(settle):.2f} s; whole run "
                  f"{time.perf_counter() - started:.0f} s")
        for run in not_terminal[:5]:
            print(f"  not terminal: {run.idempotency_key} {run.status} attempts={run.attempts}")
        for run in phantom[:5]:
            print(f"  succeeded without a backend execution: {run.idempotency_key}")
        result = (f"kills={kills} runs={len(final)} duplicate_executions={duplicates} lost_actions={lost} "
                  f"max_settle_s={max(settle) if settle else float('nan'):.1f}")
    print(result, flush=True)
    return 0 if duplicates == 0 and lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
