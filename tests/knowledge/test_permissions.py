"""Per-collection access: who may read, edit and publish each knowledge collection, in the
permission helpers, the REST API, the admin and the back-office knowledge search."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from governance.models import AuditEvent
from governance.roles import Role
from knowledge.models import Audience, Collection, Document, IngestionJob
from knowledge.permissions import (
    Action,
    actions_on,
    can,
    collection_access_grant,
    collection_access_set,
    collections_for,
)
from knowledge.selectors import chunk_search
from knowledge.services import collection_ensure, document_ingest_markdown

pytestmark = pytest.mark.django_db

ALL = (Action.READ, Action.EDIT, Action.PUBLISH)
PADDLES = b"# Quillpaddle sizes\n\n## Length\nPick a quillpaddle of 220 cm for touring kayaks.\n"


def make_user(username: str, role: str | None = None, *, staff: bool = True, superuser: bool = False):
    user = get_user_model().objects.create_user(username=username, password="x-pass-123", is_staff=staff,
                                                is_superuser=superuser)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def grant(collection, grantee, *actions):
    collection_access_grant(actor=None, collection=collection, grantee=grantee, actions=actions)


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def help_centre(db):
    collection = collection_ensure(name="Help centre", audience=Audience.CUSTOMER)
    document_ingest_markdown(collection=collection, slug="returns", body="# Returns\n\nReturn kayaks within 30 days.")
    return collection


@pytest.fixture
def playbooks(db):
    collection = collection_ensure(name="Agent playbooks", audience=Audience.INTERNAL)
    document_ingest_markdown(collection=collection, slug="fraud", body="# Fraud\n\nWatch for rushed refund requests.")
    return collection


def readable_names(user) -> list[str]:
    return sorted(collections_for(user, Action.READ).values_list("name", flat=True))


# --- the helpers ------------------------------------------------------------------------------

def test_access_comes_from_object_permissions_of_the_user_or_their_groups(help_centre, playbooks):
    agent = make_user("agent", Role.AGENT)
    # The agent role holds knowledge.view_collection model-wide (for the admin section): no collection.
    assert agent.has_perm("knowledge.view_collection")
    assert readable_names(agent) == [] and not can(agent, Action.READ, help_centre)

    grant(help_centre, Group.objects.get(name=Role.AGENT), Action.READ)
    agent = get_user_model().objects.get(pk=agent.pk)
    assert readable_names(agent) == ["Help centre"]
    assert actions_on(agent, Collection.objects.get(pk=help_centre.pk)) == {Action.READ}

    grant(playbooks, agent, Action.EDIT)  # edit includes read
    assert readable_names(agent) == ["Agent playbooks", "Help centre"]
    assert list(collections_for(agent, Action.EDIT)) == [playbooks]
    assert actions_on(agent, Collection.objects.get(pk=playbooks.pk)) == {Action.READ, Action.EDIT}
    assert not collections_for(agent, Action.PUBLISH).exists()


def test_administrators_and_superusers_may_do_everything_and_the_inactive_nothing(help_centre, playbooks):
    for user in (make_user("admin", Role.ADMINISTRATOR), make_user("root", superuser=True)):
        assert readable_names(user) == ["Agent playbooks", "Help centre"]
        assert actions_on(user, help_centre) == set(ALL)
    gone = make_user("gone")
    grant(help_centre, gone, *ALL)
    gone.is_active = False
    gone.save()
    assert readable_names(gone) == [] and actions_on(gone, Collection.objects.get(pk=help_centre.pk)) == set()


def test_setting_access_is_audited_and_granting_twice_records_nothing(help_centre):
    user = make_user("editor")
    actor = make_user("admin", Role.ADMINISTRATOR)
    added, removed = collection_access_set(actor=actor, collection=help_centre, grantee=user,
                                           actions=[Action.PUBLISH])
    assert added == {Action.READ, Action.PUBLISH} and removed == set()
    event = AuditEvent.objects.get(action="knowledge.collection_access_changed")
    assert event.actor_label == "admin" and event.target_id == str(help_centre.pk)
    assert event.data == {"user": "editor", "added": ["publish", "read"], "removed": []}
    grant(help_centre, user, Action.READ)
    assert AuditEvent.objects.filter(action="knowledge.collection_access_changed").count() == 1
    collection_access_set(actor=actor, collection=help_centre, grantee=user, actions=[])
    assert readable_names(user) == []


# --- REST API ---------------------------------------------------------------------------------

def test_api_lists_only_readable_collections_with_the_callers_access(help_centre, playbooks,
                                                                     django_assert_num_queries):
    agent = make_user("agent", Role.AGENT)
    grant(help_centre, Group.objects.get(name=Role.AGENT), Action.READ)
    grant(help_centre, agent, Action.EDIT)
    client = api(agent)
    url = reverse("api-knowledge-collections")
    client.get(url)  # roles are cached on the (force-authenticated) user
    # One query, whatever the number of collections: access is computed in the database.
    with django_assert_num_queries(1):
        body = client.get(url).json()
    assert [(c["name"], c["access"]) for c in body["results"]] == [("Help centre", ["read", "edit"])]
    for n in range(5):
        grant(collection_ensure(name=f"Extra {n}"), agent, Action.READ)
    with django_assert_num_queries(1):
        assert len(client.get(url).json()["results"]) == 6
    admin_rows = api(make_user("admin", Role.ADMINISTRATOR)).get(url).json()["results"]
    assert {c["name"] for c in admin_rows} >= {"Help centre", "Agent playbooks"}
    assert all(c["access"] == ["read", "edit", "publish"] for c in admin_rows)


def test_api_documents_and_jobs_of_a_collection(help_centre, playbooks, django_assert_num_queries,
                                               django_capture_on_commit_callbacks):
    reader = make_user("reader")
    grant(help_centre, reader, Action.READ)
    client = api(reader)
    url = reverse("api-knowledge-upload", args=[help_centre.pk])
    client.get(url)
    # the collection, the reader's access to it, the count and the page
    with django_assert_num_queries(4):
        body = client.get(url).json()
    assert body["count"] == 1 and [d["slug"] for d in body["results"]] == ["returns"]
    assert body["results"][0]["published"] is True
    for n in range(4):
        document_ingest_markdown(collection=help_centre, slug=f"extra-{n}", body=f"# Extra {n}\n\nText {n}.")
    with django_assert_num_queries(4):
        assert client.get(url, {"limit": 3}).json()["count"] == 5
    assert client.get(url, {"published": "false"}).json()["count"] == 0
    assert client.get(url, {"published": "maybe"}).status_code == 400
    # another collection's documents and an unknown one: both 404
    assert client.get(reverse("api-knowledge-upload", args=[playbooks.pk])).status_code == 404
    assert client.get(reverse("api-knowledge-upload", args=["nope"])).status_code == 404

    owner = make_user("owner")
    grant(help_centre, owner, *ALL)
    with django_capture_on_commit_callbacks(execute=True):
        api(owner).post(url, {"files": [SimpleUploadedFile("paddles.md", PADDLES)]}, format="multipart")
    jobs_url = reverse("api-knowledge-jobs", args=[help_centre.pk])
    with django_assert_num_queries(4):
        jobs = client.get(jobs_url).json()
    assert jobs["count"] == 1 and jobs["results"][0]["status"] == "done"
    assert client.get(reverse("api-knowledge-jobs", args=[playbooks.pk])).status_code == 404


def test_editor_uploads_unpublished_and_a_publisher_makes_it_live(help_centre, django_capture_on_commit_callbacks):
    editor, publisher, reader = make_user("editor"), make_user("publisher"), make_user("reader")
    grant(help_centre, editor, Action.EDIT)
    grant(help_centre, publisher, *ALL)
    grant(help_centre, reader, Action.READ)
    with django_capture_on_commit_callbacks(execute=True):
        response = api(editor).post(reverse("api-knowledge-upload", args=[help_centre.pk]),
                                    {"files": [SimpleUploadedFile("paddles.md", PADDLES)]}, format="multipart")
    assert response.status_code == 202 and response.json()["publish"] is False
    document = Document.objects.get(slug="paddles")
    assert document.published is False and document.status == "ready"

    def served() -> bool:
        hits = chunk_search(query="quillpaddle length for touring kayaks", k=5, mode="lexical")
        return any(h.document_id == str(document.pk) for h in hits)

    assert not served()  # the customer-facing search does not see it

    publish_url = reverse("api-knowledge-document-publish", args=[document.pk])
    denied = api(editor).post(publish_url, {"reason": "ready"}, format="json")
    assert denied.status_code == 403 and "may not publish" in denied.json()["detail"]
    assert api(reader).post(publish_url, format="json").status_code == 403
    assert api(make_user("stranger")).post(publish_url, format="json").status_code == 404
    assert not Document.objects.get(pk=document.pk).published and not served()

    response = api(publisher).post(publish_url, {"reason": "Checked with the product team"}, format="json")
    assert response.status_code == 200
    assert response.json()["published"] is True and response.json()["changed"] is True
    assert served()
    event = AuditEvent.objects.get(action="knowledge.document_published")
    assert event.actor_label == "publisher" and event.target_id == str(document.pk)
    assert event.data["reason"] == "Checked with the product team" and event.data["version"] == 1

    # Idempotent: publishing again changes nothing and records nothing.
    again = api(publisher).post(publish_url.rstrip("/"), format="json")
    assert again.status_code == 200 and again.json()["changed"] is False
    assert AuditEvent.objects.filter(action="knowledge.document_published").count() == 1

    # The editor may no longer replace the live document: the file fails, the text stays.
    with django_capture_on_commit_callbacks(execute=True):
        job_id = api(editor).post(reverse("api-knowledge-upload", args=[help_centre.pk]),
                                  {"files": [SimpleUploadedFile("paddles.md", PADDLES + b"\nNew line.\n")]},
                                  format="multipart").json()["job_id"]
    file = IngestionJob.objects.get(pk=job_id).files.get()
    assert file.status == "failed" and "only someone who may publish" in file.error
    assert Document.objects.get(pk=document.pk).version == 1

    unpublish = api(publisher).post(reverse("api-knowledge-document-unpublish", args=[document.pk]),
                                    {"reason": "Outdated"}, format="json")
    assert unpublish.status_code == 200 and unpublish.json()["published"] is False
    assert not served()
    assert AuditEvent.objects.get(action="knowledge.document_unpublished").data["reason"] == "Outdated"


def test_publish_endpoint_validates_and_hides_unknown_documents(help_centre):
    publisher = make_user("publisher")
    grant(help_centre, publisher, *ALL)
    document = Document.objects.get(slug="returns")
    url = reverse("api-knowledge-document-unpublish", args=[document.pk])
    response = api(publisher).post(url, {"reason": "x" * 501}, format="json")
    assert response.status_code == 400 and "at most 500" in response.json()["detail"]
    assert Document.objects.get(pk=document.pk).published
    for missing in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        assert api(publisher).post(reverse("api-knowledge-document-publish", args=[missing])).status_code == 404
    assert APIClient().post(url).status_code == 403  # anonymous


def test_non_staff_accounts_have_no_api_access_whatever_their_grants(help_centre):
    user = make_user("former", staff=False)
    grant(help_centre, user, *ALL)
    response = api(user).get(reverse("api-knowledge-collections"))
    assert response.status_code == 403 and "staff" in response.json()["detail"]


# --- admin ------------------------------------------------------------------------------------

@pytest.fixture
def agent_reader(help_centre):
    """An agent who may read the help centre only (the demo's playbooks stay hidden)."""
    agent = make_user("agent", Role.AGENT)
    grant(help_centre, agent, Action.READ)
    return agent


def test_admin_changelists_show_only_readable_collections(client, help_centre, playbooks, agent_reader):
    client.force_login(agent_reader)
    page = client.get(reverse("admin:knowledge_collection_changelist"))
    assert page.status_code == 200
    assert [c.name for c in page.context["cl"].result_list] == ["Help centre"]
    documents = client.get(reverse("admin:knowledge_document_changelist")).context["cl"]
    assert [d.slug for d in documents.result_list] == ["returns"]
    # The collection filter offers readable collections only.
    html = client.get(reverse("admin:knowledge_document_changelist")).content.decode()
    assert "Help centre" in html and "Agent playbooks" not in html
    assert [c.document.slug for c in client.get(reverse("admin:knowledge_chunk_changelist")).context["cl"]
            .result_list] == ["returns"]
    assert {v.document.slug for v in client.get(reverse("admin:knowledge_documentversion_changelist"))
            .context["cl"].result_list} <= {"returns"}
    # An unreadable collection's pages answer as if it did not exist.
    response = client.get(reverse("admin:knowledge_collection_change", args=[playbooks.pk]))
    assert response.status_code == 302 and response.url == reverse("admin:index")
    fraud = Document.objects.get(slug="fraud")
    assert client.get(reverse("admin:knowledge_document_change", args=[fraud.pk])).status_code == 302


def test_admin_collection_changelist_query_count(client, help_centre, playbooks, agent_reader,
                                                 django_assert_num_queries):
    client.force_login(agent_reader)
    url = reverse("admin:knowledge_collection_changelist")
    client.get(url)
    # session, user, model-level permissions (user's, groups'), roles; whether the user may
    # edit any collection and read any (asked once each for the whole sidebar); the count and
    # total count of the changelist, the page (with the access annotated, no query per row)
    with django_assert_num_queries(10):
        client.get(url)
    for n in range(5):
        grant(collection_ensure(name=f"Extra {n}"), agent_reader, Action.READ)
    with django_assert_num_queries(10):
        page = client.get(url)
    assert len(page.context["cl"].result_list) == 6


def test_admin_document_changelist_query_count(client, help_centre, agent_reader, django_assert_num_queries):
    client.force_login(agent_reader)
    url = reverse("admin:knowledge_document_changelist")
    client.get(url)
    # session, user, model-level permissions (user's, groups'), roles; whether the user may
    # publish, edit and read in any collection (once each per request); the collection
    # filter's choices; the count and total count; the page with its collections
    with django_assert_num_queries(12):
        client.get(url)
    for n in range(5):
        document_ingest_markdown(collection=help_centre, slug=f"extra-{n}", body=f"# Extra {n}\n\nText {n}.")
    with django_assert_num_queries(12):
        page = client.get(url)
    assert len(page.context["cl"].result_list) == 6


def test_reader_sees_a_collection_read_only_and_cannot_upload(client, help_centre, agent_reader):
    client.force_login(agent_reader)
    page = client.get(reverse("admin:knowledge_collection_change", args=[help_centre.pk]))
    assert page.status_code == 200 and page.context["has_change_permission"] is False
    html = page.content.decode()
    assert reverse("admin:knowledge_collection_upload", args=[help_centre.pk]) not in html
    assert reverse("admin:knowledge_collection_permissions", args=[help_centre.pk]) not in html
    assert client.get(reverse("admin:knowledge_collection_upload", args=[help_centre.pk])).status_code == 403
    assert client.post(reverse("admin:knowledge_collection_change", args=[help_centre.pk]),
                       {"name": "Renamed", "chunk_size": 900, "chunk_overlap": 1}).status_code == 403
    assert Collection.objects.get(pk=help_centre.pk).name == "Help centre"


def test_editor_changes_settings_but_not_the_audience(client, help_centre):
    editor = make_user("editor")
    grant(help_centre, editor, Action.EDIT)
    client.force_login(editor)
    url = reverse("admin:knowledge_collection_change", args=[help_centre.pk])
    page = client.get(url)
    assert "audience" in page.context["adminform"].readonly_fields
    assert "may edit this collection but not publish" in page.content.decode()
    response = client.post(url, {"name": "Help centre", "audience": Audience.INTERNAL, "description": "FAQ",
                                 "chunk_size": 1200, "chunk_overlap": 2})
    assert response.status_code == 302
    collection = Collection.objects.get(pk=help_centre.pk)
    assert (collection.audience, collection.chunk_size, collection.description) == (Audience.CUSTOMER, 1200, "FAQ")


def test_publisher_changes_the_audience_and_it_is_audited(client, help_centre):
    publisher = make_user("publisher")
    grant(help_centre, publisher, *ALL)
    client.force_login(publisher)
    response = client.post(reverse("admin:knowledge_collection_change", args=[help_centre.pk]), {
        "name": "Help centre", "audience": Audience.INTERNAL, "description": "", "chunk_size": 900,
        "chunk_overlap": 1})
    assert response.status_code == 302
    assert Collection.objects.get(pk=help_centre.pk).audience == Audience.INTERNAL
    event = AuditEvent.objects.get(action="knowledge.collection_audience_changed")
    assert event.data == {"from": "customer", "to": "internal"} and event.actor_label == "publisher"


def test_editor_admin_upload_lands_unpublished(client, help_centre, django_capture_on_commit_callbacks):
    editor = make_user("editor")
    grant(help_centre, editor, Action.EDIT)
    client.force_login(editor)
    url = reverse("admin:knowledge_collection_upload", args=[help_centre.pk])
    assert "new documents are stored unpublished" in client.get(url).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"files": [SimpleUploadedFile("paddles.md", PADDLES)]})
    assert response.status_code == 302
    assert Document.objects.get(slug="paddles").published is False
    progress = client.get(response.url)
    assert progress.status_code == 200 and "stored unpublished" in progress.content.decode()


