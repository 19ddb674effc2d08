"""The one base model every Tandem model inherits."""

from __future__ import annotations

import os
import time
import uuid

from django.db import models


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): index-friendly and sortable by creation."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


class BaseModel(models.Model):
    """Time-ordered UUID primary key plus creation and update timestamps."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class OutboxMessage(BaseModel):
    """A Celery task recorded in the transaction that wants it (the transactional outbox).

    Written by ``config.outbox.outbox_enqueue`` in the caller's transaction, so the task exists
    if and only if that transaction commits; sent after commit (``dispatched_at``, ``sends``);
    marked ``done_at`` when the task succeeds (a Celery signal, ``config/celery.py``). Until then
    the relay (``config.outbox_relay``) sends it again at ``resend_at``: soon when it was never
    dispatched, after a lease that doubles with every send when it was (a killed worker); after
    ``OUTBOX_MAX_SENDS`` sends it gives up and says so (``gave_up_at``, ``last_error``)."""

    task_name = models.CharField(max_length=200)
    args = models.JSONField(default=list, blank=True)
    resend_at = models.DateTimeField(help_text="When the relay sends it again unless it is done")
    dispatched_at = models.DateTimeField(null=True, blank=True, help_text="Last send")
    done_at = models.DateTimeField(null=True, blank=True)
    gave_up_at = models.DateTimeField(null=True, blank=True)
    sends = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        indexes = [
            # The relay's only query: live messages that are due, oldest first.
            models.Index(fields=["resend_at"], name="outbox_due_idx",
                         condition=models.Q(done_at__isnull=True, gave_up_at__isnull=True)),
        ]

    def __str__(self) -> str:
        state = "done" if self.done_at else "gave up" if self.gave_up_at else \
            "dispatched" if self.dispatched_at else "pending"
        return f"{self.task_name}{self.args} ({state}, {self.sends} send{'s' if self.sends != 1 else ''})"
