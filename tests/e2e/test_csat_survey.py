"""The satisfaction survey in the customer's browser: asked live when an agent closes the
conversation, answered with the keyboard-accessible 1–5 scale, thanked, and answered once."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.base import BrowserTestCase

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:Session-scoped fixtures defined as instance methods"),
]


class CsatSurveyTest(BrowserTestCase):
    def test_customer_rates_the_conversation_after_the_agent_closes_it(self):
        from convo.models import Conversation

        page = self.page
        page.goto(f"{self.live_server_url}/chat/")
        expect(page.locator("#conn")).to_have_text("Connected")
        page.get_by_label("Your message").fill("I want to talk to a person")
        page.get_by_label("Your message").press("Enter")
        expect(page.locator("#status-strip")).to_contain_text("A person from our team is on the way")
        conversation_id = page.locator(".chat-card").get_attribute("data-conversation")

        context = self.browser.new_context(viewport={"width": 1280, "height": 800})
        agent = context.new_page()
        agent.goto(f"{self.live_server_url}/office/conversations/{conversation_id}/")
        agent.get_by_label("Username").fill("agent")
        agent.get_by_label("Password").fill("tandem-agent")
        agent.get_by_role("button", name="Sign in").click()
        agent.locator("#ctl-close summary").click()
        close = agent.locator(".close-form")
        needed = close.get_by_label("Yes", exact=True)
        if needed.count():
            needed.check()
        close.get_by_role("button").last.click()

        survey = page.get_by_role("group", name="Your rating")
        expect(survey).to_be_visible()
        expect(page.locator("#status-strip")).to_contain_text("This conversation is closed.")
        for n, label in enumerate(["very poor", "poor", "okay", "good", "excellent"], start=1):
            expect(survey.get_by_role("radio", name=f"{n} of 5 – {label}")).to_be_visible()

        # Sending without a rating asks for one, and changes nothing.
        page.get_by_role("button", name="Send feedback").click()
        expect(page.get_by_role("alert").filter(has_text="choose a rating")).to_be_visible()

        survey.get_by_role("radio", name="4 of 5 – good").focus()
        page.keyboard.press("ArrowRight")  # a native radio group: arrows move and select
        expect(survey.get_by_role("radio", name="5 of 5 – excellent")).to_be_checked()
        page.get_by_label("Anything you'd like to add? (optional)").fill("Alex sorted it quickly.")
        page.get_by_role("button", name="Send feedback").click()
        expect(page.get_by_text("Thanks for your feedback!")).to_be_visible()
        expect(survey).to_have_count(0)
        expect(page.get_by_role("radio")).to_have_count(0)

        conversation = Conversation.objects.get(pk=conversation_id)
        assert (conversation.csat_score, conversation.csat_comment) == (5, "Alex sorted it quickly.")
        expect(page.locator(".kind-csat_request")).to_contain_text(re.compile("How did we do"))
        context.close()
