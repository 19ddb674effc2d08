"""Shared fixtures: the demo backend over real HTTP, demo data, users per role."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")


def pytest_configure(config):
    """Let transactional tests' flush empty the append-only audit table.

    Between transactional tests Django TRUNCATEs every table, which the audit trigger refuses
    (as it should in production). In tests only, the flush runs with user triggers off for
    its own transaction (SET LOCAL), so no other statement ever sees them disabled."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    original = DatabaseOperations.sql_flush
    if getattr(original, "_tandem_patched", False):
        return

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        statements = original(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        return ["SET LOCAL session_replication_role = replica", *statements] if statements else statements

    sql_flush._tandem_patched = True
    DatabaseOperations.sql_flush = sql_flush


@pytest.fixture(scope="session")
def demo_backend():
    """The project's own demo backend on a free loopback port (a real HTTP service)."""
    from integrations.demo_backend import DemoBackend

    backend = DemoBackend(host="127.0.0.1", port=0, quiet=True)
    backend.start()
    previous = os.environ.get("DEMO_BACKEND_URL")
    os.environ["DEMO_BACKEND_URL"] = backend.url
    yield backend
    backend.stop()
    if previous is None:
        os.environ.pop("DEMO_BACKEND_URL", None)
    else:
        os.environ["DEMO_BACKEND_URL"] = previous


@pytest.fixture
def demo(db, demo_backend):
    """The demo company: knowledge, actions, intents, team and one user per role."""
    from convo.demo.loader import load_demo

    demo_backend.reset()
    return load_demo()


@pytest.fixture
def users(demo):
    from django.contrib.auth import get_user_model

    User = get_user_model()
    return {u.username: User.objects.get(username=u.username) for u in demo["users"]}


@pytest.fixture
def outsider(db):
    """A logged-in user with no role (e.g. a former employee's account)."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(username="outsider", password="x-outsider-pass")


@pytest.fixture
def customer_conversation(demo):
    from convo.services import conversation_start

    return conversation_start()


@pytest.fixture
def say(customer_conversation, django_capture_on_commit_callbacks):
    """Send a customer message through the real service and return the finished turn."""
    from convo.models import Turn
    from convo.services import message_receive

    def _say(text: str, conversation=None):
        conversation = conversation or customer_conversation
        with django_capture_on_commit_callbacks(execute=True):
            message, _ = message_receive(conversation_id=conversation.pk, text=text)
        return Turn.objects.select_related("reply").filter(message=message).first()

    return _say
