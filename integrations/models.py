"""Connectors to backends, the action catalogue, and action runs with their history."""

from __future__ import annotations

import hashlib
import json
import re

import jsonschema
from django.conf import settings
from django.core import checks
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from config.models import BaseModel


class AuthKind(models.TextChoices):
    NONE = "none", "No authentication"
    BEARER = "bearer", "Bearer token"
    BASIC = "basic", "Basic (user and password)"
    HMAC = "hmac", "HMAC request signature"
    OAUTH2 = "oauth2", "OAuth2 client credentials"


# Headers the auth kind (or the idempotency contract) sets: extra headers may not override them.
RESERVED_HEADERS = frozenset({
    "authorization", "proxy-authorization", "x-tandem-timestamp", "x-tandem-signature", "idempotency-key",
    "host", "content-length", "cookie",
})
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def validate_extra_headers(value) -> None:
    """Extra headers: a JSON object of header name → string value, none of them an auth header."""
    if not isinstance(value, dict):
        raise ValidationError("Extra headers must be a JSON object of header name to value.")
    for name, header_value in value.items():
        if not _HEADER_NAME.match(name):
            raise ValidationError(f"{name!r} is not a valid header name.")
        if name.lower() in RESERVED_HEADERS:
            raise ValidationError(f"{name} is set by the connector's authentication or by Tandem; "
                                  "it cannot be an extra header.")
        if not isinstance(header_value, str):
            raise ValidationError(f"The value of {name} must be a string.")
        if "\r" in header_value or "\n" in header_value:
            raise ValidationError(f"The value of {name} must be on one line.")


class Connector(BaseModel):
    """An HTTP/JSON backend and how to authenticate to it.

    The secret (bearer token, basic password, HMAC key or OAuth2 client secret) comes from the
    environment variable named in ``secret_env`` or is stored Fernet-encrypted in
    ``secret_encrypted`` (``integrations.connectors.secret_encrypt``); it is never shown back."""

    name = models.CharField(max_length=100, unique=True)
    base_url = models.CharField(max_length=500, blank=True, help_text="Used when base_url_env is unset")
    base_url_env = models.CharField(max_length=100, blank=True, help_text="Environment variable holding the base URL")
    auth = models.CharField(max_length=20, choices=AuthKind.choices, default=AuthKind.NONE)
    secret_env = models.CharField(max_length=100, blank=True, help_text="Environment variable holding the secret")
    secret_encrypted = models.TextField(blank=True, editable=False,
                                        help_text="The stored secret, Fernet-encrypted (TANDEM_FIELD_KEY)")
    username = models.CharField(max_length=200, blank=True, help_text="User name for basic authentication")
    oauth_token_url = models.CharField(max_length=500, blank=True, help_text="OAuth2 token endpoint")
    oauth_client_id = models.CharField(max_length=200, blank=True)
    oauth_scope = models.CharField(max_length=500, blank=True)
    extra_headers = models.JSONField(default=dict, blank=True, validators=[validate_extra_headers],
                                     help_text='Sent with every call, e.g. {"X-Tenant": "brightwater"}')
    timeout_s = models.FloatField(default=5.0, validators=[MinValueValidator(0.1)])
    verify_tls = models.BooleanField(default=True, help_text="Check the backend's TLS certificate (keep on)")
    health_path = models.CharField(max_length=300, default="/health", help_text="Called by the connection test")

    def __str__(self) -> str:
        return self.name

    @property
    def has_stored_secret(self) -> bool:
        return bool(self.secret_encrypted)

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.auth == AuthKind.BASIC and not self.username:
            errors["username"] = "Basic authentication needs a user name."
        if self.auth == AuthKind.OAUTH2:
            if not self.oauth_token_url.startswith(("http://", "https://")):
                errors["oauth_token_url"] = "OAuth2 needs the token endpoint's http(s) URL."  # noqa: S105
            if not self.oauth_client_id:
                errors["oauth_client_id"] = "OAuth2 needs a client id."
        if self.health_path and not self.health_path.startswith("/"):
            errors["health_path"] = "The health path starts with /."
        if errors:
            raise ValidationError(errors)


