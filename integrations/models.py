"""Connectors to backends, the action catalogue, and action runs with their history."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from config.models import BaseModel


class AuthKind(models.TextChoices):
    NONE = "none", "No authentication"
    BEARER = "bearer", "Bearer token"


class Connector(BaseModel):
    """An HTTP/JSON backend. Secrets are read from the named environment variable, never stored."""

    name = models.CharField(max_length=100, unique=True)
    base_url = models.CharField(max_length=500, blank=True, help_text="Used when base_url_env is unset")
    base_url_env = models.CharField(max_length=100, blank=True, help_text="Environment variable holding the base URL")
    auth = models.CharField(max_length=20, choices=AuthKind.choices, default=AuthKind.NONE)
    secret_env = models.CharField(max_length=100, blank=True, help_text="Environment variable holding the secret")
    timeout_s = models.FloatField(default=5.0)

    def __str__(self) -> str:
        return self.name


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
    approval_rule = models.JSONField(default=dict, help_text='{"rule": "never" | "always" | "above", "field", "threshold"}')
    examples = models.JSONField(default=list, blank=True, help_text="Customer phrasings, for intent routing")
    ask = models.JSONField(default=dict, blank=True, help_text="Question to ask for each missing parameter")
    result_template = models.TextField(blank=True)
    max_attempts = models.PositiveSmallIntegerField(default=4)
    enabled = models.BooleanField(default=True)

    def __str__(self) -> str:
        return self.title

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


TERMINAL_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.REJECTED, RunStatus.EXPIRED})


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
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="approved_action_runs")
    attempts = models.PositiveSmallIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["subject_type", "subject_id"], name="actionrun_subject_idx"),
            models.Index(fields=["status", "created_at"], name="actionrun_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action.name} [{self.status}]"


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
