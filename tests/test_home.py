"""The landing page sends each role to where it works; the login form lands there too."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("username", "target"), [
    ("agent", "/office/"), ("supervisor", "/office/"), ("compliance", "/office/"), ("admin", "/office/"),
    ("modelowner", "/governance/"),
])
def test_home_leads_each_role_to_its_work(client, users, username, target):
    assert client.post("/accounts/login/", {"username": username, "password": f"tandem-{username}"})["Location"] == "/"
    assert client.get("/")["Location"] == target


def test_customers_and_people_without_a_role_get_the_chat(client, outsider):
    assert client.get("/")["Location"] == "/chat/"
    client.force_login(outsider)
    assert client.get("/")["Location"] == "/chat/"
