"""Publishing: making documents live (served to searches and the assistant) or taking them down.

Every change is recorded as an audit event in the same transaction. Callers check first that
the actor may publish in the document's collection (``knowledge.permissions``), as they do for
every service; these functions only write."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from governance.services import audit_event_record
from knowledge.models import Collection, Document

REASON_MAX_CHARS = 500


def _set_published(*, actor, document_id, published: bool, reason: str) -> tuple[Document, bool]:
    """In the caller's transaction: lock the row, change it if needed, record the change."""
    document = Document.objects.select_for_update(of=("self",)).select_related("collection").get(pk=document_id)
    if document.published == published:
        return document, False
    document.published = published
    document.save(update_fields=["published", "updated_at"])
    audit_event_record(
        actor=actor, action="knowledge.document_published" if published else "knowledge.document_unpublished",
        target=document,
        data={"collection": str(document.collection_id), "slug": document.slug, "version": document.version,
              "reason": (reason or "").strip()[:REASON_MAX_CHARS]},
    )
    return document, True


def document_publish(*, actor, document: Document, reason: str = "") -> tuple[Document, bool]:
    """Make the document live; returns (document, changed). Publishing a live one changes nothing."""
    with transaction.atomic(durable=True):
        return _set_published(actor=actor, document_id=document.pk, published=True, reason=reason)


def document_unpublish(*, actor, document: Document, reason: str = "") -> tuple[Document, bool]:
    """Stop serving the document (it is kept, with its versions); returns (document, changed)."""
    with transaction.atomic(durable=True):
        return _set_published(actor=actor, document_id=document.pk, published=False, reason=reason)


def documents_set_published(*, actor, documents: Iterable[Document], published: bool, reason: str = "") -> int:
    """Publish or unpublish several documents in one transaction (all or nothing); returns how
    many changed. Rows are locked in primary-key order, so two bulk changes cannot deadlock."""
    ids = sorted({d.pk for d in documents})
    changed = 0
    with transaction.atomic(durable=True):
        for document_id in ids:
            _, did_change = _set_published(actor=actor, document_id=document_id, published=published, reason=reason)
            changed += int(did_change)
    return changed


def collection_audience_change(*, actor, collection: Collection, audience: str, previous: str) -> None:
    """Record that a collection's audience changes from ``previous`` (the caller saves the row
    in the same transaction). Turning internal documents customer-visible is a publishing act:
    only someone who may publish in the collection may do it, and it is audited."""
    from django.core.exceptions import PermissionDenied

    from knowledge.permissions import Action, can

    if not can(actor, Action.PUBLISH, collection):
        raise PermissionDenied("Only someone who may publish in the collection can change its audience.")
    audit_event_record(actor=actor, action="knowledge.collection_audience_changed", target=collection,
                       data={"from": previous, "to": audience})
