"""The agent workspace in the browser: the live queue, claim next, takeover with typing, four-eyes
approvals, and a flagged answer that the assistant uses in the next chat."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.base import BrowserTestCase

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:Session-scoped fixtures defined as instance methods"),
]


class WorkspaceTest(BrowserTestCase):
    def test_escalation_reaches_the_open_queue_agent_claims_takes_over_and_hands_back(self):
        agent = self.staff("agent")
        queue = agent.get_by_role("complementary", name="Queue")
        expect(queue).to_contain_text("Nothing waiting")

        customer = self.open_chat()
        self.say("I want to talk to a person")
        # The open workspace hears of the new item without a reload.
        expect(queue.get_by_role("link", name=re.compile("Customer asked for a person"))).to_be_visible()

        agent.get_by_role("button", name="Claim next").click()
        expect(agent.get_by_text(re.compile("You claimed “Customer asked for a person"))).to_be_visible()
        expect(agent.locator(".q-item.current")).to_contain_text("Yours")
        expect(agent.get_by_role("list", name="Transcript")).to_contain_text("I want to talk to a person")
        # The context pane loads the suggested next steps after the page.
        expect(agent.get_by_role("heading", name="Suggested next steps")).to_be_visible()
        expect(agent.get_by_text(re.compile("The customer asked for a person"))).to_be_visible()

        agent.get_by_role("button", name="Take over").click()
        expect(customer.get_by_text("Alex from our team has joined the chat.")).to_be_visible()
        expect(agent.locator("#live-note")).to_have_text("Live")

        # The customer sees the agent typing, then the reply, live.
        agent.get_by_label("Reply to the customer").press_sequentially("Hello, I'm Alex")
        expect(customer.locator("#typing")).to_contain_text("is typing")
        agent.get_by_label("Reply to the customer").fill("Hello, I'm Alex. How can I help?")
        agent.get_by_role("button", name="Send reply").click()
        expect(customer.locator(".msg-agent")).to_contain_text("Hello, I'm Alex. How can I help?")

        # And the agent sees the customer's answer live.
        customer.get_by_label("Your message").fill("My tent pole snapped")
        customer.get_by_label("Your message").press("Enter")
        expect(agent.locator("#transcript")).to_contain_text("My tent pole snapped")

        agent.get_by_text("Hand back to AI").click()
        agent.locator("#ctl-handback").get_by_label("Yes").check()
        agent.get_by_role("button", name="Hand back", exact=True).click()
        expect(agent.get_by_text("Handed back to the assistant.")).to_be_visible()
        expect(customer.get_by_text("You're back with the assistant.")).to_be_visible()
        expect(queue).to_contain_text("Nothing waiting")
        agent.context.close()

    def test_a_refund_above_the_line_needs_two_different_approvers(self):
        customer = self.open_chat()
        self.say("I want a refund for BW-10003, 150 euros")
        self.say("The sleeping bag zip broke")
        expect(customer.locator(".msg-assistant.kind-action_pending")).to_contain_text("BW-10003")

        first = self.staff("agent")
        first.get_by_role("complementary", name="Queue").get_by_role("link", name=re.compile("Issue a refund")).click()
        run = first.get_by_role("article", name="Issue a refund")
        expect(run).to_contain_text("Four eyes")
        run.get_by_role("button", name="Approve (1st of 2)").click()
        expect(first.get_by_text(re.compile(r"Approved \(1 of 2 approvals\)\. A second person must approve"))).to_be_visible()
        run = first.get_by_role("article", name="Issue a refund")
        expect(run).to_contain_text("You approved this. It waits for a second person.")
        expect(run.get_by_role("button", name=re.compile("^Approve"))).to_have_count(0)
        assert self.backend.execution_counts == {}

        second = self.staff("agent2")
        second.get_by_role("complementary", name="Queue").get_by_role("link", name=re.compile("Issue a refund")).click()
        run = second.get_by_role("article", name="Issue a refund")
        expect(run).to_contain_text("1 of 2 approvals: Alex")
        run.get_by_role("button", name="Approve (2nd of 2)").click()
        expect(second.get_by_text("Approved. The action is running.")).to_be_visible()
        expect(second.get_by_role("article", name="Issue a refund")).to_contain_text("Succeeded")

        done = customer.locator(".msg-assistant.kind-action_done")
        expect(done).to_contain_text(re.compile(r"Refund RF-\d+ .*150\.00.*BW-10003"))
        assert list(self.backend.execution_counts.values()) == [1]
        first.context.close()
        second.context.close()

    def test_a_flagged_answer_is_what_the_assistant_says_next_time(self):
        question = "Can I rent a tent instead of buying one?"
        answer = ("We don't rent tents, but our Trail Club members get 15% off every tent, "
                  "and you can return an unused tent within 30 days.")
        customer = self.open_chat()
        self.say(question)
        self.say("I want to talk to a person")

        supervisor = self.staff("supervisor")
        supervisor.get_by_role("complementary", name="Queue").get_by_role(
            "link", name=re.compile("Customer asked for a person")).click()
        # The assistant's reply to the question (the disclosure before it cannot be flagged).
        reply = supervisor.locator(".t-assistant").filter(has=supervisor.get_by_text("Flag this answer")).first
        reply.get_by_text("Flag this answer").click()
        reply.get_by_label("What is wrong").select_option("missing_source")
        reply.get_by_label("The correct answer").fill(answer)
        reply.get_by_role("button", name="Flag and save the correct answer").click()
        expect(supervisor.get_by_text(re.compile("Flagged. Your answer is saved .* It is live"))).to_be_visible()
        expect(supervisor.locator(".flag-chip")).to_contain_text("Not in the sources")

        # A new customer asking the same question gets the agent's answer, cited.
        customer.context.clear_cookies()
        self.open_chat(customer)
        self.say(question, customer)
        reply = customer.locator(".msg-assistant").last
        expect(reply).to_contain_text("our Trail Club members get 15% off every tent")
        expect(reply.get_by_role("link", name=re.compile(r"\[1\]"))).to_be_visible()
        supervisor.context.close()
