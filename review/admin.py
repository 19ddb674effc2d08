from django.contrib import admin

from review.models import ReviewEvent, ReviewItem, Team


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at")
    filter_horizontal = ("members",)


class ReviewEventInline(admin.TabularInline):
    model = ReviewEvent
    extra = 0
    can_delete = False
    readonly_fields = ("kind", "actor", "data", "created_at")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(ReviewItem)
class ReviewItemAdmin(admin.ModelAdmin):
    list_display = ("title", "kind", "reason", "status", "priority", "team", "claimed_by", "created_at")
    list_filter = ("kind", "status", "reason", "team")
    list_select_related = ("team", "claimed_by")
    readonly_fields = ("kind", "subject_type", "subject_id", "status", "claimed_by", "claim_expires_at", "resolved_at")
    inlines = [ReviewEventInline]
