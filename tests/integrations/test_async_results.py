"""A backend that answers 202 and reports the outcome later: the run waits, executing, for its
webhook; the customer is told only when the outcome is known; no report in time → failed, and a
person follows up."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from convo.models import Message
from integrations.models import ActionRun, ActionRunEvent, Connector, RunStatus
from integrations.services import action_run_execute, action_runs_reconcile_stuck
from review.models import ItemKind, ReviewItem
from tests.integrations.test_webhooks import approved_refund, inbound, result_body, signed_post  # noqa: F401

pytestmark = pytest.mark.django_db


class AcceptingBackend:
    """Answers every POST with 202 and a reference, as a backend that works asynchronously."""

    def __init__(self):
        calls = self.calls = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                calls.append((self.path, self.headers.get("Idempotency-Key"), self.rfile.read(length)))
                body = json.dumps({"status": "pending", "reference": "REQ-77"}).encode()
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def accepting(monkeypatch):
    backend = AcceptingBackend()
    yield backend
    backend.close()


@pytest.fixture
def accepted_refund(approved_refund, accepting, monkeypatch, django_capture_on_commit_callbacks):  # noqa: F811
    connector = Connector.objects.get(name="brightwater-backend")
    monkeypatch.setenv(connector.base_url_env, accepting.url)
    with django_capture_on_commit_callbacks(execute=True):
        run = action_run_execute(run_id=approved_refund.pk)
    return run


def test_an_accepted_run_waits_for_its_webhook_and_the_customer_hears_only_the_outcome(
        client, inbound, accepted_refund, accepting, django_capture_on_commit_callbacks):  # noqa: F811
    run = accepted_refund
    assert (run.status, run.http_status, run.result) == (RunStatus.EXECUTING, 202,
                                                         {"status": "pending", "reference": "REQ-77"})
    assert len(accepting.calls) == 1
    assert ActionRunEvent.objects.filter(run=run, data__accepted=True).count() == 1
    conversation_id = run.subject_id
    assert not Message.objects.filter(conversation_id=conversation_id,
                                      data__kind__in=["action_done", "action_failed"]).exists()

    # Waiting for the webhook is not being stuck: the sweep leaves it alone.
    ActionRun.objects.filter(pk=run.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
    assert action_runs_reconcile_stuck(older_than_s=60) == 0
    assert len(accepting.calls) == 1

    with django_capture_on_commit_callbacks(execute=True):
        response = signed_post(client, result_body(run))
    assert response.status_code == 200, response.content
    run.refresh_from_db()
    assert (run.status, run.result["refund_id"]) == (RunStatus.SUCCEEDED, "RF-HOOK-1")
    told = Message.objects.get(conversation_id=conversation_id, data__kind="action_done")
    assert "RF-HOOK-1" in told.text


def test_no_report_in_time_fails_the_run_and_a_person_follows_up(settings, accepted_refund, accepting,
                                                                 django_capture_on_commit_callbacks):
    settings.ACTION_ASYNC_RESULT_TIMEOUT_S = 600
    run = accepted_refund
    ActionRun.objects.filter(pk=run.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=True):
        action_runs_reconcile_stuck(older_than_s=60)
    run.refresh_from_db()
    assert run.status == RunStatus.EXECUTING  # still within the wait

    ActionRun.objects.filter(pk=run.pk).update(updated_at=timezone.now() - timedelta(minutes=11))
    with django_capture_on_commit_callbacks(execute=True):
        action_runs_reconcile_stuck(older_than_s=60)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "did not report the result in time" in run.error
    assert len(accepting.calls) == 1  # never asked twice
    assert Message.objects.filter(conversation_id=run.subject_id, data__kind="action_failed").exists()
    assert ReviewItem.objects.filter(kind=ItemKind.ESCALATION, subject_id=run.subject_id,
                                     status__in=["open", "claimed"]).exists()
