"""Retrieval over the demo help centre, audience filtering, and (re-)ingestion."""

from __future__ import annotations

import pytest

from governance.models import AuditEvent
from knowledge.embedding_spaces import active_space
from knowledge.models import Audience, Chunk, ChunkEmbedding, Collection, Document
from knowledge.selectors import chunk_search
from knowledge.services import collection_ensure, document_ingest_markdown

pytestmark = pytest.mark.django_db

INTERNAL_QUESTION = "What are the approval limits for refunds in the agent playbook, and which fraud warning signs?"


def _internal_document_ids() -> set[str]:
    return {str(pk) for pk in Document.objects.filter(collection__audience=Audience.INTERNAL).values_list("pk", flat=True)}


# Generic phrasings ("How long does delivery take?") currently rank "Damaged or missing items"
# first; these pin the questions that name a destination.
@pytest.mark.parametrize("question", [
    "How long does delivery take to Germany?",
    "How long does standard delivery take within Germany?",
    "what does shipping to the UK cost",
])
def test_delivery_question_finds_the_shipping_article_first(demo, question):
    hits = chunk_search(query=question)
    assert hits
    assert hits[0].title == "Shipping times and costs"
    assert hits[0].url == "/help/shipping-and-delivery/"
    assert hits[0].section.startswith("Delivery")
    assert 0 < hits[0].similarity <= 1
    assert [h.rrf for h in hits] == sorted((h.rrf for h in hits), reverse=True)


def test_k_limits_the_number_of_hits(demo):
    assert len(chunk_search(query="returns refunds delivery", k=3)) == 3


def test_blank_query_finds_nothing(demo):
    assert chunk_search(query="   ") == []


def test_internal_chunks_never_reach_the_default_audience(demo):
    internal = _internal_document_ids()
    assert len(internal) == 2, "the demo has two internal playbooks"
    for question in (INTERNAL_QUESTION, "fraud warning signs parcel locker freight forwarder", "agent playbook"):
        hits = chunk_search(query=question, k=10, candidates=50)
        assert hits
        assert not internal & {h.document_id for h in hits}


def test_internal_chunks_are_found_when_the_audience_includes_internal(demo):
    internal = _internal_document_ids()
    hits = chunk_search(query=INTERNAL_QUESTION, k=5, audiences=(Audience.CUSTOMER, Audience.INTERNAL))
    assert hits[0].document_id in internal
    assert {"Agent playbook: refunds and goodwill", "Agent guide: fraud warning signs"} & {h.title for h in hits}
    internal_only = chunk_search(query=INTERNAL_QUESTION, k=5, audiences=(Audience.INTERNAL,))
    assert internal_only and {h.document_id for h in internal_only} <= internal


# --- ingestion ------------------------------------------------------------------------------

BODY_V1 = """# Tent care
## Drying
Always dry your tent fully before storing it, or the fabric can grow mould.
## Repairs
Small tears can be fixed with the repair patches that come with every Brightwater tent.
"""
BODY_V2 = """# Tent care
## Drying
Pitch the tent in the shade to dry it; strong sun weakens the flysheet coating over time.
"""


@pytest.fixture
def collection(db):
    return collection_ensure(name="Test collection", audience=Audience.CUSTOMER)


def test_ingest_stores_document_and_chunks(collection):
    document, changed = document_ingest_markdown(collection=collection, slug="tent-care", body=BODY_V1)
    assert changed
    assert (document.title, document.version, document.status) == ("Tent care", 1, "ready")
    chunks = list(document.chunks.order_by("position"))
    assert [(c.section, c.text[:20]) for c in chunks] == [("Drying", "Always dry your tent"),
                                                          ("Repairs", "Small tears can be f")]
    # one 384-dimension vector per chunk, in the active embedding space
    vectors = ChunkEmbedding.objects.filter(chunk__document=document, space=active_space())
    assert sorted(str(v.chunk_id) for v in vectors) == sorted(str(c.pk) for c in chunks)
    assert all(len(v.embedding) == 384 for v in vectors)
    event = AuditEvent.objects.get(action="knowledge.document_ingested", target_id=str(document.pk))
    assert event.data["version"] == 1 and event.data["chunks"] == 2


def test_reingesting_changed_content_bumps_the_version_and_replaces_chunks(collection):
    document, _ = document_ingest_markdown(collection=collection, slug="tent-care", body=BODY_V1)
    old_chunk_ids = set(document.chunks.values_list("pk", flat=True))
    document, changed = document_ingest_markdown(collection=collection, slug="tent-care", body=BODY_V2)
    assert changed
    document.refresh_from_db()
    assert document.version == 2
    assert document.body == BODY_V2
    assert Document.objects.filter(collection=collection, slug="tent-care").count() == 1
    chunks = list(Chunk.objects.filter(document=document))
    assert len(chunks) == 1
    assert chunks[0].text.startswith("Pitch the tent in the shade")
    assert not old_chunk_ids & {c.pk for c in chunks}
    assert not Chunk.objects.filter(pk__in=old_chunk_ids).exists()
    # Search sees only the new text.
    hits = chunk_search(query="repair patches for a torn tent", k=10)
    assert not any("repair patches" in h.text for h in hits if h.document_id == str(document.pk))
    versions = list(AuditEvent.objects.filter(action="knowledge.document_ingested", target_id=str(document.pk))
                    .order_by("seq").values_list("data__version", flat=True))
    assert versions == [1, 2]


