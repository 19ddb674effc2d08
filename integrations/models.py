"""Connectors to backends, the action catalogue, and action runs with their history."""

from __future__ import annotations

import hashlib
import json

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
    approval_rule = models.JSONField(
        default=dict,
        help_text='{"rule": "never" | "always" | "above", "field", "threshold", "four_eyes_above"}; '
                  'four_eyes_above (default: the ACTION_FOUR_EYES_ABOVE setting, null for never) is the value '
                  'of the field above which two different people must approve')
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