def test_creating_a_collection_in_the_admin_grants_its_creator_everything(client):
    owner = make_user("owner", Role.MODEL_OWNER)  # the role may add collections
    client.force_login(owner)
    response = client.post(reverse("admin:knowledge_collection_add"), {
        "name": "Tents", "audience": Audience.CUSTOMER, "description": "", "chunk_size": 900, "chunk_overlap": 1})
    assert response.status_code == 302
    tents = Collection.objects.get(name="Tents")
    assert actions_on(owner, tents) == set(ALL)
    # ... and nobody else (but administrators) sees it.
    assert readable_names(make_user("other", Role.MODEL_OWNER)) == []


def test_only_administrators_delete_collections(client, help_centre):
    publisher = make_user("publisher", Role.MODEL_OWNER)
    grant(help_centre, publisher, *ALL)
    client.force_login(publisher)
    url = reverse("admin:knowledge_collection_delete", args=[help_centre.pk])
    assert client.post(url, {"post": "yes"}).status_code == 403
    assert Collection.objects.filter(pk=help_centre.pk).exists()


def test_admin_publish_action_asks_for_a_reason_and_records_it(client, help_centre, django_capture_on_commit_callbacks):
    editor, publisher = make_user("editor"), make_user("publisher")
    grant(help_centre, editor, Action.EDIT)
    grant(help_centre, publisher, *ALL)
    client.force_login(editor)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("admin:knowledge_collection_upload", args=[help_centre.pk]),
                    {"files": [SimpleUploadedFile("paddles.md", PADDLES)]})
    document = Document.objects.get(slug="paddles")
    changelist = reverse("admin:knowledge_document_changelist")
    # An editor is not offered publishing, and cannot post it either.
    assert "publish_documents" not in client.get(changelist).content.decode()
    client.post(changelist, {"action": "publish_documents", "_selected_action": [document.pk], "index": 0,
                             "confirm": "yes", "reason": "Sneaky"})
    assert not Document.objects.get(pk=document.pk).published

    client.force_login(publisher)
    confirm = client.post(changelist, {"action": "publish_documents", "_selected_action": [document.pk],
                                       "index": 0})
    assert confirm.status_code == 200 and "Reason" in confirm.content.decode()
    assert not Document.objects.get(pk=document.pk).published
    no_reason = client.post(changelist, {"action": "publish_documents", "_selected_action": [document.pk],
                                         "confirm": "yes", "reason": ""})
    assert no_reason.status_code == 200 and "This field is required" in no_reason.content.decode()
    response = client.post(changelist, {"action": "publish_documents", "_selected_action": [document.pk],
                                        "confirm": "yes", "reason": "Reviewed"})
    assert response.status_code == 302
    assert Document.objects.get(pk=document.pk).published
    event = AuditEvent.objects.get(action="knowledge.document_published")
    assert event.actor_label == "publisher" and event.data["reason"] == "Reviewed"


