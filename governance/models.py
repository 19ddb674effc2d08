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


class EvaluationCategory(models.TextChoices):
    """Why an AI answer was wrong (the reviewer's choice when flagging it)."""

    WRONG_FACTS = "wrong_facts", "Wrong facts"
    OUTDATED = "outdated", "Outdated information"
    MISSING_SOURCE = "missing_source", "Not in the sources / made up"
    INCOMPLETE = "incomplete", "Incomplete"
    WRONG_ACTION = "wrong_action", "Wrong action or intent"
    TONE = "tone", "Tone or wording"
    UNSAFE = "unsafe", "Unsafe or against policy"


class EvaluationCase(BaseModel):
    """A question the assistant answered wrongly, with the answer it should have given.

    Made when a person flags an AI answer; the model and prompt versions that gave the bad
    answer are kept so the next version can be evaluated on the same question. Governance is
    the lowest layer, so the source (e.g. ``convo.message``), the conversation and the curated
    answer written from it are stored as ids, not foreign keys."""

    question = models.TextField(help_text="The customer's message (personal data redacted)")
    expected_answer = models.TextField(help_text="The corrected answer")
    bad_answer = models.TextField(help_text="What the assistant said")
    category = models.CharField(max_length=20, choices=EvaluationCategory.choices)
    source_type = models.CharField(max_length=80)
    source_id = models.CharField(max_length=64)
    conversation_id = models.CharField(max_length=64, blank=True)
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT,
                                      related_name="evaluation_cases")
    prompt_version = models.ForeignKey(PromptVersion, null=True, blank=True, on_delete=models.PROTECT,
                                       related_name="evaluation_cases")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    curated_document_id = models.CharField(max_length=64, blank=True)
    active = models.BooleanField(default=True, help_text="Used when evaluating model and prompt versions")

    class Meta:
        constraints = [
            # One case per flagged answer: flagging the same message twice is refused.
            models.UniqueConstraint(fields=["source_type", "source_id"], name="evaluationcase_source_uniq"),
        ]
        # The admin's and the evaluation run's filter: cases of a category, newest first.
        indexes = [models.Index(fields=["category", "created_at"], name="evaluationcase_category_idx")]

    def __str__(self) -> str:
        question = self.question if len(self.question) <= 60 else f"{self.question[:59]}…"
        return f"{self.get_category_display()}: {question}"


class AuditCheckpoint(models.Model):
    """A signed statement "the audit chain had event ``seq`` with hash ``hash``" (HMAC-SHA256,
    ``governance.audit.checkpoint_signature``). Append-only like the events (a trigger refuses
    UPDATE, DELETE and TRUNCATE); ``audit_verify`` checks that the chain still holds every one, so
    rows deleted after a checkpoint (a truncated tail) or a rewritten chain are detected."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    seq = models.BigIntegerField(unique=True)
    hash = models.CharField(max_length=64)
    signed_at = models.DateTimeField(db_index=True)
    signature = models.CharField(max_length=64)

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"checkpoint #{self.seq} {self.hash[:12]}"
