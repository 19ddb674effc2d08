"""Re-embedding: a new embedding model is built beside the active one and switched over."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from governance.models import AuditEvent
from knowledge.embedding_spaces import (
    ReembedError,
    active_space,
    embedding_text,
    reembed_cancel,
    reembed_run,
    reembed_start,
    spaces_drop_retired,
)
from knowledge.embeddings import clear_cache
from knowledge.models import Audience, Chunk, ChunkEmbedding, EmbeddingSpace, EmbeddingSpaceStatus
from knowledge.selectors import chunk_search
from knowledge.services import collection_ensure, document_ingest_markdown
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.django_db

TENTS = """# Tent care

## Drying
Always dry your tent completely before storing it, or mildew will stain the fabric.

## Repairs
Small tears can be fixed with the repair patches that come in the tent bag.
"""
KAYAKS = """# Kayak storage

## Winter
Store kayaks upside down on padded racks, away from direct sunlight, over the winter.
"""
STOVES = """# Camping stoves

## Fuel
Only use the gas canisters listed in the stove manual; refill adapters void the warranty.
"""


@pytest.fixture
def fake():
    server = FakeOpenAI().start()
    clear_cache()  # vectors cached by earlier tests would hide what is sent to the model
    yield server
    server.stop()
    clear_cache()


@pytest.fixture
def library(db):
    collection = collection_ensure(name="Gear care", audience=Audience.CUSTOMER)
    document_ingest_markdown(collection=collection, slug="tent-care", body=TENTS)
    document_ingest_markdown(collection=collection, slug="kayak-storage", body=KAYAKS)
    return collection


def openai_embeddings(fake, dimensions=256):
    return override_settings(EMBEDDINGS="openai", LLM_BASE_URL=fake.base_url, LLM_API_KEY="test",
                             EMBEDDINGS_OPENAI_MODEL="text-embedding-3-small", EMBEDDING_DIMENSIONS=dimensions)


def index_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", [name])
        return cursor.fetchone() is not None


def test_reembedding_builds_a_new_index_beside_the_old_one_and_switches_over(library, fake):
    old = active_space()
    assert (old.provider, old.dimensions) == ("local", 384)
    chunk_count = Chunk.objects.count()
    with openai_embeddings(fake):
        space = reembed_start(dispatch=False)
        assert space.status == EmbeddingSpaceStatus.BUILDING and space.total_chunks == chunk_count

        # Half-way through, searches still run on the old model and find the answer.
        reembed_run(space_id=space.pk, batch_size=1, max_batches=1)
        space.refresh_from_db()
        assert space.status == EmbeddingSpaceStatus.BUILDING and space.embedded_chunks == 1
        fake.reset()
        hits = chunk_search(query="how should I store my kayak in winter", k=3)
        assert hits[0].title == "Kayak storage"
        assert 0.3 < hits[0].similarity < 0.99  # MiniLM, not the new model
        assert fake.embedding_requests == []  # the query was embedded locally

        # A document ingested during the build gets vectors in both spaces.
        document, _ = document_ingest_markdown(collection=library, slug="stoves", body=STOVES)
        stove_chunks = list(document.chunks.all())
        for chunk in stove_chunks:
            assert set(ChunkEmbedding.objects.filter(chunk=chunk).values_list("space_id", flat=True)) == {
                old.pk, space.pk}

        # The rest of the build, then the switch.
        reembed_run(space_id=space.pk, batch_size=2)
        space.refresh_from_db()
        old.refresh_from_db()
        assert space.status == EmbeddingSpaceStatus.ACTIVE and old.status == EmbeddingSpaceStatus.RETIRED
        assert space.embedded_chunks == space.total_chunks == Chunk.objects.count()
        assert index_exists(space.index_name)
        assert active_space().pk == space.pk
        assert ChunkEmbedding.objects.filter(space=space).count() == Chunk.objects.count()

        # Searches now embed the query with the new model and rank by its vectors. The fake
        # model's vectors are random per text: a paraphrase is no longer similar (MiniLM gave
        # it 0.3 or more), while a chunk's exact text is still a perfect match.
        fake.reset()
        hits = chunk_search(query="how should I store my kayak in winter", k=3, mode="dense")
        assert [r["input"] for r in fake.embedding_requests] == [["how should I store my kayak in winter"]]
        assert max(abs(h.similarity) for h in hits) < 0.3
        target = Chunk.objects.get(document__slug="tent-care", section="Repairs")
        text = embedding_text(title=target.title, section=target.section, text=target.text)
        hits = chunk_search(query=text, k=3, mode="dense")
        assert hits[0].chunk_id == str(target.pk)
        assert hits[0].similarity == pytest.approx(1.0, abs=1e-4)

    actions = list(AuditEvent.objects.filter(action__startswith="knowledge.").values_list("action", flat=True))
    assert "knowledge.reembed_started" in actions and "knowledge.embedding_space_activated" in actions

    # The retired space answers until it is dropped; dropping frees its vectors and index.
    assert index_exists(old.index_name)
    assert [s.pk for s in spaces_drop_retired()] == [old.pk]
    assert not ChunkEmbedding.objects.filter(space=old).exists()
    assert not index_exists(old.index_name)
    assert spaces_drop_retired() == []


def test_an_interrupted_build_resumes_where_it_stopped(library, fake):
    with openai_embeddings(fake):
        space = reembed_start(dispatch=False)
        reembed_run(space_id=space.pk, batch_size=1, max_batches=2)
        first = set(ChunkEmbedding.objects.filter(space=space).values_list("chunk_id", flat=True))
        fake.reset()
        reembed_run(space_id=space.pk, batch_size=10)
        # Only the chunks still missing were sent to the model the second time.
        sent = [text for request in fake.embedding_requests for text in request["input"]]
        assert len(sent) == Chunk.objects.count() - len(first)
        space.refresh_from_db()
        assert space.status == EmbeddingSpaceStatus.ACTIVE


def test_a_chunk_replaced_during_the_build_does_not_break_it(library, fake):
    with openai_embeddings(fake):
        space = reembed_start(dispatch=False)
        reembed_run(space_id=space.pk, batch_size=1, max_batches=1)
        # A new version replaces the tent chunks while the build runs.
        document_ingest_markdown(collection=library, slug="tent-care", body=TENTS + "\n## Poles\nCarry spare poles.\n")
        reembed_run(space_id=space.pk)
        space.refresh_from_db()
    assert space.status == EmbeddingSpaceStatus.ACTIVE
    live = set(Chunk.objects.values_list("pk", flat=True))
    assert set(ChunkEmbedding.objects.filter(space=space).values_list("chunk_id", flat=True)) == live


def test_reembedding_refuses_the_model_in_use_and_a_second_build(library, fake):
    with pytest.raises(ReembedError, match="already uses"):
        reembed_start(dispatch=False)
    with openai_embeddings(fake):
        reembed_start(dispatch=False)
        with pytest.raises(ReembedError, match="already under way"):
            reembed_start(dispatch=False)


def test_cancelling_a_build_drops_its_vectors(library, fake):
    with openai_embeddings(fake):
        space = reembed_start(dispatch=False)
        reembed_run(space_id=space.pk, batch_size=1, max_batches=1)
        reembed_cancel(space=space)
    space.refresh_from_db()
    assert space.status == EmbeddingSpaceStatus.FAILED
    assert not ChunkEmbedding.objects.filter(space=space).exists()
    assert active_space().provider == "local"
    with pytest.raises(ReembedError):
        reembed_cancel(space=space)


def test_the_model_provider_failing_leaves_searches_on_the_old_index(library, fake):
    with openai_embeddings(fake):
        space = reembed_start(dispatch=False)
        fake.stop()
        with pytest.raises(Exception):  # noqa: B017 - the openai client's connection error
            reembed_run(space_id=space.pk)
    space.refresh_from_db()
    assert space.status == EmbeddingSpaceStatus.BUILDING and "Error" in space.error
    assert chunk_search(query="kayak winter storage", k=1)[0].title == "Kayak storage"


def test_reembed_command_shows_progress_and_status(library, fake):
    out = io.StringIO()
    with openai_embeddings(fake):
        call_command("reembed", stdout=out)
        assert "Searches now use text-embedding-3-small" in out.getvalue()
        assert f"{Chunk.objects.count()}/{Chunk.objects.count()} chunks" in out.getvalue()
        status = io.StringIO()
        call_command("reembed", "--status", stdout=status)
    lines = status.getvalue().splitlines()
    assert lines[0].startswith("active") and "text-embedding-3-small" in lines[0]
    assert lines[1].startswith("retired") and "all-MiniLM-L6-v2" in lines[1]
    assert EmbeddingSpace.objects.count() == 2


def test_admin_shows_the_index_and_lets_a_model_owner_start_and_cancel_a_rebuild(library, fake, users, client):
    url = "/admin/knowledge/embeddingspace/"
    client.force_login(users["modelowner"])
    page = client.get(url)
    assert page.status_code == 200
    assert "up to date with the configured model" in page.content.decode()
    with openai_embeddings(fake):
        page = client.get(url).content.decode()
        assert "Re-embed with text-embedding-3-small" in page
        response = client.post(f"{url}reembed/", follow=True)
        assert "Searches keep using the current index" in response.content.decode()
        building = EmbeddingSpace.objects.get(status=EmbeddingSpaceStatus.BUILDING)
        assert "Cancel re-embedding" in client.get(url).content.decode()
        # A second click while it builds is refused with the reason.
        assert "already under way" in client.post(f"{url}reembed/", follow=True).content.decode()
        client.post(f"{url}{building.pk}/cancel/")
    building.refresh_from_db()
    assert building.status == EmbeddingSpaceStatus.FAILED


def test_only_model_owners_and_administrators_may_rebuild(library, fake, users, client):
    url = "/admin/knowledge/embeddingspace/"
    client.force_login(users["compliance"])
    assert client.get(url).status_code == 200  # may look
    with openai_embeddings(fake):
        assert client.post(f"{url}reembed/").status_code == 403
    client.force_login(users["agent"])
    assert client.get(url).status_code == 403
    assert not EmbeddingSpace.objects.filter(status=EmbeddingSpaceStatus.BUILDING).exists()


def test_space_list_costs_the_same_queries_however_many_spaces(library, fake, users, client):
    from django.db import connection as conn
    from django.test.utils import CaptureQueriesContext

    client.force_login(users["modelowner"])
    url = "/admin/knowledge/embeddingspace/"
    client.get(url)
    with CaptureQueriesContext(conn) as one:
        client.get(url)
    with openai_embeddings(fake):
        for _ in range(2):
            reembed_cancel(space=reembed_start(dispatch=False))
        with CaptureQueriesContext(conn) as three:
            page = client.get(url).content.decode()
    assert page.count("Failed") >= 2
    assert len(three.captured_queries) == len(one.captured_queries)
