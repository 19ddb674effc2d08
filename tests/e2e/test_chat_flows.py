"""What customers and agents see in the browser, end to end, with live WebSockets."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.base import BrowserTestCase

pytestmark = [
    pytest.mark.e2e,
    # pytest-playwright 0.10 defines its fallback base_url fixture on a plugin object, which
    # pytest 9 reports as deprecated; nothing here uses base_url.
    pytest.mark.filterwarnings("ignore:Session-scoped fixtures defined as instance methods"),
]


class ChatFlowsTest(BrowserTestCase):
    # --- helpers --------------------------------------------------------------------------

    def agent_page(self, username: str = "agent") -> Page:
        """A second browser (its own cookies) signed in to the back office."""
        return self.staff(username, width=1280, height=800)

    def conversation_id(self) -> str:
        return self.page.locator(".chat-card").get_attribute("data-conversation")

    # --- tests ----------------------------------------------------------------------------

    def test_delivery_question_is_answered_with_a_citation_to_the_help_article(self):
        page = self.open_chat()
        expect(page.get_by_text("You're chatting with an AI assistant.")).to_be_visible()
        self.say("How long does delivery take in Germany?")

        answer = page.locator(".msg-assistant").last
        expect(answer).to_contain_text("2 to 4 working days")
        link = answer.get_by_role("link", name=re.compile(r"\[1\] Shipping times and costs"))
        expect(link).to_have_attribute("href", re.compile(r"^/help/shipping-and-delivery/#"))
        expect(link).to_have_attribute("target", "_blank")

        # The citation leads to the article a customer can read.
        with page.context.expect_page() as opened:
            link.click()
        article = opened.value
        expect(article.get_by_role("heading", name="Shipping times and costs", level=1)).to_be_visible()
        expect(article.get_by_role("heading", name="Delivery within Germany")).to_be_visible()

    def test_person_takes_over_replies_live_and_hands_back(self):
        page = self.open_chat()
        self.say("I want to talk to a person")
        strip = page.locator("#status-strip")
        expect(strip).to_contain_text("A person from our team is on the way")
        expect(page.get_by_role("button", name="Talk to a person")).to_be_hidden()

        agent = self.agent_page()
        queue = agent.get_by_role("complementary", name="Queue")
        item = queue.get_by_role("link", name=re.compile("Customer asked for a person"))
        expect(item).to_have_attribute("href", f"/office/conversations/{self.conversation_id()}/")
        item.click()
        expect(agent.get_by_role("list", name="Transcript")).to_be_visible()
        expect(agent.locator("#transcript")).to_contain_text("I want to talk to a person")

        agent.get_by_role("button", name="Take over").click()
        expect(agent.get_by_text("You are now in the chat. The assistant is paused.")).to_be_visible()
        expect(page.get_by_text("Alex from our team has joined the chat.")).to_be_visible()

        expect(agent.locator("#live-note")).to_have_text("Live")
        agent.get_by_label("Reply to the customer").fill("Hello, I'm Alex. How can I help?")
        agent.get_by_role("button", name="Send reply").click()
        expect(agent.get_by_label("Reply to the customer")).to_have_value("")

        # Live, without reloading the customer's page.
        reply = page.locator(".msg-agent")
        expect(reply).to_contain_text("Hello, I'm Alex. How can I help?")
        expect(reply).to_contain_text("Alex · Brightwater team")
        expect(strip).to_contain_text("You're chatting with Alex from our team.")
        expect(agent.locator("#transcript")).to_contain_text("Hello, I'm Alex. How can I help?")

        agent.get_by_text("Hand back to AI").click()
        agent.locator("#ctl-handback").get_by_label("Yes").check()
        agent.get_by_role("button", name="Hand back", exact=True).click()
        expect(agent.get_by_text("Handed back to the assistant.")).to_be_visible()
        expect(page.get_by_text("You're back with the assistant.")).to_be_visible()
        expect(strip).to_be_hidden()
        expect(page.get_by_role("button", name="Talk to a person")).to_be_visible()
        agent.context.close()

    def test_refund_waits_for_approval_and_the_customer_sees_the_result_live(self):
        page = self.open_chat()
        self.say("I want a refund for BW-10003, 40 euros")
        expect(page.locator(".msg-assistant").last).to_contain_text("why you would like a refund")
        self.say("The zip broke after a week")
        pending = page.locator(".msg-assistant.kind-action_pending")
        expect(pending).to_contain_text("approv")
        expect(pending).to_contain_text("BW-10003")
        expect(pending.get_by_text("Sent for approval")).to_be_visible()

        agent = self.agent_page()
        queue = agent.get_by_role("complementary", name="Queue")
        queue.get_by_role("link", name=re.compile("Issue a refund")).click()
        run = agent.get_by_role("article", name="Issue a refund")
        expect(run).to_contain_text("Awaiting approval")
        expect(run).to_contain_text("BW-10003")
        run.get_by_role("button", name="Approve", exact=True).click()
        expect(agent.get_by_text("Approved. The action is running.")).to_be_visible()
        expect(agent.get_by_role("article", name="Issue a refund")).to_contain_text("Succeeded")

        done = page.locator(".msg-assistant.kind-action_done")
        expect(done).to_contain_text(re.compile(r"Refund RF-\d+ .*40\.00.*BW-10003"))
        agent.context.close()

    def test_a_too_long_message_shows_the_error_and_keeps_the_text(self):
        page = self.open_chat()
        box = page.get_by_label("Your message")
        text = "a" * 2001
        box.fill(text)
        expect(page.locator("#chat-counter")).to_have_text("2001 / 2000")
        box.press("Enter")
        expect(page.get_by_role("alert")).to_contain_text("too long (2001 characters); the limit is 2000")
        expect(box).to_have_value(text)
        expect(page.locator(".msg-customer")).to_have_count(0)

        # Shortened, it goes through and the error goes away.
        box.press("End")
        box.press("Backspace")
        expect(page.get_by_role("alert")).to_be_hidden()

    def test_closed_conversation_offers_a_new_one(self):
        page = self.open_chat()
        self.say("How long does delivery take in Germany?")
        first = self.conversation_id()

        # Agents and supervisors see the conversations of their teams' queues; administrators
        # and compliance officers see every one (this one was never escalated).
        agent = self.agent_page("admin")
        agent.goto(f"{self.live_server_url}/office/conversations/{first}/")
        agent.get_by_text("Close conversation").click()
        agent.get_by_label("Resolution").select_option("answered")
        agent.get_by_role("button", name="Close", exact=True).click()
        expect(agent.get_by_text("Conversation closed.")).to_be_visible()

        expect(page.get_by_text("This conversation has been closed.")).to_be_visible()
        expect(page.get_by_label("Your message")).to_be_hidden()
        page.get_by_role("button", name="Start a new conversation").click()
        expect(page.get_by_label("Your message")).to_be_visible()
        assert self.conversation_id() != first
        agent.context.close()
