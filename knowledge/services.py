"""Writes of the knowledge app: documents, their versions, and ingestion jobs."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import FileSystemStorage, Storage, default_storage
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import get_valid_filename, slugify

from governance.services import audit_event_record
from knowledge.chunking import ChunkDraft, chunk_markdown, markdown_title
from knowledge.embedding_spaces import chunk_embeddings_create, embedding_text, writable_spaces
from knowledge.embeddings import embed_texts
from knowledge.exceptions import IngestionError, UploadRejected
from knowledge.models import (
    Audience,
    Chunk,
    Collection,
    Document,
    DocumentStatus,
    DocumentVersion,
    IngestionFile,
    IngestionFileStatus,
    IngestionJob,
    IngestionSource,
    IngestionStatus,
)
from knowledge.parsers import detect_kind, parse_document

logger = logging.getLogger(__name__)

INGESTION_BATCH_SIZE = 10
UPLOAD_DIR = "knowledge/uploads"


def collection_ensure(*, name: str, audience: str = Audience.CUSTOMER, description: str = "") -> Collection:
    collection, _ = Collection.objects.get_or_create(name=name, defaults={"audience": audience, "description": description})
    return collection


# --- documents ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PreparedDocument:
    """A document's text split and embedded, ready to replace the stored one."""

    slug: str
    title: str
    body: str
    url: str
    checksum: str
    drafts: list[ChunkDraft]
    texts: list[str]  # what was embedded for each chunk
    vectors_by_space: dict[str, list[list[float]]]  # embedding spec key -> one vector per chunk


METADATA_MAX_KEYS = 20


def metadata_validate(metadata) -> None:
    """Labels are a flat object of short strings, numbers or booleans (searchable by equality)."""
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise UploadRejected("Metadata must be a JSON object of labels, e.g. {\"product\": \"tents\"}.")
    if len(metadata) > METADATA_MAX_KEYS:
        raise UploadRejected(f"Metadata may hold at most {METADATA_MAX_KEYS} labels.")
    for key, value in metadata.items():
        if not isinstance(key, str) or not key.strip() or len(key) > 64:
            raise UploadRejected("Metadata label names must be non-empty text of at most 64 characters.")
        if isinstance(value, str) and len(value) > 200 or not isinstance(value, (str, int, float, bool)):
            raise UploadRejected(f"Metadata label {key!r} must be text (at most 200 characters), a number "
                                 "or true/false.")