def test_admin_publish_action_refuses_a_selection_with_a_collection_one_may_not_publish(client, help_centre,
                                                                                         playbooks):
    publisher = make_user("publisher")
    grant(help_centre, publisher, *ALL)
    grant(playbooks, publisher, Action.READ)
    Document.objects.update(published=False)
    client.force_login(publisher)
    response = client.post(reverse("admin:knowledge_document_changelist"), {
        "action": "publish_documents", "_selected_action": list(Document.objects.values_list("pk", flat=True)),
        "confirm": "yes", "reason": "All"}, follow=True)
    assert "You may not publish documents of Agent playbooks. Nothing was changed." in response.content.decode()
    assert not Document.objects.filter(published=True).exists()


def test_editor_cannot_change_a_live_document_in_the_admin(client, help_centre):
    editor = make_user("editor")
    grant(help_centre, editor, Action.EDIT)
    client.force_login(editor)
    live = Document.objects.get(slug="returns")
    page = client.get(reverse("admin:knowledge_document_change", args=[live.pk]))
    assert page.status_code == 200 and page.context["has_change_permission"] is False
    assert client.post(reverse("admin:knowledge_document_delete", args=[live.pk]), {"post": "yes"}).status_code == 403
    assert Document.objects.filter(pk=live.pk).exists()


