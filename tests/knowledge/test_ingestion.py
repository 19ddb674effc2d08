"""Ingestion jobs: versions, checksum skips, superseded chunks, resume, the task and the command."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from governance.models import AuditEvent
from knowledge.models import (
    Audience,
    Chunk,
    Collection,
    Document,
    DocumentVersion,
    IngestionFile,
    IngestionFileStatus,
    IngestionJob,
    IngestionStatus,
)
from knowledge.selectors import chunk_search
from knowledge.services import (
    collection_ensure,
    document_ingest_markdown,
    ingestion_job_create_from_paths,
    ingestion_job_create_from_uploads,
    ingestion_job_run,
)
from knowledge.tasks import ingest_job
from tests.knowledge.test_parsers import make_pdf

pytestmark = pytest.mark.django_db

KAYAK_V1 = b"# Kayak storage\n\n## Winter\nStore the zephyrkayak upside down in a dry shed over winter.\n"
KAYAK_V2 = b"# Kayak storage\n\n## Winter\nHang the zephyrkayak from padded straps in a frost-free garage.\n"


@pytest.fixture
def collection(db):
    return collection_ensure(name="Uploads", audience=Audience.CUSTOMER)


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data)


def run_upload(collection, files, capture) -> IngestionJob:
    with capture(execute=True):
        job = ingestion_job_create_from_uploads(collection=collection, uploads=files)
    job.refresh_from_db()
    return job


def test_upload_job_ingests_every_type_and_records_progress(collection, django_capture_on_commit_callbacks, media):
    files = [
        upload("kayak.md", KAYAK_V1),
        upload("tent-guide.pdf", make_pdf(["Pitch the quasartent away from trees in a storm."], title="Tent guide")),
        upload("faq.csv", b"question,answer\nDo you sell paddles?,Yes, in three lengths.\n"),
        upload("faq.json", json.dumps([{"question": "Do you repair zips?", "answer": "Yes, for free."}]).encode()),
        upload("returns.html", b"<html><body><article><h1>Returns</h1><p>Return within 30 days.</p>"
                               b"</article></body></html>"),
        upload("notes.txt", b"Opening hours are nine to five on weekdays."),
    ]
    job = run_upload(collection, files, django_capture_on_commit_callbacks)
    assert (job.status, job.processed_files, job.total_files, job.failed_files) == (IngestionStatus.DONE, 6, 6, 0)
    states = list(job.files.order_by("position").values_list("slug", "kind", "status", "version"))
    assert states == [
        ("kayak", "markdown", "done", 1), ("tent-guide", "pdf", "done", 1), ("faq", "csv", "done", 1),
        ("faq-json", "json", "done", 1), ("returns", "html", "done", 1), ("notes", "text", "done", 1),
    ]
    assert job.chunk_count == Chunk.objects.filter(document__collection=collection).count() > 0
    # Uploaded bytes were streamed to storage under MEDIA_ROOT.
    stored = sorted(p.name for p in (media / "knowledge" / "uploads" / str(job.pk)).iterdir())
    assert stored == ["0000-kayak.md", "0001-tent-guide.pdf", "0002-faq.csv", "0003-faq.json",
                      "0004-returns.html", "0005-notes.txt"]
    hits = chunk_search(query="quasartent storm trees")
    assert hits[0].title == "Tent guide" and hits[0].url == "/help/tent-guide/"
    assert {e.action for e in AuditEvent.objects.filter(target_id=str(job.pk))} == {
        "knowledge.ingestion_job_created", "knowledge.ingestion_job_finished"}


def test_reupload_bumps_the_version_and_superseded_chunks_stop_being_served(
        collection, django_capture_on_commit_callbacks):
    run_upload(collection, [upload("kayak.md", KAYAK_V1)], django_capture_on_commit_callbacks)
    assert any("upside down" in h.text for h in chunk_search(query="zephyrkayak winter storage", k=10))
    old_chunks = set(Chunk.objects.values_list("pk", flat=True))

    job = run_upload(collection, [upload("kayak.md", KAYAK_V2)], django_capture_on_commit_callbacks)
    file = job.files.get()
    assert (file.status, file.version) == (IngestionFileStatus.DONE, 2)
    document = Document.objects.get(collection=collection, slug="kayak")
    assert document.version == 2
    assert list(document.versions.values_list("version", flat=True)) == [2, 1]
    assert "upside down" in document.versions.get(version=1).body
    assert not old_chunks & set(Chunk.objects.values_list("pk", flat=True))
    texts = [h.text for h in chunk_search(query="zephyrkayak winter storage", k=10)]
    assert texts and all("upside down" not in t for t in texts)
    assert any("padded straps" in t for t in texts)


def test_unchanged_reupload_is_skipped_by_checksum(collection, django_capture_on_commit_callbacks):
    run_upload(collection, [upload("kayak.md", KAYAK_V1)], django_capture_on_commit_callbacks)
    chunks = set(Chunk.objects.values_list("pk", flat=True))
    events = AuditEvent.objects.filter(action="knowledge.document_ingested").count()
    job = run_upload(collection, [upload("kayak.md", KAYAK_V1)], django_capture_on_commit_callbacks)
    file = job.files.get()
    assert (file.status, file.version, file.chunk_count) == (IngestionFileStatus.SKIPPED, 1, 0)
    assert (job.status, job.skipped_files, job.chunk_count) == (IngestionStatus.DONE, 1, 0)
    assert set(Chunk.objects.values_list("pk", flat=True)) == chunks
    assert DocumentVersion.objects.count() == 1
    assert AuditEvent.objects.filter(action="knowledge.document_ingested").count() == events


def test_a_bad_file_fails_alone_and_the_batch_goes_on(collection, tmp_path):
    paths = []
    for name, data in [("a.md", KAYAK_V1), ("secret.pdf", make_pdf(["x"], password="pw")),
                       ("broken.pdf", b"%PDF-1.7 rubbish"), ("heading-only.md", b"# Just a title\n"),
                       ("c.txt", b"The lighthouse shop opens at dawn.")]:
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    paths.append(tmp_path / "missing.md")
    job = ingestion_job_create_from_paths(collection=collection, paths=paths)
    job = ingestion_job_run(job_id=job.pk, batch_size=2)
    assert (job.status, job.processed_files, job.failed_files) == (IngestionStatus.DONE, 6, 4)
    outcome = {f.name: (f.status, f.error) for f in job.files.all()}
    assert outcome["a.md"][0] == outcome["c.txt"][0] == "done"
    assert "password-protected" in outcome["secret.pdf"][1]
    assert "cannot be read" in outcome["broken.pdf"][1]
    assert "no text to index" in outcome["heading-only.md"][1]
    assert "does not exist" in outcome["missing.md"][1]
    assert set(Document.objects.filter(collection=collection).values_list("slug", flat=True)) == {"a", "c"}


def test_a_job_where_every_file_fails_is_failed(collection, tmp_path):
    (tmp_path / "x.md").write_bytes(b"")
    job = ingestion_job_create_from_paths(collection=collection, paths=[tmp_path / "x.md"])
    assert ingestion_job_run(job_id=job.pk).status == IngestionStatus.FAILED


def test_task_is_idempotent_and_resumes_an_interrupted_job(collection, tmp_path):
    for i in range(3):
        (tmp_path / f"doc{i}.md").write_bytes(f"# Doc {i}\n\n## Part\nThe emberlamp model {i} is bright.\n".encode())
    job = ingestion_job_create_from_paths(collection=collection, paths=sorted(tmp_path.glob("*.md")))
    # A worker died after the first file and while working on the second.
    ingest_job.run(str(job.pk))
    first_done = IngestionFile.objects.get(job=job, position=0)
    Document.objects.filter(slug__in=["doc1", "doc2"]).delete()
    IngestionFile.objects.filter(job=job, position=1).update(status=IngestionFileStatus.RUNNING)
    IngestionFile.objects.filter(job=job, position=2).update(status=IngestionFileStatus.QUEUED)
    IngestionJob.objects.filter(pk=job.pk).update(status=IngestionStatus.RUNNING, processed_files=1, chunk_count=1,
                                                  finished_at=None)
    ingest_job.delay(str(job.pk))
    job.refresh_from_db()
    assert (job.status, job.processed_files, job.chunk_count) == (IngestionStatus.DONE, 3, 3)
    assert IngestionFile.objects.get(pk=first_done.pk).updated_at == first_done.updated_at  # not redone
    assert Document.objects.filter(collection=collection).count() == 3
    # Running a finished job again does nothing.
    events = AuditEvent.objects.count()
    ingest_job.delay(str(job.pk))
    assert AuditEvent.objects.count() == events
    assert ingestion_job_run(job_id="00000000-0000-0000-0000-000000000000") is None


def test_legacy_markdown_ingest_also_records_versions(collection):
    document, _ = document_ingest_markdown(collection=collection, slug="kayak", body=KAYAK_V1.decode())
    document, _ = document_ingest_markdown(collection=collection, slug="kayak", body=KAYAK_V2.decode())
    assert list(document.versions.values_list("version", "chunk_count")) == [(2, 1), (1, 1)]


# --- the ingest command ---------------------------------------------------------------------

def test_command_ingests_a_directory_with_a_progress_bar(tmp_path, capsys):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "kayak.md").write_bytes(KAYAK_V1)
    (docs / "sub" / "faq.csv").write_bytes(b"question,answer\nDo you rent canoes?,Only in summer.\n")
    (docs / "image.png").write_bytes(b"\x89PNG....")  # not a supported type: not picked up from a directory
    call_command("ingest", str(docs), "--collection", "Playbooks", "--audience", "internal")
    out = capsys.readouterr().out
    assert "[###############...............] 1/2 files" in out
    assert "[##############################] 2/2 files, 2 chunks" in out
    assert "2 ingested, 0 unchanged, 0 failed, 2 chunks." in out
    collection = Collection.objects.get(name="Playbooks")
    assert collection.audience == Audience.INTERNAL
    assert set(collection.documents.values_list("slug", "url")) == {("kayak", ""), ("faq", "")}
    assert not chunk_search(query="rent canoes summer")  # internal: not for customers


def test_command_reports_failures_and_exits_non_zero(tmp_path, capsys):
    (tmp_path / "good.md").write_bytes(KAYAK_V1)
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.4 nonsense")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(CommandError, match="2 of 3 file"):
        call_command("ingest", str(tmp_path / "good.md"), str(tmp_path / "bad.pdf"), str(tmp_path / "empty.txt"),
                     "--collection", "Help")
    captured = capsys.readouterr()
    assert "1 ingested, 0 unchanged, 2 failed" in captured.out
    assert "bad.pdf: This PDF cannot be read" in captured.err
    assert "empty.txt: The file is empty." in captured.err
    assert Document.objects.filter(slug="good").exists()


def test_command_refuses_an_audience_mismatch(collection, tmp_path):
    (tmp_path / "a.md").write_bytes(KAYAK_V1)
    with pytest.raises(CommandError, match="audience"):
        call_command("ingest", str(tmp_path / "a.md"), "--collection", collection.name, "--audience", "internal")
    (tmp_path / "nothing-here").mkdir()
    with pytest.raises(CommandError, match="No supported files"):
        call_command("ingest", str(tmp_path / "nothing-here"), "--collection", collection.name)
