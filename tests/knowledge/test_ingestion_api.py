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
from knowledge.permissions import Action, collection_access_grant
from knowledge.services import collection_ensure

pytestmark = pytest.mark.django_db

BODY = b"# Paddle sizes\n\n## Length\nPick a quillpaddle of 220 cm for touring kayaks.\n"


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


def grant(collection, grantee, *actions: Action):
    collection_access_grant(actor=None, collection=collection, grantee=grantee, actions=actions)


ALL = (Action.READ, Action.EDIT, Action.PUBLISH)


@pytest.mark.parametrize("access, role, staff, superuser, expected, published", [
    (None, None, None, False, 403, None),  # anonymous
    ((), None, True, False, 404, None),  # staff, no access: the collection is hidden
    ((), Role.MODEL_OWNER, True, False, 404, None),  # the role's model-level permissions grant no collection
    ((Action.READ,), Role.AGENT, True, False, 403, None),  # may read, not upload
    ((Action.EDIT,), None, True, False, 202, False),  # may edit, not publish: lands unpublished
    (ALL, None, True, False, 202, True),
    (ALL, Role.MODEL_OWNER, False, False, 403, None),  # not staff (back-office access withdrawn)
    ((), Role.ADMINISTRATOR, True, False, 202, True),  # administrators may do everything
    ((), None, True, True, 202, True),  # superuser
])
def test_upload_permission_matrix(collection, django_capture_on_commit_callbacks, access, role, staff, superuser,
                                  expected, published):
    user = None
    if staff is not None:
        user = make_user("u", role, staff=staff)
        user.is_superuser = superuser
        user.save()
        if access:
            grant(collection, user, *access)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_files(client_for(user), upload_url(collection.pk), SimpleUploadedFile("paddles.md", BODY))
    assert response.status_code == expected, response.content
    if expected == 202:
        body = response.json()
        job = IngestionJob.objects.get(pk=body["job_id"])
        assert body["status_url"].endswith(f"/api/v1/knowledge/jobs/{job.pk}/")
        assert body["publish"] is published and ("note" in body) is (not published)
        assert job.status == IngestionStatus.DONE and job.created_by == user and job.publish is published
        document = Document.objects.get(slug="paddles")
        assert document.versions.get().created_by == user and document.published is published
    else:
        assert "detail" in response.json()
        assert not IngestionJob.objects.exists() and not Document.objects.filter(slug="paddles").exists()


@pytest.fixture
def owner(collection):
    user = make_user("owner", Role.MODEL_OWNER)
    grant(collection, user, *ALL)
    return user


@pytest.fixture
def owner_client(owner):
    return client_for(owner)


@pytest.mark.parametrize("name, data, status, message", [
    ("tool.exe", b"MZ\x90\x00", 400, "Unsupported file type '.exe'"),
    ("report.docx", b"PK\x03\x04zip", 400, "ZIP archive"),
    ("empty.md", b"", 400, "empty"),
    ("big.txt", b"a" * (1024 * 1024 + 1), 413, "larger than the 1 MB limit"),
])
def test_bad_uploads_are_refused_with_a_reason(settings, collection, owner_client, media, name, data, status,
                                               message):
    settings.KNOWLEDGE_MAX_UPLOAD_MB = 1
    response = post_files(owner_client, upload_url(collection.pk), SimpleUploadedFile(name, data))
    assert response.status_code == status
    assert message in response.json()["detail"] and response.json()["file"] == name
    assert not IngestionJob.objects.exists()
    assert not [p for p in media.rglob("*") if p.is_file()]


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
    # the job (with its collection), the user's access to the collection, the files
    # (force_authenticate skips the session; roles are cached on the user)
    with django_assert_num_queries(3):
        response = owner_client.get(url)
    body = response.json()
    assert response.status_code == 200
    assert (body["status"], body["progress"], body["failed"]) == ("done", {"done": 2, "total": 2}, 1)
    assert [(f["name"], f["status"], f["version"]) for f in body["files"]] == [
        ("paddles.md", "done", 1), ("x.pdf", "failed", None)]
    assert "cannot be read" in body["files"][1]["error"]
    # an agent who may not read the collection does not learn that the job exists
    agent = make_user("agent", Role.AGENT)
    assert client_for(agent).get(url).status_code == 404
    grant(collection, agent, Action.READ)
    assert client_for(agent).get(url).status_code == 200
    assert client_for(None).get(url).status_code == 403
    assert owner_client.get(reverse("api-knowledge-job", args=["00000000-0000-0000-0000-000000000000"])
                            ).status_code == 404


