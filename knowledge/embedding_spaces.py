"""Embedding spaces: which model's vectors searches use, and re-embedding with a switchover.

Every chunk has one vector per live space (``ChunkEmbedding``). The active space serves
searches. Changing the embedding model (``EMBEDDINGS`` / ``EMBEDDINGS_OPENAI_MODEL``) and
running ``manage.py reembed`` (or the admin's "Re-embed" button) builds a second space:

1. a ``building`` space is created; from then on ingestion writes vectors to both spaces;
2. a Celery task (queue ``ingestion``) embeds every chunk that lacks a vector in it, in
   batches, resumable after a crash (it picks up the chunks still missing);
3. the space's partial HNSW index is built (``CREATE INDEX CONCURRENTLY`` outside tests);
4. under an exclusive lock that ingestion's writes share, the last missing chunks are
   embedded and the space becomes ``active`` while the old one becomes ``retired``, in one
   commit. Searches use the old space until that commit and the new one after it.

A retired space keeps its rows and index until ``manage.py reembed --drop-retired`` (so a
process that read the active space a moment before the switch still finds it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from governance.services import audit_event_record
from knowledge.embeddings import EmbeddingSpec, configured_spec, embed_texts
from knowledge.exceptions import KnowledgeError
from knowledge.models import Chunk, ChunkEmbedding, EmbeddingSpace, EmbeddingSpaceStatus

logger = logging.getLogger(__name__)

# Chunks embedded per batch while building a space (one commit each).
REEMBED_BATCH_SIZE = 256
# bench/retrieval_latency.py on 100k chunks, recall@10 against an exact scan at
# hnsw.ef_search 100: ef_construction 64 gave 0.93 (built in 18 s), 200 gave 0.987 (44 s),
# at the same search speed; m 32 / ef_construction 128 gave 0.968 (69 s).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
# Searches read the active space from a per-process cache; a switch made by another process
# is seen within this many seconds (the retired space still answers meanwhile).
ACTIVE_CACHE_S = 5.0
# Ingestion's writes take this lock shared, the switchover exclusively: no chunk can be
# stored between the switch's last check for missing vectors and its commit.
_WRITE_LOCK_KEY = "knowledge.embedding-spaces"

_active_cache: tuple[float, EmbeddingSpace] | None = None
# Called with the new space's EmbeddingSpec after a switchover commits (higher apps keep their
# own vectors, e.g. intent example phrases, in step with the knowledge index).
_activation_listeners: list[Callable[[EmbeddingSpec], None]] = []


def on_space_activated(listener: Callable[[EmbeddingSpec], None]) -> None:
    if listener not in _activation_listeners:
        _activation_listeners.append(listener)


class ReembedError(KnowledgeError):
    """Re-embedding cannot start (or go on): the message says why."""


def embedding_text(*, title: str, section: str, text: str) -> str:
    """What is embedded for a chunk: its document title and section give the passage context."""
    return f"{title}. {section}. {text}"


# --- reading ------------------------------------------------------------------------------

def active_space(*, fresh: bool = False) -> EmbeddingSpace:
    """The space searches use (cached for ACTIVE_CACHE_S seconds in this process)."""
    global _active_cache
    now = time.monotonic()
    if not fresh and _active_cache is not None and now - _active_cache[0] < getattr(
            settings, "KNOWLEDGE_ACTIVE_SPACE_CACHE_S", ACTIVE_CACHE_S):
        return _active_cache[1]
    space = EmbeddingSpace.objects.filter(status=EmbeddingSpaceStatus.ACTIVE).first() or initial_space_ensure()
    _active_cache = (now, space)
    return space


def initial_space_ensure(**kwargs) -> EmbeddingSpace:
    """The active space; on a database that has none at all (a fresh install, or one just
    flushed by a test) an empty one for the configured model, with its index.

    Migrations create the first space from the vectors they move; this covers a flush, and
    runs after every migrate (post_migrate) so no request ever has to."""
    space = EmbeddingSpace.objects.filter(status=EmbeddingSpaceStatus.ACTIVE).first()
    if space is not None:
        return space
    if EmbeddingSpace.objects.exists():
        raise ReembedError("No embedding space is active: run `manage.py reembed` to build one.")
    spec = configured_spec()
    now = timezone.now()
    try:
        with transaction.atomic():
            space = EmbeddingSpace.objects.create(provider=spec.provider, model=spec.model, dimensions=spec.dimensions,
                                                  status=EmbeddingSpaceStatus.ACTIVE, started_at=now,
                                                  activated_at=now)
    except IntegrityError:  # another process made it first
        return EmbeddingSpace.objects.get(status=EmbeddingSpaceStatus.ACTIVE)
    _create_index(space)
    return space


def forget_active_space() -> None:
    global _active_cache
    _active_cache = None


def writable_spaces() -> list[EmbeddingSpace]:
    """The spaces new chunks need vectors in: the active one and one being built."""
    initial_space_ensure()
    return list(EmbeddingSpace.objects.filter(status__in=[EmbeddingSpaceStatus.ACTIVE, EmbeddingSpaceStatus.BUILDING])
                .order_by("status"))


def vector_cast(space: EmbeddingSpace) -> str:
    """The SQL type the space's vectors are compared as (matches its partial index)."""
    return f"vector({int(space.dimensions)})"


