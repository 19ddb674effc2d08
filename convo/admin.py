"""Conversations in the admin: read-only records of what was said and decided; intents are
editable by model owners."""

from django.contrib import admin

from convo.models import Contact, Conversation, Intent, IntentExample, Message, Turn


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


@admin.register(Turn)
class TurnAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "intent", "confidence", "decision", "provider", "model_version", "latency_ms",
                    "created_at")
    list_filter = ("decision", "provider", "status")
    list_select_related = ("model_version",)
    search_fields = ("id", "conversation__id", "intent")
    date_hierarchy = "created_at"


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
