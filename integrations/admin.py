from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Aggregate, Count, FilteredRelation, FloatField, Q
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from integrations.models import ActionApproval, ActionDefinition, ActionRun, ActionRunEvent, AuthKind, Connector
from integrations.selectors import APPROVALS_PREFETCH
from integrations.services import connector_secret_update, connector_test

HEALTH_WINDOW = timedelta(hours=1)


class Percentile(Aggregate):
    """PostgreSQL ``percentile_cont(p) WITHIN GROUP (ORDER BY expr)``; ``p`` is a constant of ours."""

    function = "percentile_cont"
    template = "%(function)s(%(percentile)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, percentile: float, **extra):
        super().__init__(expression, percentile=float(percentile), **extra)


class ConnectorAdminForm(forms.ModelForm):
    """The secret is write-only: the field is never filled in, empty keeps the stored one."""

    secret = forms.CharField(
        required=False, strip=False, widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Bearer token, basic password, HMAC key or OAuth2 client secret, stored encrypted. Never "
                  "shown again; leave empty to keep the stored one.")
    clear_secret = forms.BooleanField(required=False, label="Remove the stored secret")

    class Meta:
        model = Connector
        fields = ("name", "base_url", "base_url_env", "auth", "secret_env", "username", "oauth_token_url",
                  "oauth_client_id", "oauth_scope", "extra_headers", "timeout_s", "verify_tls", "health_path")

    def clean(self):
        cleaned = super().clean()
        secret, clear = cleaned.get("secret") or "", cleaned.get("clear_secret")
        if secret and clear:
            raise forms.ValidationError("Enter a new secret or remove the stored one, not both.")
        stored_after = bool(secret) or (bool(self.instance.secret_encrypted) and not clear)
        if cleaned.get("secret_env") and stored_after:
            raise forms.ValidationError("Name an environment variable or store a secret, not both "
                                        "(tick “Remove the stored secret” to use the variable).")
        if cleaned.get("auth", AuthKind.NONE) != AuthKind.NONE and not (cleaned.get("secret_env") or stored_after):
            self.add_error("secret", "This authentication needs a secret: store one here or name its "
                                     "environment variable.")
        return cleaned


@admin.register(Connector)
class ConnectorAdmin(admin.ModelAdmin):
    form = ConnectorAdminForm
    list_display = ("name", "base_url", "base_url_env", "auth", "tls", "calls_1h", "error_rate_1h", "p95_ms_1h")
    list_filter = ("auth", "verify_tls")
    search_fields = ("name",)
    readonly_fields = ("stored_secret",)
    # The list's count runs over the annotated queryset; no second, unfiltered count is needed.
    show_full_result_count = False
    fieldsets = (
        (None, {"fields": ("name", "base_url", "base_url_env", "timeout_s", "verify_tls", "health_path")}),
        ("Authentication", {"fields": ("auth", "secret_env", "stored_secret", "secret", "clear_secret", "username",
                                       "oauth_token_url", "oauth_client_id", "oauth_scope")}),
        ("Headers", {"fields": ("extra_headers",)}),
    )

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        match = request.resolver_match
        if match is None or not match.url_name or not match.url_name.endswith("_changelist"):
            return qs
        # Health over the last hour for the whole page in the list query itself: the window is
        # in the join condition, so the (connector, created_at) index finds the rows.
        since = timezone.now() - HEALTH_WINDOW
        return qs.annotate(recent=FilteredRelation("calls", condition=Q(calls__created_at__gte=since))).annotate(
            calls_recent=Count("recent"),
            errors_recent=Count("recent", filter=~Q(recent__error_class="")),
            p95_recent=Percentile("recent__latency_ms", 0.95),
        )

    @admin.display(description="TLS", ordering="verify_tls")
    def tls(self, obj: Connector) -> str:
        if obj.verify_tls:
            return "verified"
        return format_html('<strong style="color:#ba2121">{}</strong>', "⚠ not verified")

    @admin.display(description="Calls (1 h)", ordering="calls_recent")
    def calls_1h(self, obj: Connector) -> int:
        return obj.calls_recent

    @admin.display(description="Errors (1 h)", ordering="errors_recent")
    def error_rate_1h(self, obj: Connector) -> str:
        if not obj.calls_recent:
            return "–"
        return f"{100 * obj.errors_recent / obj.calls_recent:.0f}%"

    @admin.display(description="p95 latency (1 h)", ordering="p95_recent")
    def p95_ms_1h(self, obj: Connector) -> str:
        return "–" if obj.p95_recent is None else f"{obj.p95_recent:.0f} ms"

    @admin.display(description="Stored secret")
    def stored_secret(self, obj: Connector) -> str:
        if obj is None or not obj.pk:
            return "–"
        if obj.secret_encrypted:
            return "A secret is stored (encrypted, never shown)."
        return f"From the environment variable {obj.secret_env}." if obj.secret_env else "None."

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # Inside the admin's transaction: the secret changes (and is audited) with the rest.
        connector_secret_update(actor=request.user, connector_id=obj.pk, secret=form.cleaned_data.get("secret") or "",
                                clear=bool(form.cleaned_data.get("clear_secret")))
        obj.refresh_from_db(fields=["secret_encrypted"])

    def get_urls(self):
        return [
            path("<uuid:object_id>/test-connection/", self.admin_site.admin_view(self.test_connection_view),
                 name="integrations_connector_test"),
            *super().get_urls(),
        ]

    def test_connection_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        connector = get_object_or_404(Connector, pk=object_id)
        if not self.has_change_permission(request, connector):
            raise PermissionDenied
        result = connector_test(connector_id=connector.pk, actor=request.user)
        if result.ok:
            messages.success(request, f"Connection test of {connector.name}: {connector.health_path} answered "
                                      f"HTTP {result.status} in {result.latency_ms} ms.")
        else:
            status = f"HTTP {result.status}, " if result.status else ""
            messages.error(request, f"Connection test failed ({status}{result.latency_ms} ms): {result.error}")
        return HttpResponseRedirect(reverse("admin:integrations_connector_change", args=[connector.pk]))

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["tls_off"] = obj is not None and not obj.verify_tls
        context["can_test"] = obj is not None and self.has_change_permission(request, obj)
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)


