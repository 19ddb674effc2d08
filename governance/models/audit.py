"""The append-only, hash-chained audit log and its signed checkpoints."""

from __future__ import annotations

from django.db import models
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from config.models import uuid7


class AuditEvent(models.Model):
    """One significant act. Append-only: a database trigger refuses DELETE and TRUNCATE, and every
    UPDATE but one — a retention purge replacing ``data`` with a purge marker (migration 0007).
    Each row's hash covers its content (the payload by its SHA-256) and the previous row's hash."""

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
        indexes = [
            models.Index(fields=["target_type", "target_id"], name="auditevent_target_idx"),
            # A version's technical documentation counts the AI turns recorded with it.
            models.Index(KeyTransform("model_version", "data"), condition=models.Q(action="ai.turn"),
                         name="auditevent_turn_model_idx"),
            models.Index(KeyTransform("prompt_version", "data"), condition=models.Q(action="ai.turn"),
                         name="auditevent_turn_prompt_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.target_type}:{self.target_id}"


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
