"""Per-collection chunking, document labels, publishing, and what a search may return."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from knowledge.chunking import split_sentences
from knowledge.exceptions import UploadRejected
from knowledge.models import Audience, Collection, Document, IngestionStatus
from knowledge.selectors import chunk_search
from knowledge.services import (
    METADATA_MAX_KEYS,
    collection_ensure,
    document_ingest_markdown,
    ingestion_job_create_from_uploads,
    metadata_validate,
)

pytestmark = pytest.mark.django_db

BOTH_AUDIENCES = (Audience.CUSTOMER, Audience.INTERNAL)
SENTENCES = [f"Step {i} of the ridgeway trail climbs past marker {i} towards the summit." for i in range(1, 23)]
TRAIL = "# Ridgeway trail\n\n## Route\n" + " ".join(SENTENCES) + "\n"


@pytest.fixture
def collection(db):
    return collection_ensure(name="Scoped help", audience=Audience.CUSTOMER)


def ingest_uploads(collection, files: dict[str, bytes], capture, **options):
    with capture(execute=True):
        job = ingestion_job_create_from_uploads(
            collection=collection, uploads=[SimpleUploadedFile(name, data) for name, data in files.items()], **options)
    job.refresh_from_db()
    return job


def chunk_texts(collection: Collection, slug: str = "ridgeway") -> list[str]:
    return list(Document.objects.get(collection=collection, slug=slug).chunks.order_by("position")
                .values_list("text", flat=True))


def hit_documents(hits) -> set[str]:
    return {Document.objects.get(pk=h.document_id).slug for h in hits}


# --- chunk sizes per collection ---------------------------------------------------------------

def test_a_collection_with_small_chunks_cuts_a_document_into_more_shorter_chunks():
    small = Collection.objects.create(name="FAQ-sized", chunk_size=300)
    large = Collection.objects.create(name="Manual-sized", chunk_size=2000)
    for collection in (small, large):
        document_ingest_markdown(collection=collection, slug="ridgeway", body=TRAIL)
    small_texts, large_texts = chunk_texts(small), chunk_texts(large)
    assert len(small_texts) >= 5 and len(large_texts) == 1
    assert max(map(len, small_texts)) <= 300 < len(large_texts[0]) <= 2000
    # Both hold the whole document.
    for texts in (small_texts, large_texts):
        assert {s for t in texts for s in split_sentences(t)} == set(SENTENCES)


def test_chunk_overlap_decides_how_many_sentences_are_repeated():
    none = Collection.objects.create(name="No overlap", chunk_size=300, chunk_overlap=0)
    two = Collection.objects.create(name="Two sentences", chunk_size=300, chunk_overlap=2)
    for collection in (none, two):
        document_ingest_markdown(collection=collection, slug="ridgeway", body=TRAIL)
    without = [split_sentences(t) for t in chunk_texts(none)]
    assert [s for chunk in without for s in chunk] == SENTENCES  # each sentence exactly once
    with_two = [split_sentences(t) for t in chunk_texts(two)]
    assert len(with_two) > 2
    for previous, current in zip(with_two, with_two[1:]):
        assert current[:2] == previous[-2:]
    assert sum(map(len, with_two)) == len(SENTENCES) + 2 * (len(with_two) - 1)


# --- labels -----------------------------------------------------------------------------------

def test_a_jobs_labels_mark_its_documents_and_a_search_can_ask_for_them(
        collection, django_capture_on_commit_callbacks):
    ingest_uploads(collection, {"tent-seams.md": b"# Tent seams\n\n## Care\nReseal the tent seams with "
                                                 b"waterproofing spray every season.\n"},
                   django_capture_on_commit_callbacks, metadata={"product": "tents", "region": "eu"})
    ingest_uploads(collection, {"kayak-deck.md": b"# Kayak deck\n\n## Care\nTreat the kayak deck bag with "
                                                 b"waterproofing wax every season.\n"},
                   django_capture_on_commit_callbacks, metadata={"product": "kayaks"})
    ingest_uploads(collection, {"boots.md": b"# Boots\n\n## Care\nBoots need waterproofing cream every "
                                            b"season.\n"}, django_capture_on_commit_callbacks)
    labels = dict(Document.objects.values_list("slug", "metadata"))
    assert labels == {"tent-seams": {"product": "tents", "region": "eu"}, "kayak-deck": {"product": "kayaks"},
                      "boots": {}}
    query = "waterproofing every season"
    assert hit_documents(chunk_search(query=query, k=10)) == {"tent-seams", "kayak-deck", "boots"}
    for mode in ("hybrid", "lexical", "dense"):
        assert hit_documents(chunk_search(query=query, k=10, mode=mode, metadata={"product": "tents"})) == {
            "tent-seams"}
    # Every label asked for must be on the document.
    assert hit_documents(chunk_search(query=query, metadata={"product": "tents", "region": "eu"})) == {"tent-seams"}
    assert chunk_search(query=query, metadata={"product": "tents", "region": "us"}) == []


def test_collection_ids_limit_the_search_and_an_empty_list_finds_nothing(db):
    tents = collection_ensure(name="Tents", audience=Audience.CUSTOMER)
    stoves = collection_ensure(name="Stoves", audience=Audience.CUSTOMER)
    playbook = collection_ensure(name="Playbook", audience=Audience.INTERNAL)
    document_ingest_markdown(collection=tents, slug="tent-guarantee", body="# Tent guarantee\n\n## Terms\n"
                             "Our guarantee covers tent poles for ten years.\n")
    document_ingest_markdown(collection=stoves, slug="stove-guarantee", body="# Stove guarantee\n\n## Terms\n"
                             "Our guarantee covers stove burners for five years.\n")
    document_ingest_markdown(collection=playbook, slug="guarantee-claims", body="# Guarantee claims\n\n## Terms\n"
                             "Agents approve guarantee claims up to 200 euros.\n")
    query = "what does the guarantee cover"
    assert hit_documents(chunk_search(query=query, k=10)) == {"tent-guarantee", "stove-guarantee"}
    assert hit_documents(chunk_search(query=query, k=10, collection_ids=[tents.pk])) == {"tent-guarantee"}
    assert hit_documents(chunk_search(query=query, k=10, collection_ids=[str(tents.pk), stoves.pk])) == {
        "tent-guarantee", "stove-guarantee"}
    assert chunk_search(query=query, k=10, collection_ids=[]) == []
    assert chunk_search(query=query, k=10, collection_ids=[], audiences=BOTH_AUDIENCES) == []
    # A collection does not lift the audience: internal stays internal.
    assert chunk_search(query=query, k=10, collection_ids=[playbook.pk]) == []
    assert hit_documents(chunk_search(query=query, k=10, collection_ids=[playbook.pk],
                                      audiences=BOTH_AUDIENCES)) == {"guarantee-claims"}


# --- the title is searchable ------------------------------------------------------------------

def test_a_word_only_in_the_title_finds_the_document_lexically(collection):
    document_ingest_markdown(collection=collection, slug="warranty", body="# Quorblex warranty\n\n## Cover\n"
                             "The cover lasts two years for every part.\n")
    document_ingest_markdown(collection=collection, slug="returns", body="# Returns\n\n## Time limit\n"
                             "Return any item within thirty days.\n")
    texts = Document.objects.get(slug="warranty").chunks.values_list("section", "text")
    assert not any("quorblex" in f"{section} {text}".lower() for section, text in texts)
    hits = chunk_search(query="quorblex", mode="lexical")
    assert [h.title for h in hits] == ["Quorblex warranty"]
    assert hits[0].lexical > 0


# --- publishing -------------------------------------------------------------------------------

DRAFT = b"# Nebulatarp setup\n\n## Pitching\nPeg the nebulatarp corners before raising the centre pole.\n"
LIVE = b"# Lantern care\n\n## Batteries\nTake the batteries out of the lantern before winter storage.\n"


def test_a_job_without_publish_stores_new_documents_unpublished_and_hidden(
        collection, client, django_capture_on_commit_callbacks):
    ingest_uploads(collection, {"lantern.md": LIVE}, django_capture_on_commit_callbacks)
    job = ingest_uploads(collection, {"nebulatarp.md": DRAFT}, django_capture_on_commit_callbacks, publish=False)
    assert (job.status, job.files.get().status) == (IngestionStatus.DONE, "done")
    draft = Document.objects.get(slug="nebulatarp")
    assert (draft.published, draft.status, draft.version) == (False, "ready", 1)
    assert draft.chunks.exists()  # stored and indexed, only not served
    for mode in ("hybrid", "lexical", "dense"):
        hits = chunk_search(query="nebulatarp corners centre pole", k=10, mode=mode, audiences=BOTH_AUDIENCES)
        assert str(draft.pk) not in {h.document_id for h in hits}
    assert hit_documents(chunk_search(query="lantern batteries winter", k=10)) == {"lantern"}
    # The help centre neither lists nor serves it; the published article is there.
    index = client.get(reverse("knowledge:index"))
    assert b"Lantern care" in index.content and b"Nebulatarp" not in index.content
    assert client.get(reverse("knowledge:article", args=["nebulatarp"])).status_code == 404
    assert client.get(reverse("knowledge:article", args=["lantern"])).status_code == 200


def test_a_job_without_publish_cannot_change_a_published_document(collection, django_capture_on_commit_callbacks):
    ingest_uploads(collection, {"lantern.md": LIVE}, django_capture_on_commit_callbacks)
    changed = LIVE.replace(b"Take the batteries out", b"Leave the batteries in")
    job = ingest_uploads(collection, {"lantern.md": changed, "nebulatarp.md": DRAFT},
                         django_capture_on_commit_callbacks, publish=False)
    assert (job.status, job.failed_files) == (IngestionStatus.DONE, 1)
    failed = job.files.get(name="lantern.md")
    assert (failed.status, failed.error) == ("failed", "A published document of that name exists; only someone "
                                                       "who may publish in this collection can change it.")
    lantern = Document.objects.get(slug="lantern")
    assert (lantern.version, lantern.published) == (1, True) and "Take the batteries out" in lantern.body
    assert any("Take the batteries out" in h.text for h in chunk_search(query="lantern batteries winter"))


def test_a_job_without_publish_updates_an_unpublished_document_which_stays_unpublished(
        collection, django_capture_on_commit_callbacks):
    ingest_uploads(collection, {"nebulatarp.md": DRAFT}, django_capture_on_commit_callbacks, publish=False)
    job = ingest_uploads(collection, {"nebulatarp.md": DRAFT.replace(b"Peg", b"Tie")},
                         django_capture_on_commit_callbacks, publish=False)
    assert job.files.get().status == "done"
    draft = Document.objects.get(slug="nebulatarp")
    assert (draft.version, draft.published) == (2, False) and "Tie the nebulatarp" in draft.body


# --- label validation -------------------------------------------------------------------------

@pytest.mark.parametrize("metadata, reason", [
    (["tents"], "must be a JSON object"),
    ("product=tents", "must be a JSON object"),
    ({"product": {"name": "tents"}}, "'product' must be text"),
    ({"tags": ["tents", "kayaks"]}, "'tags' must be text"),
    ({"product": None}, "'product' must be text"),
    ({f"label{i}": "x" for i in range(METADATA_MAX_KEYS + 1)}, f"at most {METADATA_MAX_KEYS} labels"),
    ({"product": "t" * 201}, "at most 200 characters"),
    ({"k" * 65: "tents"}, "at most 64 characters"),
    ({"  ": "tents"}, "non-empty text"),
    ({1: "tents"}, "non-empty text"),
])
def test_bad_labels_are_refused_with_a_reason(collection, media, metadata, reason):
    with pytest.raises(UploadRejected, match=reason):
        metadata_validate(metadata)
    with pytest.raises(UploadRejected, match=reason):
        ingestion_job_create_from_uploads(collection=collection, uploads=[SimpleUploadedFile("a.md", DRAFT)],
                                          metadata=metadata)
    assert not collection.ingestion_jobs.exists() and not media.exists()


def test_flat_short_labels_are_accepted():
    metadata_validate(None)
    metadata_validate({})
    metadata_validate({"product": "tents", "year": 2025, "weight_kg": 1.5, "beta": True,
                       **{f"l{i}": "x" * 200 for i in range(METADATA_MAX_KEYS - 4)}})
