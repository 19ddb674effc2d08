"""Knowledge in the admin, restricted per collection (see ``knowledge.permissions``).

Changelists show only what the user may read; change forms open read-only without the edit
permission; publishing is a bulk action on documents that asks for a reason; administrators
manage who may do what on a collection's "Access" page (guardian's object permissions)."""

from functools import partial

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.template.response import TemplateResponse
from django.urls import path, reverse
from guardian.admin import GuardedModelAdminMixin
from guardian.forms import GroupObjectPermissionsForm, UserObjectPermissionsForm
from guardian.shortcuts import get_groups_with_perms, get_users_with_perms

from governance.roles import Role
from knowledge import publishing, services
from knowledge.api.serializers import job_as_dict, metadata_parse
from knowledge.exceptions import UploadRejected
from knowledge.models import (
    Chunk,
    Collection,
    Document,
    DocumentVersion,
    IngestionFile,
    IngestionJob,
    IngestionSource,
)
from knowledge.parsers import EXTENSIONS
from knowledge.permissions import (
    ACTION_LABELS,
    ACTION_OF_CODENAME,
    ALL_ACTIONS,
    CODENAMES,
    Action,
    access_of,
    actions_on,
    can,
    can_manage_access,
    collection_access_grant,
    collection_access_set,
    collection_get_for_user,
    collections_for,
    collections_with_access,
    ingestion_job_get_for_user,
    is_knowledge_admin,
)

EDITOR_NOTICE = ("You may edit this collection but not publish in it: new documents are stored unpublished until "
                 "someone who may publish makes them live, and files that would change a published document fail.")


def _any_collection(request, action: Action) -> bool:
    """Whether the user may do ``action`` on at least one collection (once per request: the
    admin's sidebar asks every model admin for its permissions on every page)."""
    cache = request.__dict__.setdefault("_tandem_any_collection", {})
    if action not in cache:
        cache[action] = is_knowledge_admin(request.user) or collections_for(request.user, action).exists()
    return cache[action]


def _readable(request):
    return collections_for(request.user, Action.READ).values("pk")


# --- collections ------------------------------------------------------------------------------

class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": ",".join(sorted(EXTENSIONS))}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, (list, tuple)):
            return [single(d, initial) for d in data] if data else [single(None, initial)]
        return [single(data, initial)]


class UploadForm(forms.Form):
    files = MultipleFileField(help_text="PDF, HTML, Markdown, text, or FAQ files (CSV/JSON with question and "
                                        "answer). A file uploaded again replaces its document as a new version.")
    metadata = forms.CharField(
        label="Labels", required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60, "placeholder": '{"product": "tents", "region": "eu"}'}),
        help_text="Optional. A JSON object of labels given to every document of this upload; the knowledge "
                  "search can filter on them. Values are text, numbers or true/false.")

    def clean_metadata(self):
        try:
            return metadata_parse(self.cleaned_data.get("metadata"))
        except UploadRejected as exc:
            raise forms.ValidationError(str(exc)) from None


class StaffUserField(forms.CharField):
    """A username of an active staff account: only they can use the knowledge back office."""

    def clean(self, value):
        username = super().clean(value).strip()
        user = get_user_model().objects.filter(username=username, is_active=True, is_staff=True).first()
        if user is None:
            raise forms.ValidationError("No active staff account has that username.")
        return user


class AccessUserSelectForm(forms.Form):
    user = StaffUserField(label="Username", max_length=150)


def group_label(group: Group) -> str:
    return Role(group.name).label if group.name in Role.values else group.name


class RoleGroupChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return group_label(obj)


class AccessGroupSelectForm(forms.Form):
    # Administrators may do everything anyway.
    group = RoleGroupChoiceField(queryset=Group.objects.exclude(name=Role.ADMINISTRATOR).order_by("name"),
                                 empty_label="Choose a group…")


class _CollectionAccessForm:
    """The three collection actions only, saved through the audited ``collection_access_set``."""

    def __init__(self, grantee, obj, *args, actor=None, **kwargs):
        self.actor = actor
        super().__init__(grantee, obj, *args, **kwargs)

    def get_obj_perms_field_label(self):
        return "Access"

    def get_obj_perms_field_choices(self):
        return [(CODENAMES[a], ACTION_LABELS[a]) for a in Action]

    def get_obj_perms_field_widget(self):
        return forms.CheckboxSelectMultiple

    def save_obj_perms(self):
        actions = [ACTION_OF_CODENAME[c] for c in self.cleaned_data[self.get_obj_perms_field_name()]]
        collection_access_set(actor=self.actor, collection=self.obj, grantee=self.grantee, actions=actions)


