"""Writes of the knowledge app."""

from __future__ import annotations

import hashlib

from django.db import transaction

from governance.services import audit_event_record
from knowledge.chunking import chunk_markdown, markdown_title
from knowledge.embeddings import embed_texts
from knowledge.models import Audience, Chunk, Collection, Document, DocumentStatus


def collection_ensure(*, name: str, audience: str = Audience.CUSTOMER, description: str = "") -> Collection:
    collection, _ = Collection.objects.get_or_create(name=name, defaults={"audience": audience, "description": description})
    return collection


def document_ingest_markdown(*, collection: Collection, slug: str, body: str, url: str = "", title: str = "",
                             actor=None) -> tuple[Document, bool]:
    """Store a document and its chunks; unchanged content (same checksum) is skipped.

    Embeddings are computed before the transaction opens so the old chunks keep being
    served until the new ones replace them in one commit. Returns (document, changed)."""
    checksum = hashlib.sha256(body.encode("utf-8")).hexdigest()
    existing = Document.objects.filter(collection=collection, slug=slug).first()
    if existing and existing.checksum == checksum and existing.status == DocumentStatus.READY:
        return existing, False
    title = title or markdown_title(body, slug.replace("-", " ").title())
    drafts = chunk_markdown(body)
    if not drafts:
        raise ValueError(f"{slug}: the document has no text to index")
    vectors = embed_texts([f"{title}. {d.section}. {d.text}" for d in drafts])
    with transaction.atomic():
        document, created = Document.objects.select_for_update().get_or_create(
            collection=collection, slug=slug,
            defaults={"title": title, "url": url, "checksum": checksum, "body": body, "status": DocumentStatus.READY},
        )
        if not created:
            document.chunks.all().delete()
            document.title, document.url, document.checksum, document.body = title, url, checksum, body
            document.status = DocumentStatus.READY
            document.version += 1
            document.save()
        Chunk.objects.bulk_create(
            [
                Chunk(document=document, position=d.position, section=d.section, text=d.text, embedding=v)
                for d, v in zip(drafts, vectors)
            ]
        )
        audit_event_record(actor=actor, action="knowledge.document_ingested", target=document,
                           data={"version": document.version, "chunks": len(drafts), "checksum": checksum})
    return document, True
