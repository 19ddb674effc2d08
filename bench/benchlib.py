"""What the retrieval benchmarks share: a throwaway database on the configured server, and
percentiles. Imported by the scripts in this folder (run from the repo root)."""

from __future__ import annotations


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