# --- admin: the access page -------------------------------------------------------------------

def test_administrator_grants_a_role_group_access_on_the_access_page(client, help_centre, playbooks):
    admin = make_user("admin", Role.ADMINISTRATOR)
    client.force_login(admin)
    url = reverse("admin:knowledge_collection_permissions", args=[playbooks.pk])
    page = client.get(url)
    assert page.status_code == 200 and "No other group has access yet." in page.content.decode()
    supervisor = Group.objects.get(name=Role.SUPERVISOR)
    response = client.post(url, {"group": supervisor.pk, "submit_manage_group": "1"})
    manage = reverse("admin:knowledge_collection_permissions_manage_group", args=[playbooks.pk, supervisor.pk])
    assert response.status_code == 302 and response.url == manage
    form = client.get(manage)
    assert "Group Supervisor" in form.content.decode()
    assert [c[0] for c in form.context["form"].fields["permissions"].choices] == [
        "view_collection", "change_collection", "publish_collection"]
    assert client.post(manage, {"permissions": ["change_collection"]}).status_code == 302

    member = make_user("sup", Role.SUPERVISOR)
    assert actions_on(member, Collection.objects.get(pk=playbooks.pk)) == {Action.READ, Action.EDIT}
    event = AuditEvent.objects.get(action="knowledge.collection_access_changed")
    assert event.actor_label == "admin" and event.data == {"group": "supervisor", "added": ["edit", "read"],
                                                          "removed": []}
    overview = client.get(url).content.decode()
    assert "Supervisor" in overview and "Change" in overview

    # Users are found by username, among active staff accounts only.
    assert "No active staff account" in client.post(url, {"user": "nobody", "submit_manage_user": "1"}
                                                    ).content.decode()
    response = client.post(url, {"user": "sup", "submit_manage_user": "1"})
    manage_user = reverse("admin:knowledge_collection_permissions_manage_user", args=[playbooks.pk, member.pk])
    assert response.status_code == 302 and response.url == manage_user
    assert client.post(manage_user, {"permissions": ["publish_collection"]}).status_code == 302
    assert actions_on(member, Collection.objects.get(pk=playbooks.pk)) == set(ALL)