@admin.register(ActionDefinition)
class ActionDefinitionAdmin(admin.ModelAdmin):
    """The JSON Schema, approval rule and compensation mapping are checked by
    ``ActionDefinition.clean`` on save: an invalid one is a form error, nothing is stored."""

    list_display = ("name", "title", "connector", "risk_level", "approval", "compensation_action", "enabled")
    list_filter = ("risk_level", "enabled", "connector")
    list_select_related = ("connector", "compensation_action")
    search_fields = ("name", "title")
    autocomplete_fields = ("compensation_action",)
    fieldsets = (
        (None, {"fields": ("name", "title", "description", "enabled", "risk_level")}),
        ("Call", {"fields": ("connector", "method", "path", "parameters_schema", "timeout_s")}),
        ("Policy", {"fields": ("approval_rule", "max_attempts", "retry_backoff_s", "retry_backoff_max_s")}),
        ("Compensation", {"fields": ("compensation_action", "compensation_params")}),
        ("Conversation", {"fields": ("examples", "ask", "result_template")}),
    )

    @admin.display(description="Approval")
    def approval(self, obj: ActionDefinition) -> str:
        return (obj.approval_rule or {}).get("rule", "always")


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


# --- Webhooks (integrations/webhooks.py) ------------------------------------------------------------

from django.template import engines  # noqa: E402
from django.template.response import SimpleTemplateResponse  # noqa: E402

from integrations.models import (  # noqa: E402
    InboundWebhookConfig,
    WebhookDelivery,
    WebhookEndpoint,
)
from integrations.webhooks import webhook_delivery_redeliver, webhook_secret_update  # noqa: E402


class WebhookSecretForm(forms.ModelForm):
    """The signing secret is write-only, as a connector's: never filled in, empty keeps it."""

    secret = forms.CharField(
        required=False, strip=False, widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="HMAC signing secret, stored encrypted. Never shown again; leave empty to keep the stored one.")
    clear_secret = forms.BooleanField(required=False, label="Remove the stored secret")

    def clean(self):
        cleaned = super().clean()
        secret, clear = cleaned.get("secret") or "", cleaned.get("clear_secret")
        if secret and clear:
            raise forms.ValidationError("Enter a new secret or remove the stored one, not both.")
        stored_after = bool(secret) or (bool(self.instance.secret_encrypted) and not clear)
        if cleaned.get("secret_env") and stored_after:
            raise forms.ValidationError("Name an environment variable or store a secret, not both.")
        if not (cleaned.get("secret_env") or stored_after):
            self.add_error("secret", "Webhooks are always signed: store a secret or name its environment variable.")
        return cleaned


