"""The outbox in the admin: read-only, for operators checking that queued work was delivered."""

from django.contrib import admin

from config.models import OutboxMessage


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = ("task_name", "args", "sends", "dispatched_at", "done_at", "gave_up_at", "created_at")
    list_filter = ("task_name", ("done_at", admin.EmptyFieldListFilter), ("gave_up_at", admin.EmptyFieldListFilter))
    search_fields = ("task_name",)
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