class ConnectorCall(BaseModel):
    """One call to a connector, for its health figures (calls, error rate, p95 latency).

    Only the path template is kept (``/orders/{order_id}``), never the filled path: that would
    copy customers' data into a telemetry table. Pruned after 7 days."""

    connector = models.ForeignKey(Connector, on_delete=models.CASCADE, related_name="calls")
    method = models.CharField(max_length=10)
    path_template = models.CharField(max_length=300)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    error_class = models.CharField(max_length=100, blank=True,
                                   help_text="Empty when the call worked; e.g. ReadTimeout, HTTP 5xx, Unauthorized")

    class Meta:
        indexes = [models.Index(fields=["connector", "created_at"], name="connectorcall_recent_idx")]

    def __str__(self) -> str:
        return f"{self.connector_id} {self.method} {self.path_template} → {self.status_code or self.error_class}"


class RiskLevel(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class ActionDefinition(BaseModel):
    """Something the assistant may propose: its parameters (JSON Schema), risk and approval rule."""

    name = models.SlugField(max_length=80, unique=True)
    title = models.CharField(max_length=150)
    description = models.TextField(help_text="Shown to the model")
    connector = models.ForeignKey(Connector, on_delete=models.PROTECT, related_name="actions")
    method = models.CharField(max_length=10, default="POST")
    path = models.CharField(max_length=300)
    parameters_schema = models.JSONField(default=dict)
    risk_level = models.CharField(max_length=10, choices=RiskLevel.choices, default=RiskLevel.LOW)
    approval_rule = models.JSONField(
        default=dict,
        help_text='{"rule": "never" | "always" | "above" | "param", "field", "threshold", "values", '
                  '"four_eyes_above"}; "above": approval when the field is above the threshold; "param": '
                  'approval when the field\'s value is one of "values"; four_eyes_above (default: the '
                  'ACTION_FOUR_EYES_ABOVE setting, null for never) is the value of the field ("amount" for a '
                  '"param" rule) above which two different people must approve')
    examples = models.JSONField(default=list, blank=True, help_text="Customer phrasings, for intent routing")
    ask = models.JSONField(default=dict, blank=True, help_text="Question to ask for each missing parameter")
    result_template = models.TextField(blank=True)
    timeout_s = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.1)],
                                  help_text="Seconds; empty: the connector's timeout")
    max_attempts = models.PositiveSmallIntegerField(default=4)
    retry_backoff_s = models.FloatField(default=1.0, validators=[MinValueValidator(0)],
                                        help_text="Wait before the first retry; doubled for each further one")
    retry_backoff_max_s = models.FloatField(default=30.0, validators=[MinValueValidator(0)],
                                            help_text="Longest wait between two attempts")
    compensation_action = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="compensates",
        help_text="The action that undoes this one (e.g. a refund reversal)")
    compensation_params = models.JSONField(
        default=dict, blank=True,
        help_text='Parameters of the compensating run, each read from the original run: '
                  '{"refund_id": "result.refund_id", "order_id": "params.order_id", "note": {"value": "reversal"}}')
    enabled = models.BooleanField(default=True)

    def __str__(self) -> str:
        return self.title

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        try:
            jsonschema.Draft202012Validator.check_schema(self.parameters_schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.path) or "the schema"
            errors["parameters_schema"] = [f"Not a valid JSON Schema ({where}): {exc.message}"]
        else:
            if not isinstance(self.parameters_schema, dict) or self.parameters_schema.get("type") != "object":
                errors["parameters_schema"] = ['The parameters must be a JSON Schema of "type": "object".']
        properties = (self.parameters_schema.get("properties") or {}) if isinstance(self.parameters_schema, dict) else {}
        rule_errors = approval_rule_errors(self.approval_rule, properties)
        if rule_errors:
            errors["approval_rule"] = rule_errors
        if self.retry_backoff_s is not None and self.retry_backoff_max_s is not None \
                and self.retry_backoff_max_s < self.retry_backoff_s:
            errors["retry_backoff_max_s"] = ["The longest wait cannot be shorter than the first one."]
        if self.compensation_action_id is not None and self.compensation_action_id == self.pk:
            errors["compensation_action"] = ["An action cannot compensate itself."]
        mapping_errors = compensation_params_errors(self.compensation_params)
        if mapping_errors:
            errors["compensation_params"] = mapping_errors
        elif self.compensation_params and self.compensation_action_id is None:
            errors["compensation_params"] = ["Choose the compensation action these parameters are for."]
        if errors:
            raise ValidationError(errors)

    @property
    def is_read_only(self) -> bool:
        return self.method.upper() == "GET"