def test_only_administrators_manage_access(client, help_centre):
    owner = make_user("owner", Role.MODEL_OWNER)
    grant(help_centre, owner, *ALL)
    client.force_login(owner)
    assert client.get(reverse("admin:knowledge_collection_permissions", args=[help_centre.pk])).status_code == 403
    group = Group.objects.get(name=Role.AGENT)
    manage = reverse("admin:knowledge_collection_permissions_manage_group", args=[help_centre.pk, group.pk])
    assert client.post(manage, {"permissions": ["view_collection"]}).status_code == 403
    assert readable_names(make_user("agent", Role.AGENT)) == []
    page = client.get(reverse("admin:knowledge_collection_change", args=[help_centre.pk])).content.decode()
    assert reverse("admin:knowledge_collection_permissions", args=[help_centre.pk]) not in page


# --- the demo and the back-office search ------------------------------------------------------

def test_demo_grants_role_groups_their_access_once(demo, users):
    help_centre, playbooks = Collection.objects.get(name="Help centre"), Collection.objects.get(name="Agent playbooks")
    for collection in (help_centre, playbooks):
        assert actions_on(users["modelowner"], collection) == set(ALL)
        for name in ("agent", "compliance"):
            assert actions_on(users[name], collection) == {Action.READ}
    assert actions_on(users["supervisor"], help_centre) == {Action.READ}
    assert actions_on(users["supervisor"], playbooks) == {Action.READ, Action.EDIT}
    from convo.demo.loader import load_demo

    before = AuditEvent.objects.filter(action="knowledge.collection_access_changed").count()
    load_demo()
    assert AuditEvent.objects.filter(action="knowledge.collection_access_changed").count() == before


