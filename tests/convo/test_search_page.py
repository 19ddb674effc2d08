"""The knowledge search page agents use to see what the assistant would find."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_agent_sees_ranked_passages_with_both_scores(client, users):
    client.force_login(users["agent"])
    response = client.get("/office/search/", {"q": "How much does delivery within Germany cost?"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Shipping times and costs" in html
    assert "Similarity" in html and "Lexical" in html and "Fused" in html
    hits = response.context["hits"]
    assert hits[0]["hit"].title == "Shipping times and costs"
    assert hits[0]["hit"].similarity > 0.3


def test_internal_playbooks_are_searchable_by_staff_and_marked(client, users):
    client.force_login(users["agent"])
    everything = client.get("/office/search/", {"q": "fraud warning signs", "scope": "all"}).context["hits"]
    assert any(row["internal"] for row in everything)
    customer_only = client.get("/office/search/", {"q": "fraud warning signs", "scope": "customer"}).context["hits"]
    assert not any(row["internal"] for row in customer_only)


def test_lexical_mode_ranks_by_words_only(client, users):
    client.force_login(users["agent"])
    hits = client.get("/office/search/", {"q": "waterproof jacket wash", "mode": "lexical"}).context["hits"]
    assert hits and all("lexical" in row["hit"].ranks and "dense" not in row["hit"].ranks for row in hits)


def test_unknown_mode_falls_back_to_hybrid(client, users):
    client.force_login(users["agent"])
    response = client.get("/office/search/", {"q": "gift card", "mode": "'; DROP TABLE x"})
    assert response.status_code == 200 and response.context["mode"] == "hybrid"


def test_search_page_needs_a_staff_role(client, demo, outsider):
    assert client.get("/office/search/", {"q": "refund"}).status_code == 302
    client.force_login(outsider)
    assert client.get("/office/search/", {"q": "refund"}).status_code == 403


def test_search_page_query_count(client, users, django_assert_num_queries):
    client.force_login(users["compliance"])
    client.get("/office/search/", {"q": "refund to a gift card"})  # warm the embedding cache
    # session, user, roles, the collections the user may read; the active embedding space (the
    # test settings never cache it), the search scoped to the collections (the demo's few
    # chunks are ranked exactly: a capped count, then the ranking in a savepoint with index
    # scans off: 3 statements more), term statistics, lexical, the similarity of lexical-only
    # hits; and the hits' collections.
    with django_assert_num_queries(15):
        client.get("/office/search/", {"q": "refund to a gift card"})
