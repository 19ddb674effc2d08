#!/usr/bin/env python
"""Approved-action throughput and enqueue→start latency through a real worker and the demo backend.

Not a test: it prints figures. From the repo root (Redis must run on 127.0.0.1:6379):

    .venv/bin/python bench/actions.py --runs 300 --concurrency 4            # approvals as fast as possible
    .venv/bin/python bench/actions.py --runs 300 --concurrency 4 --rate 20  # 20 approvals a second

The rig is bench/action_faults.py's (a fresh database, its own Redis database ``--redis-db``,
default 12, the demo backend as its own process, a Celery worker ``-Q actions -c
--concurrency``, the outbox relay in a thread with the production lease), without faults:

1. ``--runs`` refund runs are proposed (approval: always); one warm-up run is approved and
   executed first, so the worker's start is not measured;
2. the runs are approved one transaction each (as people do) by one thread, as fast as it can
   or at ``--rate`` per second; each approval's commit time is taken right after its commit;
3. **enqueue→start** is the time from that commit to the worker's ``approved → executing``
   event of the run (the task has been delivered, the run re-fetched and locked);
   **throughput** is runs per second from the first commit to the last run settled.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.action_faults import ActionRig  # noqa: E402
from bench.benchlib import percentile  # noqa: E402


def wait_terminal(run_ids, timeout_s: float) -> bool:
    from integrations.models import TERMINAL_STATUSES, ActionRun

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not ActionRun.objects.filter(pk__in=run_ids).exclude(status__in=TERMINAL_STATUSES).exists():
            return True
        time.sleep(0.05)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4, help="worker pool processes")
    parser.add_argument("--rate", type=float, default=0, help="approvals per second (0: as fast as possible)")
    parser.add_argument("--latency", type=float, default=0.0, help="demo backend latency per request (s)")
    parser.add_argument("--redis-db", type=int, default=12)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.concurrency < 1:
        parser.error("--runs and --concurrency must be positive")
    if args.redis_db == 15:
        parser.error("Redis database 15 is the CI's")
    command = " ".join([".venv/bin/python bench/actions.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"$ {command}", flush=True)

    with ActionRig(label="actthru", redis_db=args.redis_db, lease_s=120, latency_s=args.latency,
                   concurrency=args.concurrency, keep_db=args.keep_db) as rig:
        from django.db.models import Count

        from integrations.models import ActionRun, ActionRunEvent, RunStatus

        load = os.getloadavg()[0]
        print(f"database {rig.db_name} migrated in {rig.migrate_s:.1f} s; demo backend {rig.backend_url}; "
              f"Redis db {args.redis_db}; {os.cpu_count()} CPUs, load average {load:.2f}", flush=True)
        warm, *runs = rig.propose(args.runs + 1)
        rig.relay_start(every_s=10)
        rig.worker_start()
        t0 = time.perf_counter()
        rig.approve([warm])
        if not wait_terminal([warm.pk], 120):
            raise SystemExit("the worker did not execute the warm-up run")
        print(f"worker up and warm after {time.perf_counter() - t0:.1f} s", flush=True)

        committed: dict = {}
        gap = 1 / args.rate if args.rate > 0 else 0
        first = time.time()
        for n, run in enumerate(runs):
            if gap:
                time.sleep(max(0.0, first + n * gap - time.time()))
            committed[run.pk] = rig.approve([run])
        approving_s = time.time() - first
        settled = wait_terminal(list(committed), args.timeout)

        starts = dict(ActionRunEvent.objects.filter(run_id__in=committed, from_status=RunStatus.APPROVED,
                                                    to_status=RunStatus.EXECUTING)
                      .values_list("run_id", "created_at"))
        final = {r.pk: r for r in ActionRun.objects.filter(pk__in=committed)}
        wait_ms = [(starts[pk].timestamp() - committed[pk]) * 1000 for pk in committed if pk in starts]
        settle_ms = [(r.finished_at.timestamp() - committed[pk]) * 1000 for pk, r in final.items() if r.finished_at]
        last_finish = max(r.finished_at.timestamp() for r in final.values() if r.finished_at)
        throughput = len(settle_ms) / (last_finish - min(committed.values()))
        tally = dict(ActionRun.objects.filter(pk__in=committed).values_list("status").annotate(n=Count("pk"))
                     .order_by())
        executions = rig.executions()
        duplicates = sum(max(0, executions.get(r.idempotency_key, 0) - 1) for r in final.values())

        rate = f"{args.rate:g}/s" if args.rate else "as fast as possible"
        print()
        print(f"| runs | worker processes | approvals ({rate}) | throughput | enqueue→start p50 | p95 | max "
              "| commit→settled p50 | p95 |")
        print("|---|---|---|---|---|---|---|---|---|")
        print(f"| {len(committed)} | {args.concurrency} | {len(committed) / approving_s:.1f}/s | "
              f"{throughput:.1f} runs/s | {percentile(wait_ms, 50):.0f} ms | {percentile(wait_ms, 95):.0f} ms | "
              f"{max(wait_ms):.0f} ms | {percentile(settle_ms, 50):.0f} ms | {percentile(settle_ms, 95):.0f} ms |")
        print()
        print(f"runs by status: {tally}; all settled: {settled}; duplicate executions at the backend: {duplicates}; "
              f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0 if settled and duplicates == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
