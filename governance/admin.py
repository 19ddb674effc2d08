"""Governance in the admin: everything here is read-only. Versions and deployments change only
through their lifecycle (``/governance/``, ``governance.lifecycle``), so that every change is
four-eyed, evidenced and audited; audit rows and evaluation cases are records. django-auditlog
still records any admin edit of the models it tracks."""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from governance.models import (
    AuditCheckpoint,
    AuditEvent,
    Deployment,
    EvaluationCase,
    EvaluationRun,
    ModelVersion,
    PromptVersion,
    VersionEvent,
)

LIFECYCLE_NOTE = "Versions and deployments are changed on the Governance pages, where every change is approved and audited."


class ReadOnlyAdmin(admin.ModelAdmin):
    """View only: no add, change or delete, whoever asks (superusers included)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class LifecycleAdmin(ReadOnlyAdmin):
    """A read-only admin whose pages point to the Governance pages for changes."""

    def _note(self, request) -> None:
        url = reverse("governance:versions_overview")
        messages.info(request, format_html('{} <a href="{}">Open Governance</a>.', LIFECYCLE_NOTE, url))

    def changelist_view(self, request, extra_context=None):
        if request.method == "GET":
            self._note(request)
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if request.method == "GET":
            self._note(request)
        return super().change_view(request, object_id, form_url, extra_context)


def _version_link(version) -> str:
    if version is None:
        return "—"
    return format_html('<a href="{}">{}</a>', reverse("governance:versions_detail", args=[version.kind, version.pk]),
                       version.label)


@admin.register(ModelVersion)
class ModelVersionAdmin(LifecycleAdmin):
    list_display = ("label", "status", "provider", "model_name", "risk_level", "created_by", "governance_page")
    list_filter = ("status", "provider", "risk_level")
    list_select_related = ("created_by",)
    search_fields = ("name", "model_name", "description")
    ordering = ("name", "-version")

    @admin.display(description="Version", ordering="name")
    def label(self, obj: ModelVersion) -> str:
        return obj.label

    @admin.display(description="Governance")
    def governance_page(self, obj: ModelVersion) -> str:
        return _version_link(obj)


@admin.register(PromptVersion)
class PromptVersionAdmin(LifecycleAdmin):
    list_display = ("label", "status", "created_by", "updated_at", "governance_page")
    list_filter = ("status",)
    list_select_related = ("created_by",)
    search_fields = ("name", "template", "description")
    ordering = ("name", "-version")

    @admin.display(description="Version", ordering="name")
    def label(self, obj: PromptVersion) -> str:
        return obj.label

    @admin.display(description="Governance")
    def governance_page(self, obj: PromptVersion) -> str:
        return _version_link(obj)


@admin.register(VersionEvent)
class VersionEventAdmin(ReadOnlyAdmin):
    """Append-only history of every version (a trigger refuses UPDATE and DELETE)."""

    list_display = ("created_at", "subject", "kind", "from_status", "to_status", "actor", "short_reason")
    list_filter = ("kind",)
    list_select_related = ("model_version", "prompt_version", "actor")
    search_fields = ("reason", "model_version__name", "prompt_version__name")
    ordering = ("-created_at",)
    date_hierarchy = "created_at"

    @admin.display(description="Version")
    def subject(self, obj: VersionEvent) -> str:
        return _version_link(obj.model_version or obj.prompt_version)

    @admin.display(description="Reason")
    def short_reason(self, obj: VersionEvent) -> str:
        return obj.reason if len(obj.reason) <= 80 else f"{obj.reason[:79]}…"


class LiveFilter(admin.SimpleListFilter):
    title = "live"
    parameter_name = "live"

    def lookups(self, request, model_admin):
        return [("yes", "Live"), ("no", "Ended")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(ended_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(ended_at__isnull=False)
        return queryset


@admin.register(Deployment)
class DeploymentAdmin(LifecycleAdmin):
    list_display = ("assistant", "role", "model_link", "prompt_link", "traffic_percent", "created_at", "started_by",
                    "ended_at", "ended_by")
    list_filter = (LiveFilter, "role", "assistant")
    list_select_related = ("assistant", "model_version", "prompt_version", "started_by", "ended_by")
    ordering = ("-created_at",)

    @admin.display(description="Model version")
    def model_link(self, obj: Deployment) -> str:
        return _version_link(obj.model_version)

    @admin.display(description="Prompt version")
    def prompt_link(self, obj: Deployment) -> str:
        return _version_link(obj.prompt_version)


@admin.register(EvaluationRun)
class EvaluationRunAdmin(ReadOnlyAdmin):
    """Runs and their summaries; the per-case results are on the evaluation pages."""

    list_display = ("created_at", "kind", "status", "candidate_model", "candidate_prompt", "baseline_model",
                    "baseline_prompt", "done", "total", "finished_at")
    list_filter = ("kind", "status")
    list_select_related = ("candidate_model", "candidate_prompt", "baseline_model", "baseline_prompt")
    ordering = ("-created_at",)
    exclude = ("params",)


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
