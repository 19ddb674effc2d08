"""Conversations in the admin: read-only records of what was said and decided; intents are
editable by model owners; canned responses by supervisors and administrators."""

from django.contrib import admin
from django.db.models import Q

from convo.models import CannedResponse, Contact, Conversation, Intent, IntentExample, Message, Turn
from review.models import Team
from review.permissions import sees_every_queue, team_ids_for


class ReadOnlyAdmin(admin.ModelAdmin):
    """Conversation records change only through services, never by hand."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class MessageInline(admin.TabularInline):
    model = Message
    fields = ("seq", "role", "text", "author", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("seq",)

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "status", "channel", "contact", "assigned_agent", "created_at", "updated_at")
    list_filter = ("status", "channel", "ai_disclosed")
    list_select_related = ("contact", "assigned_agent")
    search_fields = ("id", "contact__email", "contact__name")
    date_hierarchy = "created_at"
    inlines = [MessageInline]

    def get_queryset(self, request):
        # Supervisors see their teams' conversations here too, as in the workspace.
        from convo.selectors import conversation_list_for_user

        return super().get_queryset(request).filter(pk__in=conversation_list_for_user(user=request.user).values("pk"))


@admin.register(Turn)
class TurnAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "intent", "confidence", "decision", "provider", "model_version", "latency_ms",
                    "created_at")
    list_filter = ("decision", "provider", "status")
    list_select_related = ("model_version",)
    search_fields = ("id", "conversation__id", "intent")
    date_hierarchy = "created_at"

    def get_queryset(self, request):
        from convo.selectors import conversation_list_for_user

        return super().get_queryset(request).filter(
            conversation_id__in=conversation_list_for_user(user=request.user).values("pk"))


@admin.register(Contact)
class ContactAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "email", "external_id", "created_at")
    search_fields = ("name", "email", "external_id")


class IntentExampleInline(admin.TabularInline):
    model = IntentExample
    fields = ("text",)
    extra = 0


@admin.register(Intent)
class IntentAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "action_name")
    list_filter = ("kind",)
    search_fields = ("name",)
    inlines = [IntentExampleInline]

    def save_formset(self, request, form, formset, change):
        # New example phrases need their embedding before they can be matched.
        from knowledge.embeddings import embed_texts

        instances = formset.save(commit=False)
        pending = [i for i in instances if isinstance(i, IntentExample)]
        for instance, vector in zip(pending, embed_texts([i.text for i in pending])):
            instance.embedding = vector
        for obj in formset.deleted_objects:
            obj.delete()
        for instance in instances:
            instance.save()
        formset.save_m2m()


@admin.register(CannedResponse)
class CannedResponseAdmin(admin.ModelAdmin):
    """Prepared replies for the chat composer. Supervisors keep those for everyone and those of
    the teams they supervise or work; they never see another team's."""

    list_display = ("title", "shortcut", "team", "active", "created_by", "updated_at")
    list_filter = ("active", "team")
    list_select_related = ("team", "created_by")
    search_fields = ("title", "shortcut", "text")
    readonly_fields = ("created_by", "created_at", "updated_at")
    fields = ("title", "shortcut", "team", "text", "active", "created_by", "created_at", "updated_at")
    prepopulated_fields = {"shortcut": ("title",)}

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if sees_every_queue(request.user):
            return qs
        return qs.filter(Q(team__isnull=True) | Q(team_id__in=team_ids_for(request.user)))

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "team" and not sees_every_queue(request.user):
            kwargs["queryset"] = Team.objects.filter(pk__in=team_ids_for(request.user)).order_by("name")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