class RunStatus(models.TextChoices):
    PROPOSED = "proposed"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    APPROVED = "approved"
    EXECUTING = "executing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    COMPENSATED = "compensated"


TERMINAL_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.REJECTED, RunStatus.EXPIRED,
                               RunStatus.COMPENSATED})

APPROVAL_RULES = ("never", "always", "above", "param")
_APPROVAL_RULE_KEYS = {"rule", "field", "threshold", "values", "four_eyes_above"}


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def approval_rule_errors(rule, properties: dict) -> list[str]:
    """What is wrong with an approval rule (empty: nothing). ``properties``: the parameters'
    schema properties, so a rule cannot name a parameter the action does not have."""
    if not isinstance(rule, dict):
        return ['The approval rule must be a JSON object such as {"rule": "always"}.']
    errors = []
    unknown = sorted(set(rule) - _APPROVAL_RULE_KEYS)
    if unknown:
        errors.append(f"Unknown key(s): {', '.join(unknown)}.")
    kind = rule.get("rule", "always")
    if kind not in APPROVAL_RULES:
        return [*errors, f"rule must be one of {', '.join(APPROVAL_RULES)}, not {kind!r}."]
    field = rule.get("field", "amount")
    if kind in ("above", "param") or "field" in rule:
        if not isinstance(field, str) or not field:
            errors.append("field must name a parameter.")
        elif properties and field not in properties:
            errors.append(f"field {field!r} is not one of the action's parameters.")
    if kind == "above" and not _is_number(rule.get("threshold")):
        errors.append('"above" needs a numeric threshold.')
    if kind == "param":
        values = rule.get("values")
        if not isinstance(values, list) or not values:
            errors.append('"param" needs "values": a non-empty list of the values that need approval.')
        elif not all(isinstance(v, str | int | float | bool) for v in values):
            errors.append('"values" may hold only strings, numbers and booleans.')
    if "four_eyes_above" in rule and rule["four_eyes_above"] is not None and not _is_number(rule["four_eyes_above"]):
        errors.append("four_eyes_above must be a number or null.")
    return errors


def compensation_params_errors(mapping) -> list[str]:
    """A compensation mapping is {parameter: "params.<path>" | "result.<path>" | {"value": literal}}."""
    if not isinstance(mapping, dict):
        return ["The compensation parameters must be a JSON object."]
    errors = []
    for name, source in mapping.items():
        if isinstance(source, dict):
            if set(source) != {"value"}:
                errors.append(f"{name}: a literal is written {{\"value\": ...}}.")
        elif not isinstance(source, str) or not re.fullmatch(r"(params|result)(\.[^.\s]+)+", source):
            errors.append(f"{name}: read from \"params.<name>\" or \"result.<name>\" of the original run.")
    return errors


