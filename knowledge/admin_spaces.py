"""Admin for embedding spaces: which model the knowledge index uses, and re-embedding."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils.html import format_html

from knowledge.embedding_spaces import ReembedError, reembed_cancel, reembed_start
from knowledge.embeddings import configured_spec
from knowledge.models import ChunkEmbedding, EmbeddingSpace, EmbeddingSpaceStatus


@admin.register(EmbeddingSpace)
class EmbeddingSpaceAdmin(admin.ModelAdmin):
    """Read-only history of embedding models, with the buttons to start or cancel a rebuild."""

    change_list_template = "admin/knowledge/embeddingspace/change_list.html"
    list_display = ("model", "provider", "dimensions", "status", "progress", "activated_at", "retired_at")
    readonly_fields = ("provider", "model", "dimensions", "status", "index_name", "total_chunks",
                       "embedded_chunks", "error", "created_by", "started_at", "activated_at", "retired_at")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # the buttons below are the only way to change a space

    def _may_reembed(self, request) -> bool:
        return request.user.has_perm("knowledge.change_embeddingspace")

    def get_queryset(self, request):
        # The vectors each space holds now, counted in the list's one query.
        vectors = (ChunkEmbedding.objects.filter(space=OuterRef("pk")).order_by().values("space")
                   .annotate(n=Count("*")).values("n"))
        return super().get_queryset(request).annotate(vectors=Coalesce(Subquery(vectors), 0))

    @admin.display(description="Vectors")
    def progress(self, obj: EmbeddingSpace):
        if obj.status != EmbeddingSpaceStatus.BUILDING:
            return f"{obj.vectors:,}" if obj.vectors or obj.status != EmbeddingSpaceStatus.RETIRED else "dropped"
        share = obj.embedded_chunks * 100 // obj.total_chunks if obj.total_chunks else 0
        return format_html('<progress max="100" value="{}" aria-label="Re-embedding progress"></progress> '
                           "{} / {} chunks{}", share, f"{obj.embedded_chunks:,}", f"{obj.total_chunks:,}",
                           f" — {obj.error}" if obj.error else "")

    def get_urls(self):
        return [
            path("reembed/", self.admin_site.admin_view(self.reembed_view), name="knowledge_embeddingspace_reembed"),
            path("<uuid:space_id>/cancel/", self.admin_site.admin_view(self.cancel_view),
                 name="knowledge_embeddingspace_cancel"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        building = EmbeddingSpace.objects.filter(status=EmbeddingSpaceStatus.BUILDING).first()
        active = EmbeddingSpace.objects.filter(status=EmbeddingSpaceStatus.ACTIVE).first()
        configured = configured_spec()
        extra_context = {
            **(extra_context or {}),
            "active": active, "building": building, "configured": configured,
            "needs_reembed": active is not None and active.spec != configured and building is None,
            "may_reembed": self._may_reembed(request),
        }
        return super().changelist_view(request, extra_context=extra_context)

    def _back(self):
        return redirect(reverse("admin:knowledge_embeddingspace_changelist"))

    def reembed_view(self, request):
        if request.method != "POST":
            return self._back()
        if not self._may_reembed(request):
            raise PermissionDenied
        try:
            space = reembed_start(actor=request.user)
        except ReembedError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Re-embedding {space.total_chunks:,} chunks with {space.spec}. Searches keep "
                                      "using the current index until the new one is complete.")
        return self._back()

    def cancel_view(self, request, space_id):
        if request.method != "POST":
            return self._back()
        if not self._may_reembed(request):
            raise PermissionDenied
        space = EmbeddingSpace.objects.filter(pk=space_id).first()
        if space is None:
            messages.error(request, "No such embedding space.")
            return self._back()
        try:
            reembed_cancel(space=space, actor=request.user)
        except ReembedError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Re-embedding with {space.spec} was cancelled.")
        return self._back()
