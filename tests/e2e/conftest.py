"""Browser tests: Playwright (Debian's Chromium) against a real Daphne server with WebSockets.

Run them in their own pytest process (``pytest tests/e2e``): Playwright's event loop and
pytest-asyncio cannot share one session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The sync Playwright API runs an event loop in the test thread; the ORM calls the tests make
# to set up data are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(reason=f"browser tests need Chromium at {CHROMIUM} (make browser, or apt-get install chromium)")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    # Never `playwright install`: use the system Chromium, offline.
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """A test database of their own, so browser tests can run while the unit suite runs
    against the same PostgreSQL. Setting TEST NAME also tells the live server process
    (channels' set_database_connection) which database to use."""
    from django.conf import settings

    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = "test_tandem_e2e"


@pytest.fixture(scope="session", autouse=True)
def _e2e_demo_backend(demo_backend):
    """Start the demo shop backend before the live server process is forked, so that
    DEMO_BACKEND_URL is already in the environment the server inherits."""
    return demo_backend


@pytest.fixture(scope="session", autouse=True)
def _e2e_warm_embeddings():
    """Load the embedding model once, before the live server process is forked: the server
    inherits it instead of spending ~12 s loading its own copy on the first turn."""
    from knowledge.embeddings import embed_query

    embed_query("warm-up")