@pytest.fixture
def help_only_agent(demo):
    """An agent who may read the help centre but not the playbooks."""
    agent = make_user("helpdesk")
    agent.groups.add(Group.objects.get(name=Role.AGENT))  # the office needs the role ...
    for name in ("Agent playbooks", "Curated answers"):  # ... not its demo grants
        collection_access_set(actor=None, collection=Collection.objects.get(name=name),
                              grantee=Group.objects.get(name=Role.AGENT), actions=[])
    grant(Collection.objects.get(name="Help centre"), agent, Action.READ)
    return agent


def test_search_page_hides_collections_one_may_not_read(client, help_only_agent):
    client.force_login(help_only_agent)
    response = client.get("/office/search/", {"q": "fraud warning signs", "scope": "all"})
    assert response.status_code == 200
    assert [c.name for c in response.context["collections"]] == ["Help centre"]
    assert response.context["hits"] and not any(row["internal"] for row in response.context["hits"])
    assert all(row["collection"].name == "Help centre" for row in response.context["hits"])
    assert "Agent playbooks" not in response.content.decode()
    # Asking for the playbooks by id is answered like an unknown collection.
    playbooks = Collection.objects.get(name="Agent playbooks")
    for collection_id in (playbooks.pk, "00000000-0000-0000-0000-000000000000"):
        response = client.get("/office/search/", {"q": "fraud", "collection": collection_id})
        assert response.context["hits"] == [] and "does not exist or you may not read it" in response.content.decode()


