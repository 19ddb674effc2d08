from django.contrib import admin
from django.db.models import Q

from integrations.models import ActionApproval, ActionDefinition, ActionRun, ActionRunEvent, Connector
from integrations.selectors import APPROVALS_PREFETCH


@admin.register(Connector)
class ConnectorAdmin(admin.ModelAdmin):
    list_display = ("name", "base_url", "base_url_env", "auth", "timeout_s")


@admin.register(ActionDefinition)
class ActionDefinitionAdmin(admin.ModelAdmin):
    list_display = ("name", "title", "connector", "risk_level", "enabled")
    list_filter = ("risk_level", "enabled", "connector")
    list_select_related = ("connector",)
    search_fields = ("name", "title")


class ActionRunEventInline(admin.TabularInline):
    model = ActionRunEvent
    extra = 0
    can_delete = False
    readonly_fields = ("from_status", "to_status", "actor_label", "data", "created_at")

    def has_add_permission(self, request, obj=None):
        return False


class ActionApprovalInline(admin.TabularInline):
    """Who approved which parameters; read-only history (approvals are given through services)."""

    model = ActionApproval
    extra = 0
    can_delete = False
    fields = readonly_fields = ("approver", "params", "edited", "voided_at", "created_at")
    ordering = ("created_at",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("approver")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ActionRun)
class ActionRunAdmin(admin.ModelAdmin):
    list_display = ("action", "status", "approval_progress", "proposed_by", "attempts", "subject_id", "created_at")
    list_filter = ("status", "action")
    list_select_related = ("action", "proposed_by")
    readonly_fields = [f.name for f in ActionRun._meta.fields]
    inlines = [ActionApprovalInline, ActionRunEventInline]

    def get_queryset(self, request):
        # Only the runs whose review items (their approval, or their subject's escalation) the
        # person may see in the queue; compliance officers and administrators see all.
        from django.db.models import CharField
        from django.db.models.functions import Cast

        from review.models import ReviewItem
        from review.permissions import items_visible_filter

        qs = super().get_queryset(request).prefetch_related(APPROVALS_PREFETCH)
        visible = items_visible_filter(request.user)
        if visible is None:
            return qs
        items = ReviewItem.objects.filter(visible)
        return qs.annotate(pk_text=Cast("pk", CharField())).filter(
            Q(pk_text__in=items.values("subject_id")) | Q(subject_id__in=items.values("subject_id")))

    @admin.display(description="Approvals")
    def approval_progress(self, obj: ActionRun) -> str:
        return obj.approval_progress

    def has_add_permission(self, request):
        return False
