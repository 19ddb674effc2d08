from django.contrib import admin

from integrations.models import ActionDefinition, ActionRun, ActionRunEvent, Connector


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


@admin.register(ActionRun)
class ActionRunAdmin(admin.ModelAdmin):
    list_display = ("action", "status", "attempts", "subject_id", "created_at")
    list_filter = ("status", "action")
    list_select_related = ("action",)
    readonly_fields = [f.name for f in ActionRun._meta.fields]
    inlines = [ActionRunEventInline]

    def has_add_permission(self, request):
        return False
