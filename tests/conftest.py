"""Shared fixtures: the demo backend over real HTTP, demo data, users per role."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")


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
