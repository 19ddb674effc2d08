from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse

from knowledge import services
from knowledge.api.permissions import can_manage_knowledge
from knowledge.api.views import job_as_dict
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


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
    list_display = ("name", "audience", "created_at")
    list_filter = ("audience",)
    search_fields = ("name",)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<uuid:collection_id>/upload/", view(self.upload_view), name="knowledge_collection_upload"),
            path("ingestion/<uuid:job_id>/", view(self.job_view), name="knowledge_ingestion_job_progress"),
            path("ingestion/<uuid:job_id>/status.json", view(self.job_status_view),
                 name="knowledge_ingestion_job_status"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "can_upload": can_manage_knowledge(request.user)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _require_manager(self, request) -> None:
        if not can_manage_knowledge(request.user):
            raise PermissionDenied("Only administrators and model owners may upload knowledge.")

    def upload_view(self, request, collection_id):
        self._require_manager(request)
        collection = Collection.objects.filter(pk=collection_id).first()
        if collection is None:
            raise Http404("No such collection.")
        form = UploadForm(request.POST, request.FILES) if request.method == "POST" else UploadForm()
        if request.method == "POST" and form.is_valid():
            try:
                job = services.ingestion_job_create_from_uploads(
                    collection=collection, uploads=form.cleaned_data["files"], actor=request.user,
                    source=IngestionSource.ADMIN)
            except UploadRejected as exc:
                form.add_error("files", str(exc))
            else:
                messages.info(request, f"{job.total_files} file(s) queued for ingestion.")
                return redirect("admin:knowledge_ingestion_job_progress", job_id=job.pk)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "collection": collection,
                   "form": form, "title": f"Upload documents to {collection.name}",
                   "max_mb": services.upload_max_bytes() // (1024 * 1024)}
        return render(request, "admin/knowledge/collection/upload.html", context)

    def _job(self, request, job_id) -> IngestionJob:
        self._require_manager(request)
        job = IngestionJob.objects.select_related("collection").filter(pk=job_id).first()
        if job is None:
            raise Http404("No such ingestion job.")
        return job

    def job_view(self, request, job_id):
        job = self._job(request, job_id)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "job": job,
                   "collection": job.collection, "title": f"Ingestion into {job.collection.name}",
                   "status_url": reverse("admin:knowledge_ingestion_job_status", args=[job.pk]),
                   "initial": job_as_dict(job)}
        return render(request, "admin/knowledge/collection/ingestion_progress.html", context)

    def job_status_view(self, request, job_id):
        return JsonResponse(job_as_dict(self._job(request, job_id)))


class DocumentVersionInline(admin.TabularInline):
    model = DocumentVersion
    extra = 0
    can_delete = False
    fields = ("version", "title", "chunk_count", "source_name", "source_kind", "created_by", "created_at")
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ("title", "collection", "status", "version", "updated_at")
    list_filter = ("status", "collection")
    list_select_related = ("collection",)
    search_fields = ("title", "slug")
    readonly_fields = ("checksum", "version", "status")
    inlines = [DocumentVersionInline]


@admin.register(DocumentVersion)
class DocumentVersionAdmin(admin.ModelAdmin):
    """History is read-only: a new version comes only from ingesting new text."""

    list_display = ("document", "version", "chunk_count", "source_kind", "created_at")
    list_select_related = ("document",)
    list_filter = ("source_kind",)
    search_fields = ("title", "document__slug")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class IngestionFileInline(admin.TabularInline):
    model = IngestionFile
    extra = 0
    can_delete = False
    fields = ("position", "name", "kind", "size", "status", "error", "document", "version", "chunk_count")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(IngestionJob)
class IngestionJobAdmin(admin.ModelAdmin):
    list_display = ("id", "collection", "status", "source", "processed_files", "total_files", "failed_files",
                    "chunk_count", "created_at")
    list_filter = ("status", "source", "collection")
    list_select_related = ("collection",)
    readonly_fields = ("collection", "status", "source", "created_by", "total_files", "processed_files",
                       "failed_files", "skipped_files", "chunk_count", "started_at", "finished_at")
    inlines = [IngestionFileInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    list_display = ("document", "position", "section")
    list_select_related = ("document",)
    search_fields = ("text", "section")
    exclude = ("embedding",)
    readonly_fields = ("document", "position", "section", "text")