class CollectionUserAccessForm(_CollectionAccessForm, UserObjectPermissionsForm):
    @property
    def grantee(self):
        return self.user

    @property
    def grantee_label(self) -> str:
        return f"User {self.user.get_username()}"


class CollectionGroupAccessForm(_CollectionAccessForm, GroupObjectPermissionsForm):
    @property
    def grantee(self):
        return self.group

    @property
    def grantee_label(self) -> str:
        return f"Group {group_label(self.group)}"


class _Perm:
    """What guardian's access page shows as a column: one of the three actions."""

    def __init__(self, action: Action):
        self.codename, self.name = CODENAMES[action], action.value.capitalize()


@admin.register(Collection)
class CollectionAdmin(GuardedModelAdminMixin, admin.ModelAdmin):
    list_display = ("name", "audience", "your_access", "created_at")
    list_filter = ("audience",)
    search_fields = ("name",)
    fields = ("name", "audience", "description", "chunk_size", "chunk_overlap")
    change_form_template = "admin/knowledge/collection/change_form.html"
    obj_perms_manage_template = "admin/knowledge/collection/access.html"
    obj_perms_manage_user_template = "admin/knowledge/collection/access_grantee.html"
    obj_perms_manage_group_template = "admin/knowledge/collection/access_grantee.html"

    def get_queryset(self, request):
        return collections_with_access(request.user, super().get_queryset(request))

    @admin.display(description="Your access")
    def your_access(self, obj):
        return ", ".join(a.capitalize() for a in access_of(obj))

    # Model-level permissions open the section; object permissions decide each collection.
    def has_view_permission(self, request, obj=None):
        if obj is None:
            return super().has_view_permission(request) or _any_collection(request, Action.READ)
        return can(request.user, Action.READ, obj)

    def has_change_permission(self, request, obj=None):
        if obj is None:
            return super().has_change_permission(request) or _any_collection(request, Action.EDIT)
        return can(request.user, Action.EDIT, obj)

    def has_delete_permission(self, request, obj=None):
        return is_knowledge_admin(request.user)

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and not can(request.user, Action.PUBLISH, obj):
            return ("audience",)  # what customers may see is a publishing decision
        return ()

    def save_model(self, request, obj, form, change):
        if change and "audience" in form.changed_data:
            # In the admin's transaction, with the row's save below.
            publishing.collection_audience_change(actor=request.user, collection=obj, audience=obj.audience,
                                                  previous=form.initial.get("audience"))
        super().save_model(request, obj, form, change)
        if not change:
            collection_access_grant(actor=request.user, collection=obj, grantee=request.user, actions=ALL_ACTIONS)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<uuid:collection_id>/upload/", view(self.upload_view), name="knowledge_collection_upload"),
            path("ingestion/<uuid:job_id>/", view(self.job_view), name="knowledge_ingestion_job_progress"),
            path("ingestion/<uuid:job_id>/status.json", view(self.job_status_view),
                 name="knowledge_ingestion_job_status"),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        actions = actions_on(request.user, obj) if obj is not None else frozenset()
        context.update({
            "can_upload": Action.EDIT in actions,
            "can_manage_access": obj is not None and can_manage_access(request.user),
            "editor_notice": EDITOR_NOTICE if Action.EDIT in actions and Action.PUBLISH not in actions else "",
        })
        return super().render_change_form(request, context, add, change, form_url, obj)

    def upload_view(self, request, collection_id):
        try:
            collection = collection_get_for_user(user=request.user, collection_id=collection_id, action=Action.EDIT)
        except Collection.DoesNotExist:
            raise Http404("No such collection.") from None
        publish = can(request.user, Action.PUBLISH, collection)
        form = UploadForm(request.POST, request.FILES) if request.method == "POST" else UploadForm()
        if request.method == "POST" and form.is_valid():
            try:
                job = services.ingestion_job_create_from_uploads(
                    collection=collection, uploads=form.cleaned_data["files"], actor=request.user,
                    source=IngestionSource.ADMIN, metadata=form.cleaned_data["metadata"], publish=publish)
            except UploadRejected as exc:
                form.add_error("files", str(exc))
            else:
                messages.info(request, f"{job.total_files} file(s) queued for ingestion"
                                       f"{'' if publish else ' (new documents will be unpublished)'}.")
                return redirect("admin:knowledge_ingestion_job_progress", job_id=job.pk)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "collection": collection,
                   "form": form, "title": f"Upload documents to {collection.name}",
                   "max_mb": services.upload_max_bytes() // (1024 * 1024),
                   "editor_notice": "" if publish else EDITOR_NOTICE}
        return render(request, "admin/knowledge/collection/upload.html", context)

    def _job(self, request, job_id) -> IngestionJob:
        try:
            return ingestion_job_get_for_user(user=request.user, job_id=job_id)
        except IngestionJob.DoesNotExist:
            raise Http404("No such ingestion job.") from None

    def job_view(self, request, job_id):
        job = self._job(request, job_id)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "job": job,
                   "collection": job.collection, "title": f"Ingestion into {job.collection.name}",
                   "status_url": reverse("admin:knowledge_ingestion_job_status", args=[job.pk]),
                   "can_upload": can(request.user, Action.EDIT, job.collection),
                   "initial": job_as_dict(job)}
        return render(request, "admin/knowledge/collection/ingestion_progress.html", context)

    def job_status_view(self, request, job_id):
        return JsonResponse(job_as_dict(self._job(request, job_id)))

    # --- access (guardian's object permissions pages, for administrators) ---------------------

    def _require_access_manager(self, request) -> None:
        if not can_manage_access(request.user):
            raise PermissionDenied("Only administrators manage who may access a collection.")

    def obj_perms_manage_view(self, request, object_pk):
        self._require_access_manager(request)
        return super().obj_perms_manage_view(request, object_pk)

    def obj_perms_manage_user_view(self, request, object_pk, user_id):
        self._require_access_manager(request)
        return super().obj_perms_manage_user_view(request, object_pk, user_id)

    def obj_perms_manage_group_view(self, request, object_pk, group_id):
        self._require_access_manager(request)
        return super().obj_perms_manage_group_view(request, object_pk, group_id)

    def get_obj_perms_base_context(self, request, obj):
        context = super().get_obj_perms_base_context(request, obj)
        codenames = [CODENAMES[a] for a in Action]
        groups = get_groups_with_perms(obj, attach_perms=True)
        users = get_users_with_perms(obj, attach_perms=True, with_group_users=False)
        context.update({
            "model_perms": [_Perm(a) for a in Action], "title": f"Access to {obj.name}",
            "action_labels": [(a.value.capitalize(), ACTION_LABELS[a].split(" — ", 1)[1]) for a in Action],
            "group_rows": sorted(
                ((group_label(g), g.pk, [c in perms for c in codenames]) for g, perms in groups.items()
                 if g.name != Role.ADMINISTRATOR),  # shown as "always"
                key=lambda row: row[0].lower()),
            "user_rows": sorted(
                ((u.get_username(), u.get_full_name(), u.pk, [c in perms for c in codenames])
                 for u, perms in users.items()), key=lambda row: row[0].lower()),
        })
        return context

    def get_obj_perms_user_select_form(self, request):
        return AccessUserSelectForm

    def get_obj_perms_group_select_form(self, request):
        return AccessGroupSelectForm

    def get_obj_perms_manage_user_form(self, request):
        return partial(CollectionUserAccessForm, actor=request.user)

    def get_obj_perms_manage_group_form(self, request):
        return partial(CollectionGroupAccessForm, actor=request.user)


