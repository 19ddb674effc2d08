"""Retention: a policy per kind of data, legal holds that suspend it, and the record of each run.

The kinds of data (messages, AI turns, uploaded files, audit payloads) are registered by the apps
that store them (``governance.retention_registry``); governance references none of their models,
so a hold names its subject by type and id."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from config.models import BaseModel


class RetentionAction(models.TextChoices):
    DELETE = "delete", "Delete"
    ANONYMISE = "anonymise", "Anonymise"


class RetentionPolicy(BaseModel):
    """What happens to one kind of data ``after_days`` days after it became eligible (e.g. after
    its conversation closed). One per kind; run daily by beat (``governance.retention_run_due``)
    while ``enabled``. Changed only through ``governance.retention.retention_policy_set``."""

    data_kind = models.CharField(max_length=40, unique=True, help_text="A registered kind, e.g. messages")
    action = models.CharField(max_length=20, choices=RetentionAction.choices)
    after_days = models.PositiveIntegerField()
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    last_run_at = models.DateTimeField(null=True, blank=True, help_text="Last run that was not a preview")

    class Meta:
        ordering = ["data_kind"]
        constraints = [
            models.CheckConstraint(condition=models.Q(after_days__gte=1), name="retentionpolicy_after_days_min"),
            models.CheckConstraint(condition=models.Q(action__in=RetentionAction.values),
                                   name="retentionpolicy_action_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.data_kind}: {self.get_action_display().lower()} after {self.after_days} days"


class HoldScope(models.TextChoices):
    CONTACT = "contact", "A customer"
    CONVERSATION = "conversation", "A conversation"
    RANGE = "range", "Everything in a date range"


class LegalHold(BaseModel):
    """Data that must not be deleted or anonymised, whatever the policies say: a customer's, a
    conversation's, or everything created in a date range. A customer or conversation hold may be
    narrowed by dates too. Active until released (with a reason); released holds stay as history."""

    name = models.CharField(max_length=120)
    reason = models.TextField(help_text="Why the data must be kept, e.g. the case or request reference")
    subject_type = models.CharField(max_length=20, choices=HoldScope.choices)
    subject_id = models.CharField(max_length=64, blank=True, help_text="The customer's or conversation's id")
    from_date = models.DateField(null=True, blank=True)
    to_date = models.DateField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    released_at = models.DateTimeField(null=True, blank=True)
    released_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+")
    release_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(subject_type=HoldScope.RANGE, subject_id="")
                           & (models.Q(from_date__isnull=False) | models.Q(to_date__isnull=False)))
                | (models.Q(subject_type__in=[HoldScope.CONTACT, HoldScope.CONVERSATION]) & ~models.Q(subject_id="")),
                name="legalhold_scope_valid"),
            models.CheckConstraint(
                condition=models.Q(from_date__isnull=True) | models.Q(to_date__isnull=True)
                | models.Q(from_date__lte=models.F("to_date")),
                name="legalhold_dates_ordered"),
        ]
        indexes = [
            # Every run, preview and erasure reads the active holds.
            models.Index(fields=["subject_type", "subject_id"], name="legalhold_active_idx",
                         condition=models.Q(released_at__isnull=True)),
        ]

    def __str__(self) -> str:
        state = "released" if self.released_at else "active"
        return f"{self.name} ({self.get_subject_type_display().lower()}, {state})"

    @property
    def active(self) -> bool:
        return self.released_at is None


class RetentionRunStatus(models.TextChoices):
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class RetentionRun(BaseModel):
    """One run of a policy (``dry_run``: a preview that changed nothing). ``matched`` rows were old
    enough, ``held_back`` of them are under a legal hold, ``purged`` were deleted or anonymised;
    ``remaining`` were left for the next run (the per-run row limit). ``audit_seq`` is the seq of
    the run's ``retention.purged`` audit event."""

    policy = models.ForeignKey(RetentionPolicy, on_delete=models.PROTECT, related_name="runs")
    data_kind = models.CharField(max_length=40)
    action = models.CharField(max_length=20, choices=RetentionAction.choices)
    cutoff = models.DateTimeField(help_text="Data older than this was eligible")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=RetentionRunStatus.choices, default=RetentionRunStatus.RUNNING)
    dry_run = models.BooleanField(default=False)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+", help_text="Empty: the scheduler")
    matched = models.PositiveIntegerField(default=0)
    purged = models.PositiveIntegerField(default=0)
    held_back = models.PositiveIntegerField(default=0)
    remaining = models.PositiveIntegerField(default=0)
    detail = models.JSONField(default=dict, blank=True, help_text="Which rows (id or seq ranges) and sub-counts")
    audit_seq = models.BigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            # The history list (newest first) and each policy's latest run and preview.
            models.Index(fields=["data_kind", "dry_run", "-started_at"], name="retentionrun_kind_idx"),
            models.Index(fields=["-started_at"], name="retentionrun_started_idx"),
        ]

    def __str__(self) -> str:
        kind = "preview" if self.dry_run else "run"
        return f"{self.data_kind} {kind} {self.started_at:%Y-%m-%d %H:%M} ({self.status})"

    @property
    def counts(self) -> dict[str, int]:
        return {"matched": self.matched, "purged": self.purged, "held_back": self.held_back}