def test_unchanged_content_is_skipped(collection):
    document, _ = document_ingest_markdown(collection=collection, slug="tent-care", body=BODY_V1)
    chunk_ids = set(document.chunks.values_list("pk", flat=True))
    events = AuditEvent.objects.count()
    again, changed = document_ingest_markdown(collection=collection, slug="tent-care", body=BODY_V1)
    assert not changed
    assert again.pk == document.pk
    again.refresh_from_db()
    assert again.version == 1
    assert set(again.chunks.values_list("pk", flat=True)) == chunk_ids
    assert AuditEvent.objects.count() == events


@pytest.mark.parametrize("body", ["", "   \n\n", "# Only a title\n\n## And a heading\n<!-- comment -->\n"])
def test_empty_document_is_refused(collection, body):
    with pytest.raises(ValueError, match="no text to index"):
        document_ingest_markdown(collection=collection, slug="empty", body=body)
    assert not Document.objects.filter(slug="empty").exists()


def test_empty_new_version_keeps_the_old_one(collection):
    document, _ = document_ingest_markdown(collection=collection, slug="tent-care", body=BODY_V1)
    with pytest.raises(ValueError):
        document_ingest_markdown(collection=collection, slug="tent-care", body="# Tent care\n")
    document.refresh_from_db()
    assert document.version == 1 and document.chunks.count() == 2


def test_same_slug_in_two_collections_are_two_documents(collection):
    other = collection_ensure(name="Other", audience=Audience.INTERNAL)
    a, _ = document_ingest_markdown(collection=collection, slug="tent-care", body=BODY_V1)
    b, _ = document_ingest_markdown(collection=other, slug="tent-care", body=BODY_V1)
    assert a.pk != b.pk
    assert Collection.objects.get(name="Other").documents.count() == 1


# --- lexical ranking shortcuts ----------------------------------------------------------------

def test_lexical_preranking_on_the_chunk_table_keeps_the_scope(collection, monkeypatch):
    import knowledge.selectors as selectors

    playbook = collection_ensure(name="Playbook", audience=Audience.INTERNAL)
    for n in range(3):
        document_ingest_markdown(collection=playbook, slug=f"quorblex-{n}", body=f"# Quorblex rule {n}\n\n## Quorblex\n"
                                 "Quorblex quorblex: escalate every quorblex claim to the quorblex desk.\n")
    document_ingest_markdown(collection=collection, slug="quorblex", body="# Quorblex warranty\n\n## Cover\n"
                             "The quorblex lasts two years.\n")
    document_ingest_markdown(collection=collection, slug="kayak", body="# Kayak care\n\n## Cover\n"
                             "Rinse the kayak; a quorblex cover helps.\n")
    monkeypatch.setattr(selectors, "LEXICAL_PRERANK_MIN_ROWS", 10**9)
    one_statement = chunk_search(query="quorblex cover", k=5, candidates=2, mode="lexical")
    assert {h.title for h in one_statement} == {"Quorblex warranty", "Kayak care"}
    # Ranked on the chunk table first: the best two are internal, so the scoped query runs too.
    monkeypatch.setattr(selectors, "LEXICAL_PRERANK_MIN_ROWS", 0)
    monkeypatch.setattr(selectors, "LEXICAL_PRERANKED", 1)
    hits = chunk_search(query="quorblex cover", k=5, candidates=2, mode="lexical")
    assert [(h.chunk_id, h.lexical) for h in hits] == [(h.chunk_id, h.lexical) for h in one_statement]
    # Enough of the best in scope: the same hits either way.
    monkeypatch.setattr(selectors, "LEXICAL_PRERANKED", 3)
    assert [h.chunk_id for h in chunk_search(query="quorblex cover", k=5, candidates=2, mode="lexical")] == [
        h.chunk_id for h in one_statement]
    internal = chunk_search(query="quorblex cover", k=5, candidates=2, mode="lexical", audiences=(Audience.INTERNAL,))
    assert {h.title for h in internal} <= {"Quorblex rule 0", "Quorblex rule 1", "Quorblex rule 2"} and internal


def test_when_the_rarest_term_is_common_chunks_with_the_two_rarest_are_scored(collection, monkeypatch):
    import knowledge.selectors as selectors

    bodies = {  # canoe in 2 chunks, paddle in 3, storage in 4
        "both": "# Canoe paddles\n\n## Care\nHang the canoe paddle on a wall.\n",
        "canoe": "# Storage\n\n## Storage\nCanoe storage: storage racks, storage bags, storage sheds.\n",
        "paddle": "# Paddle storage\n\n## Care\nDry each paddle before storage.\n",
        "paddle-grip": "# Paddle grips\n\n## Storage\nTape the grip.\n",
    }
    for slug, body in bodies.items():
        document_ingest_markdown(collection=collection, slug=slug, body=body)
    query = "canoe paddle storage"
    # No budget: the rarest term alone is already too common.
    monkeypatch.setattr(selectors, "LEXICAL_SCORED_ROWS", (0, 0))
    monkeypatch.setattr(selectors, "LEXICAL_PAIR_COMMON", False)
    assert [h.title for h in chunk_search(query=query, k=5, candidates=1, mode="lexical")] == ["Storage"]
    rarest_only = chunk_search(query=query, k=5, candidates=5, mode="lexical")
    assert {h.title for h in rarest_only} == {"Storage", "Canoe paddles"}
    # Only chunks holding the two rarest terms (canoe and paddle) are scored...
    monkeypatch.setattr(selectors, "LEXICAL_PAIR_COMMON", True)
    assert [h.title for h in chunk_search(query=query, k=5, candidates=1, mode="lexical")] == ["Canoe paddles"]
    # ...unless fewer of them than the candidates asked for: then the rarest term decides, as before.
    assert [(h.chunk_id, h.lexical) for h in chunk_search(query=query, k=5, candidates=5, mode="lexical")] == [
        (h.chunk_id, h.lexical) for h in rarest_only]
