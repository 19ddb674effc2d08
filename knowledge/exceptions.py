"""Errors of the knowledge app."""

from __future__ import annotations


class KnowledgeError(Exception):
    """Base of the knowledge app's errors."""


class IngestionError(KnowledgeError, ValueError):
    """A file cannot be turned into a document; the message says why, for the uploader.

    A ValueError too: callers of ``document_ingest_markdown`` caught that before it existed."""


class UploadRejected(IngestionError):
    """An upload refused before a job is created; ``status_code`` is the HTTP answer to give.

    ``file_name`` names the refused file when there is one; ``refusals`` lists
    ``(file name, reason)`` for every refused file of a batch (empty when the refusal is not
    about files, e.g. no files or bad metadata)."""

    def __init__(self, message: str, *, file_name: str = "", status_code: int = 400,
                 refusals: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.file_name = file_name
        self.status_code = status_code
        self.refusals = list(refusals or [])
