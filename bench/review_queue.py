#!/usr/bin/env python
"""Queue reads and "claim next" of Tandem's review queue at scale, with many agents at once.

Not a test: it prints figures. From the repo root:

    .venv/bin/python bench/review_queue.py                                  # 100,000 items, 20 agents
    .venv/bin/python bench/review_queue.py --items 2000 --agents 4 --seconds 3 --page-iterations 5   # CI smoke
    .venv/bin/python bench/review_queue.py --keep-db ...                    # keep the database (prints its name)

Everything goes through the real code paths:

1. a fresh database ``tandem_bench_review_<random>`` is created on the configured PostgreSQL
   server (the embedded one unless ``DATABASE_URL`` is set), migrated, and dropped at the end
   unless ``--keep-db`` is given;
2. ``--items`` review items are loaded with COPY (in batches of 5,000; ``created_at`` must be
   spread over 30 days, which ``bulk_create`` would overwrite): four kinds, priorities 1-3, four
   teams, ~10% claimed, ~60% resolved or cancelled (so the live queue is ~40%), created over the
   last 30 days, half with an SLA deadline (those past it and still live marked breached). No
   history rows are loaded: only what the benchmark itself does writes events. Then ANALYZE;
3. ``--agents`` agent accounts join the teams round-robin (``review.permissions.team_membership_set``);
4. **queue page**: every agent in its own thread and database connection reads the queue as the
   workspace's queue pane does: ``review_item_list_for_user(user)[:50]`` evaluated plus
   ``review_queue_counts(user)``, with the per-request caches of roles and team ids cleared each
   time (a page is a new request). Then the full ``GET /office/`` through Django's test
   ``Client`` (in process: middleware, session, views, template rendering; no network);
5. **claim next**: every agent repeatedly calls ``review_item_claim_next`` then resolves the item
   (``review_item_resolve``) for ``--seconds``. Printed: p50/p95/p99 of claim-next (and of
   resolve), claims per second, and the check that no item was claimed twice (``claimed``
   events per item, all exactly 1) and that each claim was resolved by its claimer.

Threads share one Python interpreter (the GIL): with 20 agents on a small machine the figures
include waiting for the interpreter as well as for PostgreSQL, as a busy ASGI worker would. The
load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
import uuid
from datetime import timedelta
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

BATCH = 5000
QUEUE_SIZE = 50  # what the queue pane shows
TEAMS = ["Support", "Billing", "Returns", "Trade accounts"]
KINDS = [("escalation", 50), ("action_approval", 25), ("flagged_answer", 15), ("shadow_disagreement", 10)]
REASONS = ["customer_request", "missing_knowledge", "unsupported_request", "policy_restriction", "action_failure",
           "low_confidence", "safety_flag"]
PRIORITIES = [(1, 15), (2, 55), (3, 30)]
STATUSES = [("resolved", 55), ("cancelled", 5), ("claimed", 10), ("open", 30)]
COLUMNS = ("id", "created_at", "updated_at", "kind", "subject_type", "subject_id", "title", "summary", "reason",
           "priority", "status", "team_id", "sla_due_at", "claimed_by_id", "claim_expires_at", "resolved_at",
           "sla_breached_at", "outcome", "needed_human", "version", "data")
SUBJECT_TYPES = {"action_approval": "integrations.actionrun"}


def _pick(rng: random.Random, weighted):
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def uuid7_at(moment) -> uuid.UUID:
    """A version-7 id whose time part is ``moment`` (the ids of real items follow creation)."""
    ms = int(moment.timestamp() * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | ((rand >> 62) & 0xFFF) << 64 | 0b10 << 62
    return uuid.UUID(int=value | (rand & ((1 << 62) - 1)))


def load_items(*, count: int, teams: list, agents_by_team: dict, seed: int) -> dict:
    """COPY ``count`` items in batches; returns how many of each status."""
    from django.db import connection, transaction
    from django.utils import timezone

    rng = random.Random(seed)
    now = timezone.now()
    tally: dict[str, int] = {}
    sql = f"COPY review_reviewitem ({', '.join(COLUMNS)}) FROM STDIN"
    started = time.perf_counter()
    for start in range(0, count, BATCH):
        rows = []
        for n in range(start, min(count, start + BATCH)):
            kind = _pick(rng, KINDS)
            status = _pick(rng, STATUSES)
            team = rng.choice(teams)
            created = now - timedelta(seconds=rng.uniform(60, 30 * 86400))
            sla_due = created + timedelta(hours=4) if rng.random() < 0.5 else None
            live = status in ("open", "claimed")
            claimer = rng.choice(agents_by_team[team.pk]) if status == "claimed" else None
            closed = status in ("resolved", "cancelled")
            rows.append((
                uuid7_at(created), created, created, kind, SUBJECT_TYPES.get(kind, "convo.conversation"),
                str(uuid.uuid4()), f"{kind.replace('_', ' ').capitalize()} #{n}",
                "Generated by bench/review_queue.py", rng.choice(REASONS) if kind == "escalation" else "",
                _pick(rng, PRIORITIES), status, team.pk, sla_due,
                claimer.pk if claimer else None, now + timedelta(minutes=30) if claimer else None,
                created + timedelta(minutes=rng.uniform(1, 600)) if closed else None,
                sla_due if (live and sla_due and sla_due < now) else None,
                "bench" if closed else "", rng.choice([True, False]) if status == "resolved" else None,
                1 if status == "open" else 2, json.dumps({}),
            ))
            tally[status] = tally.get(status, 0) + 1
        with transaction.atomic(), connection.cursor() as cursor:
            with cursor.cursor.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
        done = min(count, start + BATCH)
        if done % 20000 == 0 or done == count:
            print(f"loaded {done}/{count} items in {time.perf_counter() - started:.1f} s", flush=True)
    return tally


def agents_create(*, count: int, teams: list) -> tuple[list, dict]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import transaction

    from governance.roles import Role
    from review.permissions import team_membership_set

    User = get_user_model()
    group = Group.objects.get(name=Role.AGENT)
    agents, by_team = [], {t.pk: [] for t in teams}
    with transaction.atomic():
        for n in range(count):
            user = User(username=f"bench-agent-{n:02d}", is_staff=True)
            user.set_unusable_password()  # sessions are made with force_login: no hashing to wait for
            user.save()
            user.groups.add(group)
            team = teams[n % len(teams)]
            team_membership_set(actor=None, team=team, user=user, work=True)
            agents.append(user)
            by_team[team.pk].append(user)
    return agents, by_team


def run_agents(work, agents: list, *, seconds: float | None = None, iterations: int | None = None) -> tuple[dict, float]:
    """Run ``work(agent, state)`` in a loop in one thread per agent, each with its own database
    connection (opened before the clock starts), for ``seconds`` or ``iterations`` calls, or until
    ``work`` returns False. ``work`` appends its timings to ``state``. Returns every agent's
    state merged by key, and the wall time."""
    from django.db import connection

    clock: dict = {}

    def start_clock() -> None:  # runs once, when every thread has its connection
        clock["started"] = time.perf_counter()
        clock["deadline"] = clock["started"] + (seconds or 0)

    ready = threading.Barrier(len(agents), action=start_clock)
    states: list[dict] = []
    errors: list[BaseException] = []

    def agent_thread(agent) -> None:
        state: dict = {}
        try:
            connection.ensure_connection()
            ready.wait()
            done = 0
            while iterations is None or done < iterations:
                if seconds is not None and time.perf_counter() >= clock["deadline"]:
                    break
                if work(agent, state) is False:
                    break
                done += 1
            states.append(state)
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)
            ready.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=agent_thread, args=(a,), name=f"bench-agent-{n}") for n, a in enumerate(agents)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - clock.get("started", time.perf_counter())
    if errors:
        raise errors[0]
    merged: dict = {}
    for state in states:
        for key, values in state.items():
            if isinstance(values, list):
                merged.setdefault(key, []).extend(values)
            else:
                merged[key] = merged.get(key, 0) + values
    return merged, wall


def _fresh_request(user) -> None:
    """Forget what a request remembers on the user (roles, team ids): each page is a new request."""
    user.__dict__.pop("_tandem_team_ids", None)
    user.__dict__.pop("_tandem_roles", None)


def _row(label: str, values: list[float], extra: str = "") -> str:
    figures = "  ".join(f"p{p} {percentile(values, p):7.1f}" for p in (50, 95, 99))
    return f"{label:<34} n={len(values):>6}  {figures} ms{('  ' + extra) if extra else ''}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000, help="review items to load")
    parser.add_argument("--agents", type=int, default=20, help="concurrent agents (threads)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the claim-next run")
    parser.add_argument("--iterations", type=int, default=None,
                        help="claim-next calls per agent instead of --seconds")
    parser.add_argument("--page-iterations", type=int, default=25, help="queue reads (and office GETs) per agent")
    parser.add_argument("--no-office", action="store_true", help="skip the GET /office/ measurement")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-db", action="store_true", help="keep the benchmark database (prints its name)")
    args = parser.parse_args(argv)
    if args.items < 1 or args.agents < 1 or args.page_iterations < 0 or args.seconds <= 0:
        parser.error("--items, --agents and --seconds must be positive")

    run_started = time.perf_counter()
    summary: list[str] = []
    command = " ".join([".venv/bin/python bench/review_queue.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"$ {command}")
    with fresh_database("tandem_bench_review", keep=args.keep_db):
        from django.conf import settings
        from django.db import connection
        from django.test import Client

        from review.models import ReviewEvent, ReviewItem, Team
        from review.selectors import review_item_list_for_user, review_queue_counts
        from review.services import review_item_claim_next, review_item_resolve

        teams = [Team.objects.create(name=n, sla_minutes=240) for n in TEAMS]
        agents, by_team = agents_create(count=args.agents, teams=teams)
        t0 = time.perf_counter()
        tally = load_items(count=args.items, teams=teams, agents_by_team=by_team, seed=args.seed)
        load_s = time.perf_counter() - t0
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE review_reviewitem")
        live = tally.get("open", 0) + tally.get("claimed", 0)
        print(f"{args.items} items in {load_s:.1f} s ({args.items / load_s:,.0f}/s): "
              + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())) + f"; live queue {live}", flush=True)

        # --- the queue pane -------------------------------------------------------------------
        def queue_read(agent, state) -> None:
            _fresh_request(agent)
            t = time.perf_counter()
            rows = list(review_item_list_for_user(user=agent)[:QUEUE_SIZE])
            review_queue_counts(user=agent)
            state.setdefault("ms", []).append((time.perf_counter() - t) * 1000)
            state["rows"] = state.get("rows", 0) + len(rows)

        load_before = os.getloadavg()[0]
        result, wall = run_agents(queue_read, agents[:1], iterations=args.page_iterations)
        if result:  # one agent alone: the cost of the two queries without contention
            summary.append(_row("queue pane (list[:50]+counts) c=1", result["ms"]))
            print(summary[-1], flush=True)
        result, wall = run_agents(queue_read, agents, iterations=args.page_iterations)
        if result:
            summary.append(_row(f"queue pane (list[:50]+counts) c={args.agents}", result["ms"],
                                f"{len(result['ms']) / wall:.0f} pages/s"))
            print(summary[-1], flush=True)

        # --- the whole workspace page -----------------------------------------------------------
        if not args.no_office and args.page_iterations:
            if "testserver" not in settings.ALLOWED_HOSTS:
                settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
            clients = {}
            for agent in agents:
                clients[agent.pk] = Client()
                clients[agent.pk].force_login(agent)
            statuses: dict[int, int] = {}

            def office_get(agent, state) -> None:
                t = time.perf_counter()
                response = clients[agent.pk].get("/office/")
                state.setdefault("ms", []).append((time.perf_counter() - t) * 1000)
                state.setdefault("status", []).append(response.status_code)

            try:
                result, wall = run_agents(office_get, agents, iterations=args.page_iterations)
                for code in result.get("status", []):
                    statuses[code] = statuses.get(code, 0) + 1
                summary.append(_row(f"GET /office/ c={args.agents}", result["ms"],
                                    f"{len(result['ms']) / wall:.0f} pages/s; status {statuses}"))
            except Exception as exc:  # the page is being rebuilt: report, measure the rest
                summary.append(f"GET /office/ failed: {type(exc).__name__}: {exc}")
            print(summary[-1], flush=True)

        # --- claim next ---------------------------------------------------------------------------
        bench_started = time.perf_counter()
        from django.utils import timezone

        from review.registry import kind_handler

        since = timezone.now()

        def claim_and_resolve(agent, state) -> bool:
            _fresh_request(agent)
            t = time.perf_counter()
            item = review_item_claim_next(actor=agent)
            state.setdefault("claim_ms", []).append((time.perf_counter() - t) * 1000)
            if item is None:
                state["empty"] = state.get("empty", 0) + 1
                return False
            t = time.perf_counter()
            # A decision the item's kind accepts (kinds may register their outcomes).
            handler = kind_handler(item.kind)
            outcome = handler.outcomes[0][0] if handler and handler.outcomes else "resolved"
            review_item_resolve(item_id=item.pk, actor=agent, outcome=outcome, needed_human=True,
                                expected_version=item.version, check_claim=True)
            state.setdefault("resolve_ms", []).append((time.perf_counter() - t) * 1000)
            state.setdefault("claims", []).append((str(item.pk), agent.pk))
            return True

        if args.iterations is not None:
            result, wall = run_agents(claim_and_resolve, agents, iterations=args.iterations)
        else:
            result, wall = run_agents(claim_and_resolve, agents, seconds=args.seconds)
        claims = result.get("claims", [])
        summary.append(_row(f"claim next c={args.agents}", result.get("claim_ms", []),
                            f"{len(claims) / wall:.1f} claims/s over {wall:.1f} s"))
        summary.append(_row(f"resolve (after claim) c={args.agents}", result.get("resolve_ms", [])))
        print("\n".join(summary[-2:]), flush=True)

        # --- nobody got an item twice -------------------------------------------------------------
        claimed_events = ReviewEvent.objects.filter(kind="claimed", created_at__gte=since)
        per_item: dict[str, int] = {}
        for item_id in claimed_events.values_list("item_id", flat=True):
            per_item[str(item_id)] = per_item.get(str(item_id), 0) + 1
        twice = sum(1 for n in per_item.values() if n != 1)
        claimers = dict(claims)
        wrong = ReviewItem.objects.filter(pk__in=list(claimers), status="resolved").values_list("pk", "claimed_by_id")
        mismatched = sum(1 for pk, by in wrong if claimers[str(pk)] != by)
        unresolved = len(claimers) - len(wrong)
        ok = twice == 0 and len(per_item) == len(claims) == len(claimers) and mismatched == 0 and unresolved == 0
        summary.append(f"claims {len(claims)}, items with claimed events {len(per_item)}, claimed more than once "
                       f"{twice}, resolved by someone else {mismatched}, unresolved {unresolved}: "
                       f"{'OK' if ok else 'FAILED'}")
        print(summary[-1])
        summary.append(f"load average (1 min) before={load_before:.2f} after={os.getloadavg()[0]:.2f} on "
                       f"{os.cpu_count()} CPUs; measuring took {time.perf_counter() - bench_started:.0f} s, "
                       f"the run {time.perf_counter() - run_started:.0f} s")
        print(f"\n== summary ({args.items} items, live queue {live}, {args.agents} agents, {len(TEAMS)} teams) ==")
        print(f"$ {command}")
        print("\n".join(summary))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
