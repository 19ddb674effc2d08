"""Model governance in the browser: a second model owner evaluates the demo's candidate, sees the
report, approves it citing the run (its author cannot), activates it, and the next customer
turn is answered by it; the documentation page names the approval."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.base import BrowserTestCase

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:Session-scoped fixtures defined as instance methods"),
]


class GovernanceTest(BrowserTestCase):
    def test_evaluate_approve_activate_and_the_next_turn_uses_the_new_version(self):
        from convo.demo.loader import CONCISE_MODEL
        from convo.evaluation import evaluation_run_execute
        from convo.models import Turn
        from governance.models import EvaluationRun, ModelVersion

        candidate = ModelVersion.objects.get(name=CONCISE_MODEL)
        author = self.signed_in("modelowner", "/governance/")
        expect(author.get_by_role("heading", name="Governance", exact=True)).to_be_visible()
        author.get_by_role("link", name=f"{candidate.label}").first.click()
        expect(author.get_by_text("another model owner", exact=False).first).to_be_visible()

        owner = self.signed_in("modelowner2", "/governance/")
        waiting = owner.locator("section", has=owner.get_by_role("heading", name=re.compile("Waiting for your approval")))
        waiting.get_by_role("link", name=candidate.label).click()
        expect(owner.get_by_role("heading", name=re.compile(candidate.label))).to_be_visible()
        owner.get_by_role("link", name="Run an evaluation").first.click()
        owner.get_by_label("Intent phrases").fill("8")
        owner.get_by_role("button", name="Start the run").click()
        expect(owner).to_have_url(re.compile(r"/governance/evaluations/[0-9a-f-]{36}/$"))

        # The embedded default's relay process runs evaluation cases; here the test does.
        run = EvaluationRun.objects.get(candidate_model=candidate)
        evaluation_run_execute(run_id=run.pk)
        owner.reload()
        expect(owner.get_by_text("Agreement", exact=False).first).to_be_visible()
        expect(owner.get_by_text("Done", exact=True).first).to_be_visible()

        owner.goto(f"{self.live_server_url}/governance/models/{candidate.pk}/")
        owner.get_by_role("checkbox").first.check()
        owner.get_by_label(re.compile("^Reason")).first.fill("Agrees with the active version on the dataset run")
        owner.get_by_role("button", name="Approve").click()
        expect(owner.locator(".badge, .status, .chip").filter(has_text="Approved").first).to_be_visible()
        owner.get_by_role("button", name="Activate for every conversation").click()
        expect(owner.get_by_text("Active", exact=True).first).to_be_visible()

        chat = self.open_chat()
        self.say("How long does standard delivery within Germany take?", chat)
        turn = Turn.objects.exclude(decision="").order_by("-created_at").first()
        assert turn.model_version_id == candidate.pk

        owner.goto(f"{self.live_server_url}/governance/models/{candidate.pk}/documentation/")
        expect(owner.get_by_text("Agrees with the active version on the dataset run").first).to_be_visible()
        expect(owner.get_by_text(candidate.intended_use[:40], exact=False).first).to_be_visible()
