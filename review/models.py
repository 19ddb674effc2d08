"""Review items (what a human must look at), their append-only history and teams."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from config.models import BaseModel


class Team(BaseModel):
    """A group of agents who share a queue.

    Membership is a django-guardian object permission on the team: ``work_team`` for the
    agents who take its items, ``supervise_team`` for the supervisors who watch its SLA."""

    name = models.CharField(max_length=100, unique=True)
    sla_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="Minutes to pick up an escalation; empty uses the site default")

    class Meta:
        permissions = [
            ("work_team", "Work this team's queue"),
            ("supervise_team", "Supervise this team's queue"),
        ]

    def __str__(self) -> str:
        return self.name


class ItemKind(models.TextChoices):
    ESCALATION = "escalation", "Escalation"
    ACTION_APPROVAL = "action_approval", "Action approval"
    FLAGGED_ANSWER = "flagged_answer", "Flagged AI answer"
    SHADOW_DISAGREEMENT = "shadow_disagreement", "Shadow disagreement"


class ItemStatus(models.TextChoices):
    OPEN = "open", "Open"
    CLAIMED = "claimed", "Claimed"
    RESOLVED = "resolved", "Resolved"
    CANCELLED = "cancelled", "Cancelled"


class EscalationReason(models.TextChoices):
    CUSTOMER_REQUEST = "customer_request", "Customer asked for a person"
    MISSING_KNOWLEDGE = "missing_knowledge", "Missing knowledge"
    UNSUPPORTED_REQUEST = "unsupported_request", "Unsupported request"
    POLICY_RESTRICTION = "policy_restriction", "Policy requires approval"
    ACTION_FAILURE = "action_failure", "Action failed"
    LOW_CONFIDENCE = "low_confidence", "Low confidence"
    SAFETY_FLAG = "safety_flag", "Safety flag"


class ReviewItem(BaseModel):
    """Something a person must look at. The subject is named by type and id only: the review
    app knows nothing of conversations or actions."""

    kind = models.CharField(max_length=30, choices=ItemKind.choices)
    subject_type = models.CharField(max_length=80)
    subject_id = models.CharField(max_length=64)
    title = models.CharField(max_length=200)
    summary = models.TextField(blank=True)
    reason = models.CharField(max_length=30, choices=EscalationReason.choices, blank=True)
    priority = models.PositiveSmallIntegerField(default=2, help_text="1 is most urgent")
    status = models.CharField(max_length=20, choices=ItemStatus.choices, default=ItemStatus.OPEN)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="items")
    sla_due_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="claimed_reviews"
    )
    claim_expires_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    sla_breached_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=40, blank=True)
    needed_human = models.BooleanField(
        null=True, blank=True, help_text="For escalations: did this need a person? Asked when it is closed")
    version = models.PositiveIntegerField(default=1, help_text="Bumped on every change; stale pages are refused")
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            # The queue: a team's live items, most urgent and oldest first, read from the index
            # alone (the list needs no sort; claim-next filters status on the included column).
            models.Index(fields=["team", "priority", "created_at"], name="reviewitem_live_queue_idx",
                         condition=models.Q(status__in=["open", "claimed"]),
                         include=["status", "claimed_by", "sla_due_at"]),
            models.Index(fields=["subject_type", "subject_id"], name="reviewitem_subject_idx"),
            # The SLA sweep: live items with a deadline not yet marked breached.
            models.Index(fields=["sla_due_at"], name="reviewitem_sla_idx",
                         condition=models.Q(status__in=["open", "claimed"], sla_breached_at__isnull=True)),
            # The claim-expiry sweep.
            models.Index(fields=["claim_expires_at"], name="reviewitem_claim_exp_idx",
                         condition=models.Q(status="claimed")),
        ]
        constraints = [
            # One open item of a kind per subject: re-escalating adds to it instead of duplicating.
            models.UniqueConstraint(
                fields=["kind", "subject_type", "subject_id"],
                condition=models.Q(status__in=["open", "claimed"]),
                name="reviewitem_one_open_per_subject",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.title}"


class ReviewEvent(BaseModel):
    """An immutable entry in an item's history."""

    item = models.ForeignKey(ReviewItem, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=40)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.item_id} {self.kind}"
