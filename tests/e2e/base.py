"""What every browser test shares: one live ASGI server per class, the demo loaded before each
test, and the customer's and staff's ways into the app."""

from __future__ import annotations

import pytest
from channels.testing import ChannelsLiveServerTestCase
from playwright.sync_api import Browser, Page, expect

# A turn includes the first load of the embedding model in the server process.
expect.set_options(timeout=20_000)


class BrowserTestCase(ChannelsLiveServerTestCase):
    """One class, so one server process: it loads the embedding model once."""

    @pytest.fixture(autouse=True)
    def _inject(self, page: Page, browser: Browser, demo_backend):
        self.page = page
        self.browser = browser
        self.backend = demo_backend

    def setUp(self):
        from convo.demo.loader import load_demo

        # The flush between tests empties the audit table (tests/conftest.py) and the role
        # groups come back through governance's post_migrate handler.
        super().setUp()
        self.backend.reset()
        load_demo()

    def open_chat(self, page: Page | None = None) -> Page:
        page = page or self.page
        page.goto(f"{self.live_server_url}/chat/")
        expect(page.locator("#conn")).to_have_text("Connected")
        return page

    def say(self, text: str, page: Page | None = None) -> None:
        page = page or self.page
        replies = page.locator(".msg-assistant:not(.live), .msg-system, .msg-agent")
        before = replies.count()
        page.get_by_label("Your message").fill(text)
        page.get_by_label("Your message").press("Enter")
        expect(page.locator(".msg-customer:not(.pending)").filter(has_text=text)).to_be_visible()
        expect(replies).not_to_have_count(before)

    def signed_in(self, username: str, path: str = "/office/", *, width: int = 1440, height: int = 900) -> Page:
        """A new browser context (its own cookies) signed in as a demo user, at ``path``."""
        context = self.browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        page.goto(f"{self.live_server_url}{path}")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(f"tandem-{username}")
        page.get_by_role("button", name="Sign in").click()
        return page

    def staff(self, username: str, *, width: int = 1440, height: int = 900) -> Page:
        """Signed in to the workspace, its queue live."""
        page = self.signed_in(username, width=width, height=height)
        expect(page.get_by_role("heading", name="Queue", exact=True)).to_be_visible()
        expect(page.locator("#queue-live")).to_have_text("Live")
        return page
