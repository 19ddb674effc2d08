"""Upload batches: bad files are refused one by one, duplicates make one document, stored files are capped."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.test import override_settings
from django.urls import reverse
from rest_framework.test import APIClient

from governance.models import AuditEvent
from knowledge.exceptions import UploadRejected
from knowledge.models import (
    Audience,
    Document,
    DocumentVersion,
    IngestionFile,
    IngestionFileStatus,
    IngestionJob,
    IngestionStatus,
)
from knowledge.selectors import chunk_search
from knowledge.services import collection_ensure, ingestion_job_create_from_uploads, ingestion_job_run
from tests.knowledge.test_ingestion import KAYAK_V1, KAYAK_V2, upload

pytestmark = pytest.mark.django_db

MB = 1024 * 1024
GOOD_MD = b"# Paddle care\n\n## Rinsing\nRinse the glimmerpaddle in fresh water after every trip to the sea.\n"
GOOD_HTML = (b"<html><head><title>Stove safety</title></head><body><article><h1>Stove safety</h1>"
             b"<p>Never light the frostkettle stove inside a closed tent.</p></article></body></html>")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def collection(db):
    return collection_ensure(name="Batch uploads", audience=Audience.CUSTOMER)


def mixed_batch() -> list:
    return [upload("good.md", GOOD_MD), upload("empty.txt", b""), upload("huge.txt", b"a" * (2 * MB)),
            upload("image.png", PNG), upload("good2.html", GOOD_HTML)]


def stored_files(media, job=None) -> list[str]:
    root = media / "knowledge" / "uploads"
    if job is not None:
        root = root / str(job.pk)
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


def outcome(job) -> list[tuple[str, str, str]]:
    return list(job.files.order_by("position").values_list("name", "status", "error"))


# --- a batch with some bad files --------------------------------------------------------------

def test_bad_files_fail_alone_and_the_good_ones_are_ingested(collection, media, django_capture_on_commit_callbacks):
    with override_settings(KNOWLEDGE_MAX_UPLOAD_MB=1):
        with django_capture_on_commit_callbacks() as callbacks:
            job = ingestion_job_create_from_uploads(collection=collection, uploads=mixed_batch())
        # Before the job runs, the refused files are already settled and counted.
        job.refresh_from_db()
        assert (job.status, job.total_files, job.processed_files, job.failed_files) == (
            IngestionStatus.QUEUED, 5, 3, 3)
        assert [f.status for f in job.files.order_by("position")] == [
            "queued", "failed", "failed", "failed", "queued"]
        for callback in callbacks:  # the queued run (in-process: tests run tasks eagerly)
            callback()
    job.refresh_from_db()
    assert (job.status, job.processed_files, job.failed_files, job.skipped_files) == (IngestionStatus.DONE, 5, 3, 0)
    files = outcome(job)
    assert [(name, status) for name, status, _ in files] == [
        ("good.md", "done"), ("empty.txt", "failed"), ("huge.txt", "failed"), ("image.png", "failed"),
        ("good2.html", "done")]
    errors = {name: error for name, _, error in files}
    assert errors["empty.txt"] == "The file is empty."
    assert errors["huge.txt"] == "The file is larger than the 1 MB limit."
    assert errors["image.png"].startswith("Unsupported file type: this is a PNG image.")
    assert errors["good.md"] == errors["good2.html"] == ""
    # Only the good files were stored, under their batch positions.
    assert stored_files(media, job) == ["0000-good.md", "0004-good2.html"]
    assert set(collection.documents.values_list("slug", flat=True)) == {"good", "good2"}
    assert chunk_search(query="glimmerpaddle fresh water")[0].title == "Paddle care"
    assert chunk_search(query="frostkettle stove tent")[0].title == "Stove safety"
    created = AuditEvent.objects.get(action="knowledge.ingestion_job_created", target_id=str(job.pk))
    assert (created.data["files"], created.data["failed_at_upload"]) == (5, 3)


def test_a_refused_file_does_not_take_the_slug_of_a_good_one(collection, django_capture_on_commit_callbacks):
    # "kayak.txt" would have taken the slug "kayak" and pushed the good file to "kayak-md".
    with django_capture_on_commit_callbacks(execute=True):
        job = ingestion_job_create_from_uploads(collection=collection, uploads=[
            upload("kayak.txt", b""), upload("kayak.md", KAYAK_V1)])
    assert job.files.get(name="kayak.md").document.slug == "kayak"
    assert list(collection.documents.values_list("slug", flat=True)) == ["kayak"]


def test_a_job_whose_good_files_all_fail_later_is_failed(collection, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = ingestion_job_create_from_uploads(collection=collection, uploads=[
            upload("empty.md", b""), upload("broken.pdf", b"%PDF-1.4 rubbish")])
    job.refresh_from_db()
    assert (job.status, job.processed_files, job.failed_files) == (IngestionStatus.FAILED, 2, 2)
    assert "cannot be read" in job.files.get(name="broken.pdf").error


# --- a batch where every file is refused ------------------------------------------------------

def test_an_all_bad_batch_is_refused_with_every_reason_and_nothing_is_stored(collection, media):
    with override_settings(KNOWLEDGE_MAX_UPLOAD_MB=1), pytest.raises(UploadRejected) as refused:
        ingestion_job_create_from_uploads(collection=collection, uploads=[
            upload("empty.txt", b""), upload("huge.txt", b"a" * (2 * MB)), upload("image.png", PNG)])
    message = str(refused.value)
    assert message.startswith("None of the 3 files can be ingested.")
    assert "empty.txt: The file is empty." in message
    assert "huge.txt: The file is larger than the 1 MB limit." in message
    assert "image.png: Unsupported file type: this is a PNG image." in message
    assert refused.value.status_code == 400
    assert [name for name, _ in refused.value.refusals] == ["empty.txt", "huge.txt", "image.png"]
    assert stored_files(media) == []
    assert not IngestionJob.objects.exists() and not IngestionFile.objects.exists()
    assert not AuditEvent.objects.filter(action="knowledge.ingestion_job_created").exists()


def test_a_batch_refused_only_for_size_answers_413(collection, media):
    with override_settings(KNOWLEDGE_MAX_UPLOAD_MB=1), pytest.raises(UploadRejected) as refused:
        ingestion_job_create_from_uploads(collection=collection, uploads=[upload("huge.txt", b"a" * (2 * MB))])
    assert str(refused.value) == "huge.txt: The file is larger than the 1 MB limit."
    assert (refused.value.status_code, refused.value.file_name) == (413, "huge.txt")
    assert stored_files(media) == [] and not IngestionJob.objects.exists()


def test_no_files_or_bad_labels_refuse_the_batch_before_anything_is_stored(collection, media):
    with pytest.raises(UploadRejected, match="No files were uploaded"):
        ingestion_job_create_from_uploads(collection=collection, uploads=[])
    with pytest.raises(UploadRejected, match="must be a JSON object"):
        ingestion_job_create_from_uploads(collection=collection, uploads=[upload("good.md", GOOD_MD)],
                                          metadata=["tents"])
    assert stored_files(media) == [] and not IngestionJob.objects.exists()


# --- duplicates in one batch ------------------------------------------------------------------

def test_the_same_file_twice_is_ingested_once(collection, media, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = ingestion_job_create_from_uploads(collection=collection, uploads=[
            upload("kayak.md", KAYAK_V1), upload("kayak.md", KAYAK_V1), upload("kayak-copy.md", KAYAK_V1)])
    job.refresh_from_db()
    assert (job.status, job.processed_files, job.failed_files, job.skipped_files) == (IngestionStatus.DONE, 3, 0, 2)
    assert outcome(job) == [
        ("kayak.md", "done", ""),
        ("kayak.md", "skipped", "Duplicate of kayak.md in this batch (same content): ingested once."),
        ("kayak-copy.md", "skipped", "Duplicate of kayak.md in this batch (same content): ingested once."),
    ]
    assert list(collection.documents.values_list("slug", "version")) == [("kayak", 1)]
    assert DocumentVersion.objects.count() == 1
    assert stored_files(media, job) == ["0000-kayak.md"]


@pytest.mark.parametrize("second_name", ["kayak.md", "KAYAK.md"])
def test_two_files_of_one_name_with_different_content_keep_the_first(collection, media, second_name,
                                                                     django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = ingestion_job_create_from_uploads(collection=collection, uploads=[
            upload("kayak.md", KAYAK_V1), upload(second_name, KAYAK_V2)])
    job.refresh_from_db()
    assert (job.status, job.failed_files) == (IngestionStatus.DONE, 1)
    (_, first, _), (_, second, error) = outcome(job)
    assert (first, second) == ("done", "failed")
    assert error.startswith("Another file named kayak.md comes earlier in this batch with different content")
    document = Document.objects.get(collection=collection)
    assert (document.slug, document.version) == ("kayak", 1) and "upside down" in document.body
    assert stored_files(media, job) == ["0000-kayak.md"]


def test_a_refused_file_does_not_block_a_good_one_of_the_same_name(collection, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = ingestion_job_create_from_uploads(collection=collection, uploads=[
            upload("kayak.md", b""), upload("kayak.md", KAYAK_V1)])
    assert [(name, status) for name, status, _ in outcome(job)] == [("kayak.md", "failed"), ("kayak.md", "done")]
    assert Document.objects.filter(collection=collection, slug="kayak").exists()


# --- large files: streamed in, capped when read back ------------------------------------------

def temporary_upload(name: str, data: bytes) -> TemporaryUploadedFile:
    """What Django hands over for a file past FILE_UPLOAD_MAX_MEMORY_SIZE: a file on disk."""
    uploaded = TemporaryUploadedFile(name, "text/plain", len(data), None)
    uploaded.write(data)
    uploaded.seek(0)
    return uploaded


def test_a_temporary_upload_is_stored_intact_and_a_stored_file_over_the_limit_fails(
        collection, media, django_capture_on_commit_callbacks):
    data = b"The lanternfish torch is waterproof. " * (MB // 24)  # about 1.5 MB
    uploaded = temporary_upload("torch.txt", data)
    with django_capture_on_commit_callbacks() as callbacks:
        job = ingestion_job_create_from_uploads(collection=collection, uploads=[uploaded])
    uploaded.close()  # as Django does at the end of the request
    stored = media / job.files.get().storage_name
    assert stored.read_bytes() == data
    # The limit was lowered before the job ran: the stored file is refused, not read into memory whole.
    with override_settings(KNOWLEDGE_MAX_UPLOAD_MB=1):
        for callback in callbacks:
            callback()
    job.refresh_from_db()
    assert job.status == IngestionStatus.FAILED
    assert job.files.get().error == "The file is larger than the 1 MB limit."
    assert not Document.objects.exists()


def test_a_stored_file_that_went_missing_fails_with_a_reason(collection, media, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        job = ingestion_job_create_from_uploads(collection=collection, uploads=[upload("kayak.md", KAYAK_V1)])
    (media / job.files.get().storage_name).unlink()
    for callback in callbacks:
        callback()
    file = IngestionFile.objects.get(job=job)
    assert (file.status, file.error) == (
        IngestionFileStatus.FAILED, "The uploaded file is no longer in storage; upload it again.")
    assert ingestion_job_run(job_id=job.pk).status == IngestionStatus.FAILED


# --- through the REST API ---------------------------------------------------------------------

@pytest.fixture
def api_client(db):
    # A superuser is an administrator, who may upload to any collection.
    user = get_user_model().objects.create_superuser(username="root", password="x-root-pass-123")
    client = APIClient()
    client.force_authenticate(user)
    return client


def post_files(client, collection, files):
    return client.post(reverse("api-knowledge-upload", args=[collection.pk]), {"files": files}, format="multipart")


def test_api_accepts_a_mixed_batch_and_reports_each_file(collection, api_client, media,
                                                         django_capture_on_commit_callbacks):
    with override_settings(KNOWLEDGE_MAX_UPLOAD_MB=1), django_capture_on_commit_callbacks(execute=True):
        response = post_files(api_client, collection, mixed_batch())
    assert response.status_code == 202, response.content
    assert response.json()["files"] == 5
    status = api_client.get(response.json()["status_url"]).json()
    assert (status["status"], status["progress"], status["failed"]) == ("done", {"done": 5, "total": 5}, 3)
    assert [(f["name"], f["status"]) for f in status["files"]] == [
        ("good.md", "done"), ("empty.txt", "failed"), ("huge.txt", "failed"), ("image.png", "failed"),
        ("good2.html", "done")]
    assert [f["error"][:40] for f in status["files"]] == [
        "", "The file is empty.", "The file is larger than the 1 MB limit.",
        "Unsupported file type: this is a PNG ima", ""]
    assert all(f["document_id"] for f in status["files"] if f["status"] == "done")
    assert stored_files(media) == ["0000-good.md", "0004-good2.html"]
    assert chunk_search(query="frostkettle stove")[0].title == "Stove safety"


def test_api_refuses_an_all_bad_batch_with_every_reason(collection, api_client, media):
    with override_settings(KNOWLEDGE_MAX_UPLOAD_MB=1):
        response = post_files(api_client, collection, [upload("empty.txt", b""), upload("image.png", PNG)])
        too_big = post_files(api_client, collection, [upload("huge.txt", b"a" * (2 * MB))])
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "empty.txt: The file is empty." in detail and "image.png: Unsupported file type" in detail
    assert too_big.status_code == 413 and too_big.json()["file"] == "huge.txt"
    assert not IngestionJob.objects.exists() and stored_files(media) == []


def test_api_duplicates_make_one_document(collection, api_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_files(api_client, collection, [upload("kayak.md", KAYAK_V1), upload("kayak.md", KAYAK_V1)])
    status = api_client.get(response.json()["status_url"]).json()
    assert [(f["name"], f["status"]) for f in status["files"]] == [("kayak.md", "done"), ("kayak.md", "skipped")]
    assert status["skipped"] == 1 and "Duplicate of kayak.md" in status["files"][1]["error"]
    assert Document.objects.filter(collection=collection).count() == 1


# --- through the admin upload page ------------------------------------------------------------

def test_admin_upload_of_a_mixed_batch_shows_each_files_outcome(collection, client, django_capture_on_commit_callbacks):
    # The admin form itself refuses empty files (Django's FileField), so this batch has none.
    client.force_login(get_user_model().objects.create_superuser(username="root", password="x-root-pass-123"))
    url = reverse("admin:knowledge_collection_upload", args=[collection.pk])
    with override_settings(KNOWLEDGE_MAX_UPLOAD_MB=1), django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"files": [upload("good.md", GOOD_MD), upload("huge.txt", b"a" * (2 * MB)),
                                               upload("image.png", PNG)]})
    job = IngestionJob.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("admin:knowledge_ingestion_job_progress", args=[job.pk])
    progress = client.get(response.url)
    # The page draws its table from the job's data embedded in it.
    assert progress.status_code == 200 and b"The file is larger than the 1 MB limit." in progress.content
    status = client.get(reverse("admin:knowledge_ingestion_job_status", args=[job.pk])).json()
    assert [(f["name"], f["status"], f["error"][:30]) for f in status["files"]] == [
        ("good.md", "done", ""), ("huge.txt", "failed", "The file is larger than the 1 "),
        ("image.png", "failed", "Unsupported file type: this is")]
    # A batch with nothing to ingest stays on the form, with every file's reason.
    with override_settings(KNOWLEDGE_MAX_UPLOAD_MB=1):
        refused = client.post(url, {"files": [upload("huge.txt", b"a" * (2 * MB)), upload("image.png", PNG)]})
    assert refused.status_code == 200
    assert b"huge.txt: The file is larger than the 1 MB limit." in refused.content
    assert b"image.png: Unsupported file type" in refused.content
    assert IngestionJob.objects.count() == 1
