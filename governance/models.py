"""Model and prompt versions, and the append-only, hash-chained audit log."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from config.models import BaseModel, uuid7


class VersionStatus(models.TextChoices):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    ACTIVE = "active"
    SHADOW = "shadow"
    RETIRED = "retired"


class Provider(models.TextChoices):
    OFFLINE = "offline", "Offline (extractive, no network)"
    OPENAI = "openai", "OpenAI-compatible endpoint"


class ModelVersion(BaseModel):
    """One model configuration that may answer customers: provider, endpoint and model name."""

    name = models.CharField(max_length=120)
    provider = models.CharField(max_length=20, choices=Provider.choices)
    model_name = models.CharField(max_length=200)
    endpoint = models.CharField(max_length=500, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=VersionStatus.choices, default=VersionStatus.DRAFT)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "model_name", "endpoint"], name="modelversion_provider_model_endpoint_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.provider}:{self.model_name})"


class PromptVersion(BaseModel):
    """A versioned system prompt template; the turn records which version it used."""

    name = models.CharField(max_length=120)
    version = models.PositiveIntegerField()
    template = models.TextField()
    status = models.CharField(max_length=20, choices=VersionStatus.choices, default=VersionStatus.DRAFT)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "version"], name="promptversion_name_version_uniq")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class AuditEvent(models.Model):
    """One significant act. Append-only (a database trigger refuses UPDATE and DELETE);
    each row's hash covers its content and the previous row's hash."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    seq = models.BigIntegerField(unique=True)
    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_id = models.CharField(max_length=64, blank=True)
    actor_label = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=80, db_index=True)
    target_type = models.CharField(max_length=80, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]
        indexes = [models.Index(fields=["target_type", "target_id"], name="auditevent_target_idx")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.target_type}:{self.target_id}"