def _checksum(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _unchanged(*, collection: Collection, slug: str, checksum: str) -> Document | None:
    return Document.objects.filter(collection=collection, slug=slug, checksum=checksum,
                                   status=DocumentStatus.READY).first()


def _document_prepare(*, collection: Collection, slug: str, body: str, url: str, title: str) -> PreparedDocument:
    """Chunks (sized as the collection says) and embeddings, computed outside any transaction:
    the old chunks keep being served until the new ones replace them in one commit."""
    title = (title or markdown_title(body, slug.replace("-", " ").title()))[:300]
    drafts = chunk_markdown(body, max_chars=collection.chunk_size, overlap_sentences=collection.chunk_overlap)
    if not drafts:
        raise IngestionError(f"{slug}: the document has no text to index")
    texts = [embedding_text(title=title, section=d.section, text=d.text) for d in drafts]
    # One set of vectors per live embedding space (two while re-embedding runs).
    vectors_by_space = {space.spec.key: embed_texts(texts, spec=space.spec) for space in writable_spaces()}
    return PreparedDocument(slug=slug, title=title, body=body, url=url, checksum=_checksum(body), drafts=drafts,
                            texts=texts, vectors_by_space=vectors_by_space)


def _document_store(*, collection: Collection, prepared: PreparedDocument, actor=None, source_name: str = "",
                    source_kind: str = "", metadata: dict | None = None,
                    publish: bool = True) -> tuple[Document, bool]:
    """Replace a document's chunks and append a version, in the caller's transaction.

    ``metadata`` labels are merged into the document's; ``publish`` False stores a new
    document unpublished (an existing one keeps its published state)."""
    document, created = Document.objects.select_for_update().get_or_create(
        collection=collection, slug=prepared.slug,
        defaults={"title": prepared.title, "url": prepared.url, "checksum": prepared.checksum,
                  "body": prepared.body, "status": DocumentStatus.READY, "metadata": dict(metadata or {}),
                  "published": publish},
    )
    if not created:
        _labels_merge(document, metadata)
        if document.checksum == prepared.checksum and document.status == DocumentStatus.READY:
            return document, False  # someone stored the same text while this one was embedding
        # Superseded chunks go in the same transaction as the new ones arrive: a search sees
        # either the old version or the new one, never both and never neither.
        document.chunks.all().delete()
        document.title, document.url, document.checksum = prepared.title, prepared.url, prepared.checksum
        document.body = prepared.body
        document.status = DocumentStatus.READY
        document.version += 1
        document.save()
    chunks = Chunk.objects.bulk_create(
        [
            Chunk(document=document, position=d.position, title=prepared.title, section=d.section[:300], text=d.text)
            for d in prepared.drafts
        ]
    )
    chunk_embeddings_create(chunks=chunks, texts=prepared.texts, vectors_by_space=prepared.vectors_by_space)
    DocumentVersion.objects.create(
        document=document, version=document.version, checksum=prepared.checksum, title=prepared.title,
        body=prepared.body, chunk_count=len(prepared.drafts), source_name=source_name[:255],
        source_kind=source_kind, created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    audit_event_record(actor=actor, action="knowledge.document_ingested", target=document,
                       data={"version": document.version, "chunks": len(prepared.drafts),
                             "checksum": prepared.checksum, "source": source_name})
    return document, True


def document_ingest_markdown(*, collection: Collection, slug: str, body: str, url: str = "", title: str = "",
                             actor=None, metadata: dict | None = None) -> tuple[Document, bool]:
    """Store a document and its chunks; unchanged content (same checksum) is skipped.

    A change bumps the version, keeps the text as a ``DocumentVersion`` and replaces the
    chunks in one commit. Returns (document, changed)."""
    existing = _unchanged(collection=collection, slug=slug, checksum=_checksum(body))
    if existing:
        _labels_merge(existing, metadata)
        return existing, False
    prepared = _document_prepare(collection=collection, slug=slug, body=body, url=url, title=title)
    with transaction.atomic():
        return _document_store(collection=collection, prepared=prepared, actor=actor, metadata=metadata)


def _labels_merge(document: Document, metadata: dict | None) -> None:
    """Give an unchanged document the labels it lacks (no re-chunking, no new version)."""
    if metadata and any(document.metadata.get(k) != v for k, v in metadata.items()):
        document.metadata = {**document.metadata, **metadata}
        document.save(update_fields=["metadata", "updated_at"])


# --- uploads and ingestion jobs -------------------------------------------------------------

def upload_storage() -> Storage:
    """The default storage, or var/media when MEDIA_ROOT is not configured (the embedded default)."""
    if settings.MEDIA_ROOT:
        return default_storage
    return FileSystemStorage(location=Path(settings.BASE_DIR) / "var" / "media")


def upload_max_bytes() -> int:
    return int(getattr(settings, "KNOWLEDGE_MAX_UPLOAD_MB", 50)) * 1024 * 1024


def _slug_for(name: str, taken: set[str]) -> str:
    path = PurePath(name)
    slug = slugify(path.stem)[:180] or "document"
    if slug in taken:
        slug = f"{slug}-{slugify(path.suffix.lstrip('.')) or 'file'}"
    base, n = slug, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug)
    return slug


def _upload_refusal(uploaded) -> UploadRejected | None:
    """Why a file cannot be taken (empty, too large, not a type we read), or None.

    The message is the reason alone: it goes on the file's own row of the job."""
    name = uploaded.name or "upload"
    limit = upload_max_bytes()
    if not uploaded.size:
        return UploadRejected("The file is empty.", file_name=name)
    if uploaded.size > limit:
        return UploadRejected(f"The file is larger than the {limit // (1024 * 1024)} MB limit.", file_name=name,
                              status_code=413)
    uploaded.seek(0)
    head = uploaded.read(4096)
    uploaded.seek(0)
    try:
        detect_kind(name, head)
    except IngestionError as exc:
        return UploadRejected(str(exc), file_name=name)
    return None


def upload_validate(uploaded) -> None:
    """Refuse a file before anything is stored: empty, too large, or not a type we read.

    Raises ``UploadRejected`` whose message is the file's name and the reason."""
    refusal = _upload_refusal(uploaded)
    if refusal is not None:
        raise _uploads_refused([refusal])


def _uploads_refused(refusals: list[UploadRejected]) -> UploadRejected:
    """The error for a batch whose every file was refused: each file's name and reason."""
    reasons = [(r.file_name, str(r)) for r in refusals]
    # 413 (payload too large) only when size is every file's problem; any other refusal is a 400.
    status_code = 413 if all(r.status_code == 413 for r in refusals) else 400
    if len(reasons) == 1:
        name, reason = reasons[0]
        return UploadRejected(f"{name}: {reason}", file_name=name, status_code=status_code, refusals=reasons)
    listed = "; ".join(f"{name}: {reason}" for name, reason in reasons)
    return UploadRejected(f"None of the {len(reasons)} files can be ingested. {listed}", status_code=status_code,
                          refusals=reasons)


def _upload_checksum(uploaded) -> str:
    digest = hashlib.sha256()
    for chunk in uploaded.chunks():  # chunk by chunk: past 2.5 MB the upload is a temporary file
        digest.update(chunk)
    uploaded.seek(0)
    return digest.hexdigest()


def _uploads_screen(uploads: list) -> tuple[list[dict], list[UploadRejected]]:
    """One row per upload, in order, and the refusals.

    A row without a ``status`` is to be stored and ingested; the others are settled here:
    refused (failed, with the reason), the same content as an earlier file (skipped), or the
    same name as an earlier file with other content (failed: which of the two should become
    the document is the uploader's call, and the batch must not make two of one file)."""
    rows: list[dict] = []
    refusals: list[UploadRejected] = []
    first_by_checksum: dict[str, str] = {}
    first_by_name: dict[str, str] = {}
    for uploaded in uploads:
        name = uploaded.name or "upload"
        row = {"name": name, "size": uploaded.size or 0, "upload": uploaded}
        refusal = _upload_refusal(uploaded)
        if refusal is not None:
            refusals.append(refusal)
            row.update(status=IngestionFileStatus.FAILED, error=str(refusal))
            rows.append(row)
            continue
        checksum = _upload_checksum(uploaded)
        # Case-insensitive: "Returns.md" and "returns.md" are one file to the person uploading.
        name_key = PurePath(name).name.casefold()
        if checksum in first_by_checksum:
            row.update(status=IngestionFileStatus.SKIPPED,
                       error=f"Duplicate of {first_by_checksum[checksum]} in this batch (same content): "
                             "ingested once.")
        elif name_key in first_by_name:
            row.update(status=IngestionFileStatus.FAILED,
                       error=f"Another file named {first_by_name[name_key]} comes earlier in this batch with "
                             "different content; only that one is ingested. Upload this one on its own to make "
                             "it the document's next version.")
        else:
            first_by_checksum[checksum] = first_by_name[name_key] = name
        rows.append(row)
    return rows, refusals


def _storage_file_name(name: str) -> str:
    try:
        return get_valid_filename(PurePath(name).name)[:150]
    except SuspiciousFileOperation:  # nothing usable left, e.g. "???"
        return "upload"


def _job_dispatch(job_id) -> None:
    from knowledge.tasks import ingest_job

    ingest_job.delay(str(job_id))


def ingestion_job_create_from_uploads(*, collection: Collection, uploads: list, actor=None,
                                      source: str = IngestionSource.ADMIN, metadata: dict | None = None,
                                      publish: bool = True) -> IngestionJob:
    """Check each uploaded file, stream the good ones to storage and queue a job (after commit).

    One bad file does not cost the rest of the batch. A file that is empty, too large or of a
    type we cannot read is not stored: it is a failed file of the job, with the reason. A file
    with the same content as an earlier one of the batch is skipped as its duplicate; one with
    the same name but other content fails (so one batch never makes two documents of one file).
    Files settled here count as processed from the start.

    ``metadata`` labels every document of the job; ``publish`` False stores new documents
    unpublished and refuses to change published ones (an editor who may not publish).

    Raises ``UploadRejected`` (nothing stored, no job) when no file was given, the metadata is
    invalid, or every file is refused; the message gives each file's name and reason."""
    if not uploads:
        raise UploadRejected("No files were uploaded.")
    metadata_validate(metadata)
    rows, refusals = _uploads_screen(uploads)
    if len(refusals) == len(rows):
        raise _uploads_refused(refusals)
    storage = upload_storage()
    stored: list[str] = []
    job_id = IngestionJob._meta.pk.default()
    try:
        for position, row in enumerate(rows):
            uploaded = row.pop("upload")
            if row.get("status"):
                continue  # refused or a duplicate: never stored
            # Storage.save reads the upload chunk by chunk (it is a temporary file past 2.5 MB).
            row["storage_name"] = storage.save(
                f"{UPLOAD_DIR}/{job_id}/{position:04d}-{_storage_file_name(row['name'])}", uploaded)
            stored.append(row["storage_name"])
        with transaction.atomic(durable=True):
            job = _job_create(job_id=job_id, collection=collection, actor=actor, source=source, files=rows,
                              metadata=metadata, publish=publish)
    except BaseException:
        for name in stored:
            storage.delete(name)
        raise
    return job


def ingestion_job_create_from_paths(*, collection: Collection, paths: Iterable[Path], actor=None,
                                    source: str = IngestionSource.COMMAND, dispatch: bool = False,
                                    metadata: dict | None = None, publish: bool = True) -> IngestionJob:
    """A job over files read in place (the ingest command); nothing is copied.

    Files are checked when they are processed, so one bad file fails alone."""
    files = []
    for path in paths:
        path = Path(path)
        size = path.stat().st_size if path.exists() else 0
        files.append({"name": path.name, "local_path": str(path.resolve()), "size": size})
    with transaction.atomic(durable=True):
        return _job_create(job_id=IngestionJob._meta.pk.default(), collection=collection, actor=actor,
                           source=source, files=files, dispatch=dispatch, metadata=metadata, publish=publish)


def _job_create(*, job_id, collection: Collection, actor, source: str, files: list[dict],
                dispatch: bool = True, metadata: dict | None = None, publish: bool = True) -> IngestionJob:
    """The job and a row per file, in the caller's transaction; the run is queued after commit.

    A file given with a ``status`` (and ``error``) was settled at upload, refused or a
    duplicate: it counts as processed from the start and is never run."""
    metadata_validate(metadata)
    settled = [f["status"] for f in files if f.get("status")]
    job = IngestionJob.objects.create(
        id=job_id, collection=collection, source=source, total_files=len(files),
        processed_files=len(settled), failed_files=settled.count(IngestionFileStatus.FAILED),
        skipped_files=settled.count(IngestionFileStatus.SKIPPED),
        metadata=dict(metadata or {}), publish=publish,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    # Files to ingest take their slugs first, so a refused file never changes a document's slug.
    taken: set[str] = set()
    slugs = {i: _slug_for(f["name"], taken) for i, f in enumerate(files) if not f.get("status")}
    IngestionFile.objects.bulk_create([
        IngestionFile(job=job, position=i, name=f["name"][:255], slug=slugs.get(i) or _slug_for(f["name"], set()),
                      storage_name=f.get("storage_name", ""), local_path=f.get("local_path", ""),
                      size=f.get("size", 0), status=f.get("status") or IngestionFileStatus.QUEUED,
                      error=f.get("error", ""))
        for i, f in enumerate(files)
    ])
    audit_event_record(actor=actor, action="knowledge.ingestion_job_created", target=job,
                       data={"collection": str(collection.pk), "files": len(files), "source": source,
                             "failed_at_upload": job.failed_files, "skipped_at_upload": job.skipped_files})
    if dispatch:
        transaction.on_commit(lambda: _job_dispatch(job.pk))
    return job


def _read_file(file: IngestionFile) -> bytes:
    """The file's bytes for parsing, whole (parsers need them so; the upload limit caps them).

    A file past the limit is refused before reading; one that grew past it since is read to
    one byte over the limit and refused, so memory never holds more than that."""
    limit = upload_max_bytes()
    too_large = f"The file is larger than the {limit // (1024 * 1024)} MB limit."
    if file.local_path:
        path = Path(file.local_path)
        if not path.is_file():
            raise IngestionError("The file does not exist or is not a regular file.")
        if path.stat().st_size > limit:
            raise IngestionError(too_large)
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    elif file.storage_name:
        storage = upload_storage()
        try:
            if storage.size(file.storage_name) > limit:
                raise IngestionError(too_large)
            with storage.open(file.storage_name, "rb") as handle:
                data = handle.read(limit + 1)
        except FileNotFoundError:
            raise IngestionError("The uploaded file is no longer in storage; upload it again.") from None
    else:
        raise IngestionError("The file was never stored; upload it again.")
    if len(data) > limit:
        raise IngestionError(too_large)
    return data


def _url_for(collection: Collection, slug: str) -> str:
    # Customer-visible documents are served by the help centre, where citations link.
    return f"/help/{slug}/" if collection.audience == Audience.CUSTOMER else ""


def _file_finish(*, file: IngestionFile, status: str, error: str = "", document=None, version=None,
                 chunks: int = 0) -> None:
    """Record a file's outcome and the job's progress (in the caller's transaction)."""
    IngestionFile.objects.filter(pk=file.pk).update(status=status, error=error, document=document, version=version,
                                                    chunk_count=chunks, updated_at=timezone.now())
    IngestionJob.objects.filter(pk=file.job_id).update(
        processed_files=F("processed_files") + 1,
        failed_files=F("failed_files") + int(status == IngestionFileStatus.FAILED),
        skipped_files=F("skipped_files") + int(status == IngestionFileStatus.SKIPPED),
        chunk_count=F("chunk_count") + chunks,
        updated_at=timezone.now(),
    )


def _file_process(*, job: IngestionJob, file: IngestionFile, actor) -> None:
    IngestionFile.objects.filter(pk=file.pk).update(status=IngestionFileStatus.RUNNING, updated_at=timezone.now())
    try:
        parsed = parse_document(name=file.name, data=_read_file(file))
        IngestionFile.objects.filter(pk=file.pk).update(kind=parsed.kind)
        existing = _unchanged(collection=job.collection, slug=file.slug, checksum=_checksum(parsed.body))
        if existing:
            with transaction.atomic():
                _labels_merge(existing, job.metadata)
                _file_finish(file=file, status=IngestionFileStatus.SKIPPED, document=existing,
                             version=existing.version)
            return
        if not job.publish and Document.objects.filter(collection=job.collection, slug=file.slug,
                                                        published=True).exists():
            raise IngestionError("A published document of that name exists; only someone who may publish in "
                                 "this collection can change it.")
        prepared = _document_prepare(collection=job.collection, slug=file.slug, body=parsed.body,
                                     title=parsed.title, url=_url_for(job.collection, file.slug))
        # The document, its new version and the file's outcome commit together, so a job that
        # is interrupted and resumed never ingests a file twice.
        with transaction.atomic():
            document, changed = _document_store(collection=job.collection, prepared=prepared, actor=actor,
                                                source_name=file.name, source_kind=parsed.kind,
                                                metadata=job.metadata, publish=job.publish)
            _file_finish(file=file, status=IngestionFileStatus.DONE if changed else IngestionFileStatus.SKIPPED,
                         document=document, version=document.version,
                         chunks=len(prepared.drafts) if changed else 0)
    except SoftTimeLimitExceeded:
        raise
    except IngestionError as exc:
        with transaction.atomic():
            _file_finish(file=file, status=IngestionFileStatus.FAILED, error=str(exc))
    except Exception as exc:  # one broken file must not stop the batch
        logger.exception("ingestion of %s (job %s) failed", file.name, job.pk)
        with transaction.atomic():
            _file_finish(file=file, status=IngestionFileStatus.FAILED,
                         error=f"Unexpected error ({type(exc).__name__}): {exc}")


def _job_lock(job_id) -> bool:
    """A session-level advisory lock: one runner per job; a dead worker's lock goes with its connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [f"knowledge.ingest:{job_id}"])
        return bool(cursor.fetchone()[0])


def _job_unlock(job_id) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [f"knowledge.ingest:{job_id}"])


def ingestion_job_run(*, job_id, batch_size: int = INGESTION_BATCH_SIZE,
                      on_progress: Callable[[IngestionJob], None] | None = None) -> IngestionJob | None:
    """Process the job's files that are not finished yet, ``batch_size`` at a time.

    Idempotent: a finished job is left alone; an interrupted one resumes with the files that
    were not done (a file's outcome commits with its document). ``on_progress`` is called with
    the refreshed job after each file."""
    job = IngestionJob.objects.select_related("collection", "created_by").filter(pk=job_id).first()
    if job is None or job.finished:
        return job
    if not _job_lock(job.pk):
        logger.info("ingestion job %s is already running elsewhere", job.pk)
        return job
    try:
        IngestionJob.objects.filter(pk=job.pk, started_at__isnull=True).update(started_at=timezone.now())
        IngestionJob.objects.filter(pk=job.pk).update(status=IngestionStatus.RUNNING, updated_at=timezone.now())
        actor = job.created_by
        while True:
            batch = list(job.files.filter(status__in=[IngestionFileStatus.QUEUED, IngestionFileStatus.RUNNING])
                         .order_by("position")[:batch_size])
            if not batch:
                break
            for file in batch:
                _file_process(job=job, file=file, actor=actor)
                if on_progress:
                    job.refresh_from_db()
                    on_progress(job)
        with transaction.atomic():
            job = IngestionJob.objects.select_for_update().get(pk=job.pk)
            all_failed = job.total_files > 0 and job.failed_files == job.total_files
            job.status = IngestionStatus.FAILED if all_failed else IngestionStatus.DONE
            job.finished_at = timezone.now()
            job.save(update_fields=["status", "finished_at", "updated_at"])
            audit_event_record(actor=actor, action="knowledge.ingestion_job_finished", target=job,
                               data={"status": job.status, "files": job.total_files, "failed": job.failed_files,
                                     "skipped": job.skipped_files, "chunks": job.chunk_count})
    finally:
        _job_unlock(job.pk)
    return job
