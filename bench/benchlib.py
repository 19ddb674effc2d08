"""What the benchmarks share: a throwaway database on the configured server, and
percentiles. Imported by the scripts in this folder (run from the repo root)."""

from __future__ import annotations

import os
import secrets
import time
from contextlib import contextmanager


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def admin_connect(db: dict):
    """A psycopg connection to the server's maintenance database (CREATE/DROP DATABASE)."""
    import psycopg

    params = {
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "host": db.get("HOST") or None,
        "port": db.get("PORT") or None,
        **(db.get("OPTIONS") or {}),
    }
    params = {k: v for k, v in params.items() if v is not None}
    try:
        return psycopg.connect(dbname="postgres", autocommit=True, **params)
    except psycopg.OperationalError:
        return psycopg.connect(dbname=db["NAME"], autocommit=True, **params)


def create_database(db: dict, name: str) -> None:
    with admin_connect(db) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(db: dict, name: str) -> None:
    from django.db import connections

    connections.close_all()
    with admin_connect(db) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_database(prefix: str, *, keep: bool = False):
    """A new database on the configured server, migrated, that every ORM query of this process
    uses; dropped on the way out unless ``keep``. Yields its name.

    Call before ``django.setup()`` has opened a connection: connections are made lazily from
    settings, so pointing the default alias at the new database first is enough."""
    import django
    from django.conf import settings

    db = settings.DATABASES["default"]
    name = f"{prefix}_{secrets.token_hex(4)}"
    create_database(db, name)
    db["NAME"] = name
    try:
        django.setup()
        from django.core.management import call_command

        print(f"database {name} on {db.get('HOST') or 'localhost'}; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
        started = time.perf_counter()
        call_command("migrate", verbosity=0, interactive=False)
        print(f"migrated in {time.perf_counter() - started:.1f} s", flush=True)
        yield name
        if keep:
            print(f"kept database {name}")
    finally:
        if not keep:
            drop_database(db, name)