# --- documents --------------------------------------------------------------------------------

class DocumentVersionInline(admin.TabularInline):
    model = DocumentVersion
    extra = 0
    can_delete = False
    fields = ("version", "title", "chunk_count", "source_name", "source_kind", "created_by", "created_at")
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return True  # shown on a document the user may read


class PublishForm(forms.Form):
    reason = forms.CharField(
        max_length=publishing.REASON_MAX_CHARS, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Recorded in the audit trail with each document.")


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ("title", "collection", "kind", "status", "published", "version", "updated_at")
    list_filter = ("status", "published", "kind", ("collection", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("collection",)
    search_fields = ("title", "slug")
    readonly_fields = ("collection", "kind", "published", "checksum", "version", "status")
    inlines = [DocumentVersionInline]
    actions = ["publish_documents", "unpublish_documents"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("collection").filter(collection__in=_readable(request))

    def has_add_permission(self, request):
        return False  # documents come from uploads (chunked, embedded and versioned)

    def has_view_permission(self, request, obj=None):
        if obj is None:
            return super().has_view_permission(request) or _any_collection(request, Action.READ)
        return can(request.user, Action.READ, obj.collection)

    def _may_change(self, request, obj) -> bool:
        # A live document is changed only by someone who may publish (as for uploads).
        actions = actions_on(request.user, obj.collection)
        return Action.EDIT in actions and (not obj.published or Action.PUBLISH in actions)

    def has_change_permission(self, request, obj=None):
        if obj is None:
            return super().has_change_permission(request) or _any_collection(request, Action.EDIT)
        return self._may_change(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is None:
            # The bulk delete action does not ask per document: administrators only.
            return is_knowledge_admin(request.user)
        return self._may_change(request, obj)

    def has_publish_permission(self, request):
        return _any_collection(request, Action.PUBLISH)

    @admin.action(description="Publish selected documents", permissions=["publish"])
    def publish_documents(self, request, queryset):
        return self._publish_action(request, queryset, published=True)

    @admin.action(description="Unpublish selected documents", permissions=["publish"])
    def unpublish_documents(self, request, queryset):
        return self._publish_action(request, queryset, published=False)

    def _publish_action(self, request, queryset, *, published: bool):
        verb = "publish" if published else "unpublish"
        documents = list(queryset.order_by("collection__name", "title"))
        collection_ids = {d.collection_id for d in documents}
        allowed = set(collections_for(request.user, Action.PUBLISH).filter(pk__in=collection_ids)
                      .values_list("pk", flat=True))
        denied = sorted({d.collection.name for d in documents if d.collection_id not in allowed})
        if denied:
            messages.error(request, f"You may not {verb} documents of {', '.join(denied)}. Nothing was changed.")
            return None
        form = PublishForm(request.POST if "confirm" in request.POST else None)
        if form.is_valid():
            changed = publishing.documents_set_published(actor=request.user, documents=documents,
                                                         published=published, reason=form.cleaned_data["reason"])
            unchanged = len(documents) - changed
            messages.success(request, f"{changed} document(s) {verb}ed"
                                      f"{f'; {unchanged} already were' if unchanged else ''}.")
            return None
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta, "documents": documents,
            "form": form, "action": f"{verb}_documents", "verb": verb, "published": published,
            "title": f"{verb.capitalize()} {len(documents)} document(s)?",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/knowledge/document/publish_confirmation.html", context)


class _DocumentPartAdmin(admin.ModelAdmin):
    """Rows derived from a document (its versions, its chunks): read-only, and visible to
    whoever may read the document's collection."""

    def get_queryset(self, request):
        return (super().get_queryset(request).select_related("document__collection")
                .filter(document__collection__in=_readable(request)))

    def has_view_permission(self, request, obj=None):
        if obj is None:
            return super().has_view_permission(request) or _any_collection(request, Action.READ)
        return can(request.user, Action.READ, obj.document.collection)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DocumentVersion)
class DocumentVersionAdmin(_DocumentPartAdmin):
    """History is read-only: a new version comes only from ingesting new text."""

    list_display = ("document", "version", "chunk_count", "source_kind", "created_at")
    list_select_related = ("document",)
    list_filter = ("source_kind",)
    search_fields = ("title", "document__slug")


# --- ingestion jobs and chunks ----------------------------------------------------------------

class IngestionFileInline(admin.TabularInline):
    model = IngestionFile
    extra = 0
    can_delete = False
    fields = ("position", "name", "kind", "size", "status", "error", "document", "version", "chunk_count")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return True  # shown on a job the user may read


@admin.register(IngestionJob)
class IngestionJobAdmin(admin.ModelAdmin):
    list_display = ("id", "collection", "status", "source", "publish", "processed_files", "total_files",
                    "failed_files", "chunk_count", "created_at")
    list_filter = ("status", "source", ("collection", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("collection",)
    readonly_fields = ("collection", "status", "source", "publish", "metadata", "created_by", "total_files",
                       "processed_files", "failed_files", "skipped_files", "chunk_count", "started_at",
                       "finished_at")
    inlines = [IngestionFileInline]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("collection").filter(collection__in=_readable(request))

    def has_view_permission(self, request, obj=None):
        if obj is None:
            return super().has_view_permission(request) or _any_collection(request, Action.READ)
        return can(request.user, Action.READ, obj.collection)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return is_knowledge_admin(request.user)


@admin.register(Chunk)
class ChunkAdmin(_DocumentPartAdmin):
    """Chunks are derived from documents: read-only."""

    list_display = ("document", "position", "section")
    list_select_related = ("document",)
    search_fields = ("text", "section")
    fields = ("document", "position", "title", "section", "text")
    readonly_fields = fields


from knowledge import admin_spaces  # noqa: E402,F401  (embedding spaces: registered in its own module)
