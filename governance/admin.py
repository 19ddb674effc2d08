"""Governance in the admin: versions are editable by administrators; audit rows and evaluation
cases are read-only."""

from django.contrib import admin

from governance.models import AuditCheckpoint, AuditEvent, EvaluationCase, ModelVersion, PromptVersion


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


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(admin.ModelAdmin):
    """Signed chain heads (``governance.audit_checkpoint``); the database refuses changes."""

    list_display = ("seq", "hash", "signed_at", "signature")
    ordering = ("-seq",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(EvaluationCase)
class EvaluationCaseAdmin(admin.ModelAdmin):
    """Flagged AI answers kept for evaluating the next model or prompt version. Read-only: cases
    are made by flagging an answer in the office (``convo.flagging.ai_answer_flag``)."""

    list_display = ("short_question", "category", "model_version", "prompt_version", "created_by", "active",
                    "created_at")
    list_filter = ("category", "model_version", "active")
    list_select_related = ("model_version", "prompt_version", "created_by")
    search_fields = ("question", "expected_answer", "source_id", "conversation_id")
    ordering = ("-created_at",)
    date_hierarchy = "created_at"

    @admin.display(description="Question")
    def short_question(self, obj: EvaluationCase) -> str:
        return obj.question if len(obj.question) <= 80 else f"{obj.question[:79]}…"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
