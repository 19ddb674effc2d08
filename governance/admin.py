"""Governance in the admin: versions are editable by administrators; audit rows are read-only."""

from django.contrib import admin

from governance.models import AuditEvent, ModelVersion, PromptVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "provider", "model_name", "status", "created_at")
    list_filter = ("provider", "status")
    search_fields = ("name", "model_name")


@admin.register(PromptVersion)
class PromptVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "status", "created_at")
    list_filter = ("status",)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("seq", "occurred_at", "action", "actor_label", "target_type", "target_id")
    list_filter = ("action",)
    search_fields = ("target_id", "actor_label", "request_id")
    ordering = ("-seq",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
