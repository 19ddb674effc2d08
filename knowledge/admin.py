from django.contrib import admin

from knowledge.models import Chunk, Collection, Document


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
    list_display = ("name", "audience", "created_at")
    list_filter = ("audience",)
    search_fields = ("name",)


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ("title", "collection", "status", "version", "updated_at")
    list_filter = ("status", "collection")
    list_select_related = ("collection",)
    search_fields = ("title", "slug")
    readonly_fields = ("checksum", "version", "status")


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    list_display = ("document", "position", "section")
    list_select_related = ("document",)
    search_fields = ("text", "section")
    exclude = ("embedding",)
    readonly_fields = ("document", "position", "section", "text")