class WebhookSecretAdminMixin:
    readonly_fields = ("stored_secret",)

    @admin.display(description="Stored secret")
    def stored_secret(self, obj) -> str:
        if obj is None or not obj.pk:
            return "–"
        if obj.secret_encrypted:
            return "A secret is stored (encrypted, never shown)."
        return f"From the environment variable {obj.secret_env}." if obj.secret_env else "None."

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        webhook_secret_update(actor=request.user, obj=obj, secret=form.cleaned_data.get("secret") or "",
                              clear=bool(form.cleaned_data.get("clear_secret")))


class InboundWebhookConfigForm(WebhookSecretForm):
    class Meta:
        model = InboundWebhookConfig
        fields = ("connector", "active", "tolerance_s", "secret_env")


@admin.register(InboundWebhookConfig)
class InboundWebhookConfigAdmin(WebhookSecretAdminMixin, admin.ModelAdmin):
    form = InboundWebhookConfigForm
    list_display = ("connector", "active", "tolerance_s", "created_at")
    list_filter = ("active",)
    list_select_related = ("connector",)
    fields = ("connector", "active", "tolerance_s", "secret_env", "stored_secret", "secret", "clear_secret")


class WebhookEndpointForm(WebhookSecretForm):
    url = forms.URLField(max_length=500, assume_scheme="https")

    class Meta:
        model = WebhookEndpoint
        fields = ("name", "url", "events", "active", "timeout_s", "secret_env")


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(WebhookSecretAdminMixin, admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ("name", "url", "events", "active")
    list_filter = ("active",)
    search_fields = ("name", "url")
    fields = ("name", "url", "events", "active", "timeout_s", "secret_env", "stored_secret", "secret",
              "clear_secret")


_REDELIVER_CONFIRM = engines["django"].from_string("""{% extends "admin/base_site.html" %}
{% block content %}
<p>Send these {{ deliveries|length }} webhook deliveries again? Each is reset (pending, no attempts) and queued.</p>
<ul>{% for d in deliveries %}<li>{{ d.event }} → {{ d.endpoint.name }} ({{ d.status }}, {{ d.attempts }} attempts)</li>{% endfor %}</ul>
<form method="post">{% csrf_token %}
{% for d in deliveries %}<input type="hidden" name="_selected_action" value="{{ d.pk }}">{% endfor %}
<input type="hidden" name="action" value="redeliver">
<input type="hidden" name="post" value="yes">
<p><label for="id_reason">Reason (recorded in the audit trail):</label>
<input type="text" name="reason" id="id_reason" required size="60"></p>
<input type="submit" value="Yes, redeliver"> <a href="">No, go back</a>
</form>
{% endblock %}""")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """The delivery log: read-only; "Redeliver" resets and queues the selected deliveries."""

    list_display = ("event", "endpoint", "status", "attempts", "last_status_code", "next_attempt_at",
                    "delivered_at", "created_at")
    list_filter = ("status", "event", "endpoint")
    list_select_related = ("endpoint",)
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    actions = ["redeliver"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Redeliver the selected deliveries", permissions=["view"])
    def redeliver(self, request, queryset):
        if not request.user.has_perm("integrations.change_webhookdelivery") and not request.user.is_superuser:
            raise PermissionDenied
        reason = (request.POST.get("reason") or "").strip()
        if request.POST.get("post") != "yes" or not reason:
            context = {**self.admin_site.each_context(request), "title": "Redeliver webhooks",
                       "deliveries": list(queryset.select_related("endpoint")), "opts": self.model._meta}
            return SimpleTemplateResponse(_REDELIVER_CONFIRM, context)
        count = webhook_delivery_redeliver(actor=request.user, delivery_ids=list(queryset.values_list("pk", flat=True)),
                                           reason=reason)
        messages.success(request, f"{count} deliver{'y' if count == 1 else 'ies'} queued again.")
        return None