# --- writing chunk vectors -----------------------------------------------------------------

def lock_for_chunk_writes() -> None:
    """Shared lock held by a transaction that stores chunks and their vectors."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock_shared(hashtextextended(%s, 0))", [_WRITE_LOCK_KEY])


def chunk_embeddings_create(*, chunks: list[Chunk], texts: list[str],
                            vectors_by_space: dict[str, list[list[float]]]) -> None:
    """Store the chunks' vectors in every writable space, in the caller's transaction.

    ``vectors_by_space`` maps a space key (its spec's key) to vectors already computed; a
    space that started building since is embedded here (rare, and small: one document)."""
    lock_for_chunk_writes()
    rows = []
    for space in writable_spaces():
        vectors = vectors_by_space.get(space.spec.key)
        if vectors is None:
            vectors = embed_texts(texts, spec=space.spec)
        rows += [ChunkEmbedding(space=space, chunk=chunk, embedding=v) for chunk, v in zip(chunks, vectors)]
    ChunkEmbedding.objects.bulk_create(rows, batch_size=500)


# --- re-embedding --------------------------------------------------------------------------

def _dispatch_build(space_id) -> None:
    from knowledge.tasks import reembed_space

    reembed_space.delay(str(space_id))


def reembed_start(*, spec: EmbeddingSpec | None = None, actor=None, dispatch: bool = True) -> EmbeddingSpace:
    """Start building a space for ``spec`` (default: the configured model) beside the active one."""
    spec = spec or configured_spec()
    with transaction.atomic():
        active = EmbeddingSpace.objects.select_for_update().filter(status=EmbeddingSpaceStatus.ACTIVE).first()
        if active is not None and active.spec == spec:
            raise ReembedError(f"The knowledge index already uses {spec}. Change EMBEDDINGS or "
                               "EMBEDDINGS_OPENAI_MODEL first.")
        building = EmbeddingSpace.objects.filter(status=EmbeddingSpaceStatus.BUILDING).first()
        if building is not None:
            raise ReembedError(f"Re-embedding with {building.spec} is already under way "
                               f"({building.embedded_chunks}/{building.total_chunks} chunks).")
        try:
            with transaction.atomic():
                space = EmbeddingSpace.objects.create(
                    provider=spec.provider, model=spec.model, dimensions=spec.dimensions,
                    status=EmbeddingSpaceStatus.BUILDING, total_chunks=Chunk.objects.count(),
                    created_by=actor if getattr(actor, "is_authenticated", False) else None,
                )
        except IntegrityError:
            raise ReembedError("Re-embedding was started by someone else a moment ago.") from None
        audit_event_record(actor=actor, action="knowledge.reembed_started", target=space,
                           data={"model": spec.key, "from": active.spec.key if active else None,
                                 "chunks": space.total_chunks})
        if dispatch:
            transaction.on_commit(lambda: _dispatch_build(space.pk))
    return space


def _missing_chunks(space: EmbeddingSpace, limit: int) -> list[Chunk]:
    return list(
        Chunk.objects.exclude(pk__in=ChunkEmbedding.objects.filter(space=space).values("chunk_id"))
        .select_related("document").only("id", "title", "section", "text", "document__title")
        .order_by("id")[:limit]
    )


def _embed_batch(space: EmbeddingSpace, chunks: list[Chunk]) -> int:
    texts = [embedding_text(title=c.title or c.document.title, section=c.section, text=c.text) for c in chunks]
    vectors = embed_texts(texts, spec=space.spec)
    try:
        with transaction.atomic():
            # Chunks replaced by a newer document version meanwhile are gone: skip them.
            alive = set(Chunk.objects.filter(pk__in=[c.pk for c in chunks]).select_for_update()
                        .values_list("pk", flat=True))
            ChunkEmbedding.objects.bulk_create(
                [ChunkEmbedding(space=space, chunk_id=c.pk, embedding=v) for c, v in zip(chunks, vectors)
                 if c.pk in alive],
                ignore_conflicts=True,
            )
    except IntegrityError:
        return 0  # a chunk vanished between the check and the insert: the next pass retries
    return len(chunks)


def _space_progress(space: EmbeddingSpace) -> None:
    embedded = ChunkEmbedding.objects.filter(space=space).count()
    total = Chunk.objects.count()
    EmbeddingSpace.objects.filter(pk=space.pk).update(embedded_chunks=embedded, total_chunks=total,
                                                      updated_at=timezone.now())
    space.embedded_chunks, space.total_chunks = embedded, total


def _create_index(space: EmbeddingSpace) -> None:
    name = _index_name(space)
    # Outside a transaction (the worker) the index is built without blocking writes; inside
    # one (tests, or a caller's atomic block) deferred FK checks must run first.
    in_transaction = connection.in_atomic_block
    concurrently = "" if in_transaction else "CONCURRENTLY"
    with connection.cursor() as cursor:
        if in_transaction:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        # Only a fixed name, integers and the space's own UUID are formatted in.
        cursor.execute(
            f"CREATE INDEX {concurrently} IF NOT EXISTS {name} ON {ChunkEmbedding._meta.db_table} USING hnsw "
            f"((embedding::{vector_cast(space)}) vector_cosine_ops) "
            f"WITH (m = {HNSW_M:d}, ef_construction = {HNSW_EF_CONSTRUCTION:d}) WHERE space_id = '{space.pk}'"
        )
        if in_transaction:
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")
    EmbeddingSpace.objects.filter(pk=space.pk).update(index_name=name, updated_at=timezone.now())
    space.index_name = name


def _switch(space: EmbeddingSpace, actor) -> EmbeddingSpace:
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [_WRITE_LOCK_KEY])
        space = EmbeddingSpace.objects.select_for_update().get(pk=space.pk)
        if space.status != EmbeddingSpaceStatus.BUILDING:
            return space
        # Chunks stored after the last batch but before this lock are embedded now.
        while batch := _missing_chunks(space, REEMBED_BATCH_SIZE):
            _embed_batch(space, batch)
        old = EmbeddingSpace.objects.select_for_update().filter(status=EmbeddingSpaceStatus.ACTIVE).first()
        now = timezone.now()
        if old is not None:
            old.status, old.retired_at = EmbeddingSpaceStatus.RETIRED, now
            old.save(update_fields=["status", "retired_at", "updated_at"])
        space.status, space.activated_at = EmbeddingSpaceStatus.ACTIVE, now
        space.embedded_chunks = space.total_chunks = Chunk.objects.count()
        space.save(update_fields=["status", "activated_at", "embedded_chunks", "total_chunks", "updated_at"])
        audit_event_record(actor=actor, action="knowledge.embedding_space_activated", target=space,
                           data={"model": space.spec.key, "retired": old.spec.key if old else None,
                                 "chunks": space.total_chunks})
        spec = space.spec
        for listener in _activation_listeners:
            transaction.on_commit(lambda listener=listener: listener(spec), robust=True)
    forget_active_space()
    return space


def _build_lock(space_id) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [f"knowledge.reembed:{space_id}"])
        return bool(cursor.fetchone()[0])


def _build_unlock(space_id) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [f"knowledge.reembed:{space_id}"])


def reembed_run(*, space_id, batch_size: int = REEMBED_BATCH_SIZE,
                on_progress: Callable[[EmbeddingSpace], None] | None = None,
                max_batches: int | None = None) -> EmbeddingSpace | None:
    """Fill the building space, index it and switch over. Idempotent and resumable.

    ``max_batches`` stops early (the space stays ``building``; run again to go on)."""
    space = EmbeddingSpace.objects.filter(pk=space_id).first()
    if space is None or space.status != EmbeddingSpaceStatus.BUILDING:
        return space
    if not _build_lock(space.pk):
        logger.info("embedding space %s is already being built elsewhere", space.pk)
        return space
    try:
        EmbeddingSpace.objects.filter(pk=space.pk, started_at__isnull=True).update(started_at=timezone.now())
        batches = 0
        while batch := _missing_chunks(space, batch_size):
            if max_batches is not None and batches >= max_batches:
                _space_progress(space)
                return space
            _embed_batch(space, batch)
            batches += 1
            _space_progress(space)
            if on_progress:
                on_progress(space)
        _create_index(space)
        space = _switch(space, space.created_by)
        if on_progress:
            on_progress(space)
        return space
    except Exception as exc:
        logger.exception("re-embedding into space %s failed", space.pk)
        EmbeddingSpace.objects.filter(pk=space.pk, status=EmbeddingSpaceStatus.BUILDING).update(
            error=f"{type(exc).__name__}: {exc}"[:2000], updated_at=timezone.now())
        raise
    finally:
        _build_unlock(space.pk)


def reembed_cancel(*, space: EmbeddingSpace, actor=None) -> None:
    """Give up a build: the space is marked failed and its vectors and index dropped."""
    with transaction.atomic():
        updated = EmbeddingSpace.objects.filter(pk=space.pk, status=EmbeddingSpaceStatus.BUILDING).update(
            status=EmbeddingSpaceStatus.FAILED, error="Cancelled.", updated_at=timezone.now())
        if not updated:
            raise ReembedError("Only a space being built can be cancelled.")
        audit_event_record(actor=actor, action="knowledge.reembed_cancelled", target=space,
                           data={"model": space.spec.key})
    _space_drop_data(space)


def _index_name(space: EmbeddingSpace) -> str:
    return f"knowledge_ce_hnsw_{space.pk.hex[-16:]}"


def _space_drop_data(space: EmbeddingSpace) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {_index_name(space)}")
    ChunkEmbedding.objects.filter(space=space).delete()


def spaces_drop_retired(*, actor=None) -> list[EmbeddingSpace]:
    """Delete the vectors and indexes of retired and failed spaces (the rows stay as history)."""
    dropped = []
    for space in EmbeddingSpace.objects.filter(status__in=[EmbeddingSpaceStatus.RETIRED, EmbeddingSpaceStatus.FAILED]):
        if not ChunkEmbedding.objects.filter(space=space).exists() and not space.index_name:
            continue
        _space_drop_data(space)
        EmbeddingSpace.objects.filter(pk=space.pk).update(index_name="", updated_at=timezone.now())
        audit_event_record(actor=actor, action="knowledge.embedding_space_dropped", target=space,
                           data={"model": space.spec.key})
        dropped.append(space)
    return dropped
