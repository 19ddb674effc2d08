"""Retention of uploaded files: the ``uploaded_files`` kind (``governance.retention_registry``).

Files uploaded for ingestion are kept in storage after their job finished (``IngestionFile.
storage_name``). A policy deletes those bytes some days after the job finished; the documents
made from them stay (they are the knowledge). The row is kept as the job's history and marked:
its ``storage_name`` becomes ``purged:<date>`` (so a re-read says "no longer in storage").
Files the ingest command read in place (``local_path``) are not uploads and are never touched.
Only a date-range hold applies: customer and conversation holds do not cover knowledge uploads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

from django.db.models import Q, QuerySet
from django.utils import timezone

from governance.models import RetentionAction
from governance.retention_registry import (
    RANGE,
    DataKindHandler,
    Hold,
    PurgeCounts,
    PurgeMarker,
    Subject,
    data_kind_register,
)
from knowledge.models import IngestionFile, IngestionStatus

PURGED_PREFIX = "purged:"


def _eligible(cutoff: datetime) -> QuerySet:
    finished = Q(job__status__in=[IngestionStatus.DONE, IngestionStatus.FAILED])
    old_enough = Q(job__finished_at__lt=cutoff) | Q(job__finished_at__isnull=True, created_at__lt=cutoff)
    return (IngestionFile.objects.filter(finished & old_enough).exclude(storage_name="")
            .exclude(storage_name__startswith=PURGED_PREFIX))


def _held_q(holds: Sequence[Hold]) -> Q | None:
    ranges = [h for h in holds if h.subject_type == RANGE]
    if not ranges:
        return None
    query = Q(pk__in=[])
    for hold in ranges:
        query |= hold.dates_q("created_at")
    return query


def uploaded_files_count(*, cutoff: datetime, holds: Sequence[Hold], action: str,
                         subject: Subject | None = None) -> PurgeCounts:
    query = _eligible(cutoff)
    held = _held_q(holds)
    return PurgeCounts(matched=query.count(), held_back=query.filter(held).count() if held is not None else 0)


def uploaded_files_purge(*, cutoff: datetime, holds: Sequence[Hold], action: str, batch_size: int, limit: int,
                         marker: PurgeMarker, subject: Subject | None = None) -> PurgeCounts:
    """Delete the stored bytes, then mark the rows. The bytes go first: if the transaction then
    rolls back, the rows still name the (now missing) files and the next run marks them, so no
    file is ever left behind a row that says it is gone."""
    counts = uploaded_files_count(cutoff=cutoff, holds=holds, action=action)
    query = _eligible(cutoff)
    held = _held_q(holds)
    if held is not None:
        query = query.exclude(pk__in=query.filter(held).values("pk"))
    from knowledge.services import upload_storage  # at call time: ready() registers this module early

    storage = upload_storage()
    mark = f"{PURGED_PREFIX}{marker.at:%Y-%m-%d}"
    ids: list = []
    freed = 0
    while len(ids) < limit:
        rows = list(query.order_by("pk").values_list("pk", "storage_name", "size")[:min(batch_size, limit - len(ids))])
        if not rows:
            break
        for _, name, size in rows:
            storage.delete(name)  # a file already missing is fine (FileSystemStorage ignores it)
            freed += size
        IngestionFile.objects.filter(pk__in=[pk for pk, _, _ in rows]).update(storage_name=mark,
                                                                              updated_at=timezone.now())
        ids += [pk for pk, _, _ in rows]
    counts.purged = len(ids)
    counts.remaining = max(0, counts.matched - counts.held_back - counts.purged)
    if ids:
        counts.refs = {"first": str(min(ids)), "last": str(max(ids))}
        counts.detail = {"deleted": len(ids), "bytes": freed}
    return counts


UPLOADED_FILES = DataKindHandler(
    name="uploaded_files",
    label="Uploaded files",
    actions=(RetentionAction.DELETE,),
    count=uploaded_files_count,
    purge=uploaded_files_purge,
    description="Files uploaded for ingestion into the knowledge base, counted from when their job finished. "
                "The documents made from them stay.",
    action_notes={RetentionAction.DELETE: "The stored file is deleted; the upload's row stays in the job's "
                                          "history, marked as purged. Only date-range holds apply."},
    position=30,
)


def register() -> None:
    """Called from ``KnowledgeConfig.ready``."""
    data_kind_register(UPLOADED_FILES)
