"""Upload API and admin upload pages: who may upload, what is refused, job status."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from governance.roles import Role
from knowledge.models import Audience, Document, IngestionJob, IngestionStatus
from knowledge.services import collection_ensure

pytestmark = pytest.mark.django_db

BODY = b"# Paddle sizes\n\n## Length\nPick a quillpaddle of 220 cm for touring kayaks.\n"


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def collection(db):
    return collection_ensure(name="Help uploads", audience=Audience.CUSTOMER)


def make_user(username: str, role: str | None = None, *, staff: bool = True):
    user = get_user_model().objects.create_user(username=username, password="x-pass-123", is_staff=staff)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def upload_url(collection_id) -> str:
    return reverse("api-knowledge-upload", args=[collection_id])


def post_files(client, url, *files):
    return client.post(url, {"files": list(files)}, format="multipart")


@pytest.mark.parametrize("role, staff, expected", [
    (None, None, 403),  # anonymous
    (None, True, 403),  # logged in, no role
    (Role.AGENT, True, 403),
    (Role.SUPERVISOR, True, 403),
    (Role.COMPLIANCE, True, 403),
    (Role.MODEL_OWNER, False, 403),  # not staff (e.g. deactivated back-office access)
    (Role.MODEL_OWNER, True, 202),
    (Role.ADMINISTRATOR, True, 202),
])
def test_upload_permission_matrix(collection, django_capture_on_commit_callbacks, role, staff, expected):
    user = None if staff is None else make_user("u", role, staff=staff)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_files(client_for(user), upload_url(collection.pk), SimpleUploadedFile("paddles.md", BODY))
    assert response.status_code == expected, response.content
    if expected == 202:
        job = IngestionJob.objects.get(pk=response.json()["job_id"])
        assert response.json()["status_url"].endswith(f"/api/v1/knowledge/jobs/{job.pk}/")
        assert job.status == IngestionStatus.DONE and job.created_by == user
        assert Document.objects.get(slug="paddles").versions.get().created_by == user
    else:
        assert not IngestionJob.objects.exists() and not Document.objects.filter(slug="paddles").exists()


@pytest.fixture
def owner_client(db):
    return client_for(make_user("owner", Role.MODEL_OWNER))


@pytest.mark.parametrize("name, data, status, message", [
    ("tool.exe", b"MZ\x90\x00", 400, "Unsupported file type '.exe'"),
    ("report.docx", b"PK\x03\x04zip", 400, "ZIP archive"),
    ("empty.md", b"", 400, "empty"),
    ("big.txt", b"a" * (1024 * 1024 + 1), 413, "larger than the 1 MB limit"),
])
def test_bad_uploads_are_refused_with_a_reason(settings, collection, owner_client, media, name, data, status,
                                               message):
    settings.KNOWLEDGE_MAX_UPLOAD_MB = 1
    response = post_files(owner_client, upload_url(collection.pk), SimpleUploadedFile("ok.md", BODY),
                          SimpleUploadedFile(name, data))
    assert response.status_code == status
    assert message in response.json()["detail"] and response.json()["file"] == name
    # All or nothing: the good file was not stored either.
    assert not IngestionJob.objects.exists()
    assert not list(media.rglob("*.md"))


def test_no_files_and_unknown_collection(collection, owner_client):
    response = owner_client.post(upload_url(collection.pk), {}, format="multipart")
    assert response.status_code == 400 and "No files" in response.json()["detail"]
    for missing in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        response = post_files(owner_client, upload_url(missing), SimpleUploadedFile("a.md", BODY))
        assert response.status_code == 404


def test_job_status(collection, owner_client, django_capture_on_commit_callbacks, django_assert_num_queries):
    with django_capture_on_commit_callbacks(execute=True):
        job_id = post_files(owner_client, upload_url(collection.pk), SimpleUploadedFile("paddles.md", BODY),
                            SimpleUploadedFile("x.pdf", b"%PDF-1.4 broken")).json()["job_id"]
    url = reverse("api-knowledge-job", args=[job_id])
    # the job and its files (force_authenticate skips the session; roles are cached on the user)
    with django_assert_num_queries(2):
        response = owner_client.get(url)
    body = response.json()
    assert response.status_code == 200
    assert (body["status"], body["progress"], body["failed"]) == ("done", {"done": 2, "total": 2}, 1)
    assert [(f["name"], f["status"], f["version"]) for f in body["files"]] == [
        ("paddles.md", "done", 1), ("x.pdf", "failed", None)]
    assert "cannot be read" in body["files"][1]["error"]
    assert client_for(make_user("agent", Role.AGENT)).get(url).status_code == 403
    assert client_for(None).get(url).status_code == 403
    assert owner_client.get(reverse("api-knowledge-job", args=["00000000-0000-0000-0000-000000000000"])
                            ).status_code == 404


# --- admin upload -----------------------------------------------------------------------------

def test_admin_upload_form_progress_page_and_status(client, collection, django_capture_on_commit_callbacks):
    client.force_login(make_user("owner", Role.MODEL_OWNER))
    url = reverse("admin:knowledge_collection_upload", args=[collection.pk])
    page = client.get(url)
    assert page.status_code == 200 and b'multiple' in page.content and b"Upload and ingest" in page.content
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"files": [SimpleUploadedFile("paddles.md", BODY),
                                               SimpleUploadedFile("faq.csv", b"question,answer\nWhy?,Because.\n")]})
    job = IngestionJob.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("admin:knowledge_ingestion_job_progress", args=[job.pk])
    progress = client.get(response.url)
    assert progress.status_code == 200 and b'role="progressbar"' in progress.content
    status = client.get(reverse("admin:knowledge_ingestion_job_status", args=[job.pk])).json()
    assert status["progress"] == {"done": 2, "total": 2} and status["status"] == "done"


def test_admin_upload_shows_refusals_and_denies_other_roles(client, collection):
    client.force_login(make_user("owner", Role.MODEL_OWNER))
    url = reverse("admin:knowledge_collection_upload", args=[collection.pk])
    response = client.post(url, {"files": [SimpleUploadedFile("a.exe", b"MZ")]})
    assert response.status_code == 200 and b"Unsupported file type" in response.content
    assert not IngestionJob.objects.exists()
    client.force_login(make_user("agent", Role.AGENT))
    assert client.get(url).status_code == 403


def test_collection_change_form_links_to_upload(client, collection):
    admin = make_user("root", Role.ADMINISTRATOR)
    admin.is_superuser = True
    admin.save()
    client.force_login(admin)
    page = client.get(reverse("admin:knowledge_collection_change", args=[collection.pk]))
    assert reverse("admin:knowledge_collection_upload", args=[collection.pk]).encode() in page.content


def test_admin_upload_without_files_asks_for_them(client, collection):
    client.force_login(make_user("owner", Role.MODEL_OWNER))
    response = client.post(reverse("admin:knowledge_collection_upload", args=[collection.pk]), {})
    assert response.status_code == 200 and b"This field is required" in response.content