def test_search_page_filters_by_collection_and_labels(client, users):
    help_centre = Collection.objects.get(name="Help centre")
    playbooks = Collection.objects.get(name="Agent playbooks")
    document_ingest_markdown(collection=help_centre, slug="tent-care", body="# Tent care\n\nDry the tent fully.",
                             metadata={"product": "tents", "year": 2024})
    client.force_login(users["agent"])
    only_playbooks = client.get("/office/search/", {"q": "refund", "collection": playbooks.pk}).context["hits"]
    assert only_playbooks and all(row["collection"] == playbooks for row in only_playbooks)
    labelled = client.get("/office/search/", {"q": "tent", "labels": "product=tents, year=2024"})
    assert [row["hit"].title for row in labelled.context["hits"]] == ["Tent care"]
    assert client.get("/office/search/", {"q": "tent", "labels": 'year="2024"'}).context["hits"] == []
    bad = client.get("/office/search/", {"q": "tent", "labels": "product"})
    assert bad.status_code == 200 and bad.context["hits"] == [] and "Cannot read the labels" in bad.content.decode()


def test_search_page_without_any_readable_collection(client, demo):
    user = make_user("newcomer", Role.AGENT)
    for collection in Collection.objects.all():
        collection_access_set(actor=None, collection=collection, grantee=Group.objects.get(name=Role.AGENT),
                              actions=[])
    client.force_login(user)
    response = client.get("/office/search/", {"q": "refund"})
    assert response.status_code == 200 and response.context["hits"] == []
    assert "You may not read any knowledge collection yet" in response.content.decode()


def test_search_page_query_count(client, users, django_assert_num_queries):
    client.force_login(users["agent"])
    client.get("/office/search/", {"q": "refund to a gift card"})  # warm the embedding cache
    # session, user, roles, the readable collections; chunk_search's own 10 queries (the active
    # embedding space, never cached under the test settings; the scope's size; the exact dense
    # ranking in a savepoint with index scans off; the query's terms and their statistics,
    # lexical, the similarity of lexical-only hits); and the hits' collections
    with django_assert_num_queries(15):
        client.get("/office/search/", {"q": "refund to a gift card"})


@pytest.mark.parametrize("changelist, queries", [
    # session, user, model-level permissions (user's, groups'), roles; whether the user may
    # edit and read any collection (once each per request, for the sidebar); then the page:
    ("admin:knowledge_ingestionjob_changelist", 11),  # collection filter choices, 2 counts, page
    ("admin:knowledge_chunk_changelist", 10),  # 2 counts, page (with documents)
    ("admin:knowledge_documentversion_changelist", 11),  # 2 counts, page (with documents), kind filter
])
def test_other_knowledge_changelists_query_count(client, help_centre, agent_reader, django_assert_num_queries,
                                                 django_capture_on_commit_callbacks, changelist, queries):
    owner = make_user("owner")
    grant(help_centre, owner, *ALL)

    def add(n: int) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            api(owner).post(reverse("api-knowledge-upload", args=[help_centre.pk]),
                            {"files": [SimpleUploadedFile(f"doc-{n}.md", PADDLES + f"\nPart {n}.\n".encode())]},
                            format="multipart")

    add(0)
    client.force_login(agent_reader)
    url = reverse(changelist)
    client.get(url)
    with django_assert_num_queries(queries):
        client.get(url)
    for n in range(1, 4):
        add(n)
    with django_assert_num_queries(queries):
        assert client.get(url).status_code == 200