# --- admin upload -----------------------------------------------------------------------------

def test_admin_upload_form_progress_page_and_status(client, collection, owner, django_capture_on_commit_callbacks):
    client.force_login(owner)
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


def test_admin_upload_shows_refusals_and_denies_others(client, collection, owner):
    client.force_login(owner)
    url = reverse("admin:knowledge_collection_upload", args=[collection.pk])
    response = client.post(url, {"files": [SimpleUploadedFile("a.exe", b"MZ")]})
    assert response.status_code == 200 and b"Unsupported file type" in response.content
    assert not IngestionJob.objects.exists()
    agent = make_user("agent", Role.AGENT)
    client.force_login(agent)
    assert client.get(url).status_code == 404  # may not read it: hidden
    grant(collection, agent, Action.READ)
    assert client.get(url).status_code == 403  # may read, not upload
    assert client.post(url, {"files": [SimpleUploadedFile("paddles.md", BODY)]}).status_code == 403
    assert not IngestionJob.objects.exists()


def test_collection_change_form_links_to_upload(client, collection):
    admin = make_user("root", Role.ADMINISTRATOR)
    admin.is_superuser = True
    admin.save()
    client.force_login(admin)
    page = client.get(reverse("admin:knowledge_collection_change", args=[collection.pk]))
    assert reverse("admin:knowledge_collection_upload", args=[collection.pk]).encode() in page.content


def test_admin_upload_without_files_asks_for_them(client, collection, owner):
    client.force_login(owner)
    response = client.post(reverse("admin:knowledge_collection_upload", args=[collection.pk]), {})
    assert response.status_code == 200 and b"This field is required" in response.content


# --- labels (metadata) ------------------------------------------------------------------------

@pytest.mark.parametrize("metadata, message", [
    ("{not json", "Metadata is not valid JSON"),
    ('["tents"]', "Metadata must be a JSON object"),
    ('{"product": {"kind": "tents"}}', "must be text"),
    ('{"": "x"}', "label names must be non-empty"),
    ('{"product": "' + "x" * 201 + '"}', "at most 200 characters"),
])
def test_bad_metadata_is_refused_with_a_reason(collection, owner_client, media, metadata, message):
    response = owner_client.post(upload_url(collection.pk), {"files": [SimpleUploadedFile("paddles.md", BODY)],
                                                             "metadata": metadata}, format="multipart")
    assert response.status_code == 400
    assert message in response.json()["detail"] and response.json()["field"] == "metadata"
    assert not IngestionJob.objects.exists() and not list(media.rglob("*.md"))


def test_metadata_labels_every_uploaded_document(collection, owner_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(upload_url(collection.pk), {
            "files": [SimpleUploadedFile("paddles.md", BODY), SimpleUploadedFile("faq.csv", b"question,answer\nWhy?,Yes.\n")],
            "metadata": '{"product": "kayaks", "year": 2024}'}, format="multipart")
    assert response.status_code == 202
    assert IngestionJob.objects.get().metadata == {"product": "kayaks", "year": 2024}
    assert {d.slug: d.metadata for d in Document.objects.all()} == {
        "paddles": {"product": "kayaks", "year": 2024}, "faq": {"product": "kayaks", "year": 2024}}


def test_admin_upload_validates_labels(client, collection, owner, django_capture_on_commit_callbacks):
    client.force_login(owner)
    url = reverse("admin:knowledge_collection_upload", args=[collection.pk])
    response = client.post(url, {"files": [SimpleUploadedFile("paddles.md", BODY)], "metadata": "product=tents"})
    assert response.status_code == 200 and "Metadata is not valid JSON" in response.content.decode()
    assert not IngestionJob.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"files": [SimpleUploadedFile("paddles.md", BODY)],
                                     "metadata": '{"product": "tents"}'})
    assert response.status_code == 302
    assert Document.objects.get(slug="paddles").metadata == {"product": "tents"}