class ActionRun(BaseModel):
    """One proposed execution of an action. The idempotency key travels to the backend so a
    retried or reconciled call never repeats the effect."""

    action = models.ForeignKey(ActionDefinition, on_delete=models.PROTECT, related_name="runs")
    subject_type = models.CharField(max_length=80, blank=True)
    subject_id = models.CharField(max_length=64, blank=True)
    params = models.JSONField(default=dict)
    idempotency_key = models.CharField(max_length=100, unique=True)
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.PROPOSED)
    requires_approval = models.BooleanField(default=False)
    approvals_required = models.PositiveSmallIntegerField(
        default=1, help_text="Approvals by different people needed while awaiting approval (2: four eyes)")
    proposed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="proposed_action_runs", help_text="Empty: the assistant proposed it")
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="approved_action_runs", help_text="Whose approval completed it")
    attempts = models.PositiveSmallIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    compensation_of = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="compensation_run",
        help_text="The succeeded run this one undoes; when this run succeeds, that one becomes compensated")

    class Meta:
        indexes = [
            models.Index(fields=["subject_type", "subject_id"], name="actionrun_subject_idx"),
            models.Index(fields=["status", "created_at"], name="actionrun_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action.name} [{self.status}]"

    # The helpers below read ``self.approvals.all()``: prefetch it (``selectors.APPROVALS_PREFETCH``)
    # on list pages and they cost no query.
    @property
    def current_approvals(self) -> list[ActionApproval]:
        """Approvals of the current parameters (an edit voids the earlier ones)."""
        return sorted((a for a in self.approvals.all() if a.voided_at is None), key=lambda a: a.created_at)

    @property
    def approvals_given(self) -> int:
        return len(self.current_approvals)

    @property
    def approvals_missing(self) -> int:
        if self.status != RunStatus.AWAITING_APPROVAL:
            return 0
        return max(0, self.approvals_required - self.approvals_given)

    @property
    def approver_ids(self) -> set:
        """Who has approved the current parameters: they cannot approve again."""
        return {a.approver_id for a in self.current_approvals}

    @property
    def approval_progress(self) -> str:
        """E.g. "1 of 2 approvals"; empty when the run never needed a person."""
        if not self.requires_approval:
            return ""
        return f"{self.approvals_given} of {self.approvals_required} approval{'s' if self.approvals_required != 1 else ''}"

    @property
    def params_hash(self) -> str:
        """Fingerprint of the parameters a page showed; approving with it refuses values changed since."""
        return params_fingerprint(self.params)


def params_fingerprint(params) -> str:
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ActionApproval(BaseModel):
    """One person's approval of a run's parameters as they were then (append-only history).

    An edit of the parameters voids the approvals of the old ones (``voided_at``) rather than
    deleting them, so the history still shows who approved what; only one live approval per
    person and run may exist."""

    run = models.ForeignKey(ActionRun, on_delete=models.CASCADE, related_name="approvals")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="action_approvals")
    params = models.JSONField(default=dict, help_text="The parameters approved")
    edited = models.BooleanField(default=False, help_text="The approver changed the parameters with this approval")
    voided_at = models.DateTimeField(null=True, blank=True, help_text="Set when the parameters were edited afterwards")

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["run", "approver"], condition=models.Q(voided_at__isnull=True),
                                    name="actionapproval_one_live_per_approver"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} approved by {self.approver_id}{' (void)' if self.voided_at else ''}"


class ActionRunEvent(BaseModel):
    """An immutable state transition of a run."""

    run = models.ForeignKey(ActionRun, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20)
    actor_label = models.CharField(max_length=150, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.run_id}: {self.from_status} → {self.to_status}"


