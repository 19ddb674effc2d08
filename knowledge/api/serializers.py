"""JSON shapes of the knowledge API (plain dicts: the API only reads and calls services)."""

from __future__ import annotations

import json
import re

from knowledge.exceptions import UploadRejected
from knowledge.models import Collection, Document, IngestionJob
from knowledge.permissions import access_of
from knowledge.services import metadata_validate


def _iso(value):
    return value.isoformat() if value else None


def collection_as_dict(collection: Collection) -> dict:
    """A collection from ``collections_with_access`` (it carries the caller's access)."""
    return {
        "id": str(collection.pk), "name": collection.name, "audience": collection.audience,
        "description": collection.description, "chunk_size": collection.chunk_size,
        "chunk_overlap": collection.chunk_overlap, "access": access_of(collection),
    }


def document_as_dict(document: Document) -> dict:
    return {
        "id": str(document.pk), "collection": str(document.collection_id), "slug": document.slug,
        "title": document.title, "url": document.url, "status": document.status,
        "published": document.published, "kind": document.kind, "version": document.version, "metadata": document.metadata,
        "updated_at": _iso(document.updated_at),
    }


def job_summary_as_dict(job: IngestionJob) -> dict:
    return {
        "id": str(job.pk), "collection": str(job.collection_id), "status": job.status, "source": job.source,
        "publish": job.publish, "metadata": job.metadata,
        "progress": {"done": job.processed_files, "total": job.total_files},
        "failed": job.failed_files, "skipped": job.skipped_files, "chunks": job.chunk_count,
        "created_at": _iso(job.created_at), "started_at": _iso(job.started_at), "finished_at": _iso(job.finished_at),
    }


def job_as_dict(job: IngestionJob) -> dict:
    """The job with its files (one more query)."""
    files = list(job.files.order_by("position").values(
        "name", "status", "kind", "error", "document_id", "version", "chunk_count", "size"))
    for f in files:
        f["document_id"] = str(f["document_id"]) if f["document_id"] else None
    return {**job_summary_as_dict(job), "files": files}


def metadata_parse(raw) -> dict | None:
    """Labels from a request: a JSON object (or its text, as multipart forms send it).

    Raises ``UploadRejected`` with the reason when it is not JSON or not valid labels."""
    if raw is None or (isinstance(raw, (str, bytes)) and not raw.strip()):
        return None
    value = raw
    if isinstance(raw, (str, bytes)):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UploadRejected(f"Metadata is not valid JSON ({exc.msg}); give an object of labels, e.g. "
                                 '{"product": "tents", "region": "eu"}.') from None
    metadata_validate(value)
    return value or None


LABELS_HELP = ('key=value pairs separated by commas, e.g. product=tents, region=eu. Numbers and true/false match '
               'as such; put text in double quotes to match it as text ("2024") or when it holds a comma.')
_LABEL_PAIR = re.compile(r'\s*([^=,"]+?)\s*=\s*("(?:[^"\\]|\\.)*"|[^,"]*?)\s*(?:,|$)')
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")


def labels_parse(text: str) -> dict:
    """Labels to filter on, from ``key=value, key2=value2`` (see ``LABELS_HELP``).

    Raises ``UploadRejected`` with the reason when the text cannot be read."""
    labels: dict = {}
    text = (text or "").strip()
    pos = 0
    while pos < len(text):
        match = _LABEL_PAIR.match(text, pos)
        if match is None or match.end() == pos:
            raise UploadRejected(f"Cannot read the labels at “{text[pos:pos + 30]}”: write key=value pairs "
                                 "separated by commas, e.g. product=tents, region=eu.")
        key, raw = match.group(1), match.group(2)
        if not raw:
            raise UploadRejected(f"The label {key!r} has no value: write {key}=value.")
        if raw.startswith('"'):
            value = json.loads(raw)
        elif raw in ("true", "false"):
            value = raw == "true"
        elif _NUMBER.fullmatch(raw):
            value = json.loads(raw)
        else:
            value = raw
        labels[key] = value
        pos = match.end()
    metadata_validate(labels)
    return labels