@checks.register()
def field_key_check(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """TANDEM_FIELD_KEY must be a Fernet key; without it stored connector secrets use a key derived
    from SECRET_KEY (rotating SECRET_KEY would then make them unreadable). Registered here, not in
    apps.py, so that it travels with the encrypted field it protects."""
    from integrations.connectors import field_key_status

    status, detail = field_key_status()
    if status == "invalid":
        return [checks.Error(f"TANDEM_FIELD_KEY is not a valid Fernet key: {detail}",
                             hint="Generate one: python -c 'from cryptography.fernet import Fernet; "
                                  "print(Fernet.generate_key().decode())'", id="integrations.E001")]
    if status == "derived":
        return [checks.Warning(
            "TANDEM_FIELD_KEY is unset and connector secrets are stored: they are encrypted with a key "
            "derived from SECRET_KEY, so changing SECRET_KEY makes them unreadable.",
            hint="Set TANDEM_FIELD_KEY to a Fernet key and save each stored secret again.",
            id="integrations.W001")]
    return []


# --- Webhooks (integrations/webhooks.py) ----------------------------------------------------------

WEBHOOK_EVENTS = ("conversation.escalated", "action.succeeded", "action.failed", "review.resolved")


def validate_webhook_events(value) -> None:
    if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
        raise ValidationError('Events must be a JSON list such as ["action.succeeded"].')
    unknown = sorted(set(value) - set(WEBHOOK_EVENTS))
    if unknown:
        raise ValidationError(f"Unknown event(s): {', '.join(unknown)}; known: {', '.join(WEBHOOK_EVENTS)}.")


class InboundWebhookConfig(BaseModel):
    """How a connector's backend signs the asynchronous results it posts to
    ``/api/v1/integrations/webhooks/<connector name>/``. The secret comes from ``secret_env``
    or is stored Fernet-encrypted like a connector's; it is never shown back."""

    connector = models.OneToOneField(Connector, on_delete=models.CASCADE, related_name="inbound_webhook")
    secret_env = models.CharField(max_length=100, blank=True, help_text="Environment variable holding the secret")
    secret_encrypted = models.TextField(blank=True, editable=False,
                                        help_text="The stored secret, Fernet-encrypted (TANDEM_FIELD_KEY)")
    tolerance_s = models.PositiveIntegerField(default=300, help_text="Largest accepted clock difference, seconds")
    active = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"inbound webhook of {self.connector_id}"


class WebhookReceipt(BaseModel):
    """One accepted inbound event: replay protection (one row per connector and event id)."""

    connector = models.ForeignKey(Connector, on_delete=models.CASCADE, related_name="webhook_receipts")
    event_id = models.CharField(max_length=200)
    run = models.ForeignKey("ActionRun", null=True, blank=True, on_delete=models.SET_NULL,
                            related_name="webhook_receipts")
    outcome = models.CharField(max_length=30, help_text="settled or already settled")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connector", "event_id"], name="webhookreceipt_once")]

    def __str__(self) -> str:
        return f"{self.connector_id}:{self.event_id} ({self.outcome})"


class WebhookEndpoint(BaseModel):
    """A subscriber to Tandem events; deliveries are signed with its secret (``secret_env`` or
    stored Fernet-encrypted, never shown back)."""

    name = models.CharField(max_length=100, unique=True)
    url = models.URLField(max_length=500)
    secret_env = models.CharField(max_length=100, blank=True, help_text="Environment variable holding the secret")
    secret_encrypted = models.TextField(blank=True, editable=False,
                                        help_text="The stored secret, Fernet-encrypted (TANDEM_FIELD_KEY)")
    events = models.JSONField(default=list, validators=[validate_webhook_events],
                              help_text=f"Events sent, a JSON list of: {', '.join(WEBHOOK_EVENTS)}")
    active = models.BooleanField(default=True)
    timeout_s = models.FloatField(default=5.0, validators=[MinValueValidator(0.1)])

    def __str__(self) -> str:
        return self.name


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(BaseModel):
    """One event sent (or to be sent) to one endpoint, with its attempts: the delivery log."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=60)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        indexes = [
            # The due query: pending deliveries whose next attempt has come.
            models.Index(fields=["next_attempt_at"], condition=models.Q(status="pending"),
                         name="webhookdelivery_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.endpoint_id} [{self.status}]"
