"""Curated answers: an agent answers a customer question once, and from then on the assistant
answers that question (or a paraphrase of it) with the agent's words, citing them.

A curated answer is a ``Document`` of kind ``curated`` whose title is the question and whose
body is ``# <question>`` followed by the answer. It is stored by the same services as any
file (``_document_prepare`` + ``_document_store``), so it is versioned, embedded in every
live embedding space, audited and skipped when unchanged. Retrieval puts it first when it is
close enough to the query (``knowledge.selectors.CURATED_MIN_SIMILARITY``).

Who may do what follows the collection (``knowledge.permissions``): writing needs edit;
without publish the answer is stored unpublished and waits for a publisher (admin action or
``POST /api/v1/knowledge/documents/<id>/publish``), and a live answer can only be changed by
someone who may publish, as for uploaded files.

Where an answer came from is kept in its labels (``Document.metadata``): ``conversation``
(the conversation id, as text: knowledge knows nothing of conversations) and ``source``
(``review:<review item id>``) when it was written from a review item.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Case, Exists, IntegerField, OuterRef, QuerySet, Value, When
from django.utils.text import slugify

from governance.services import audit_event_record
from knowledge.exceptions import IngestionError, KnowledgeError
from knowledge.models import Collection, Document, DocumentKind
from knowledge.permissions import Action, actions_on, collections_for, collections_with_access, is_knowledge_admin
from knowledge.services import _checksum, _document_prepare, _document_store, _url_for

# Where the back office offers to save curated answers first (the demo creates it).
DEFAULT_COLLECTION = "Curated answers"
QUESTION_CHARS = (5, 300)
ANSWER_CHARS = (10, 4000)
SLUG_PREFIX = "curated"


class CuratedAnswerInvalid(KnowledgeError, ValueError):
    """The question or answer cannot be stored; ``errors`` maps each field to its reason."""

    def __init__(self, errors: dict[str, str]):
        super().__init__(" ".join(errors.values()))
        self.errors = dict(errors)


def curated_answer_clean(*, question: str, answer: str) -> tuple[str, str]:
    """The question on one line and the answer trimmed, or ``CuratedAnswerInvalid``.

    The question becomes the document's title and first heading, so it must be one line."""
    question = " ".join((question or "").split())
    answer = "\n".join(line.rstrip() for line in (answer or "").replace("\r\n", "\n").split("\n")).strip()
    errors = {}
    for name, value, (low, high) in (("question", question, QUESTION_CHARS), ("answer", answer, ANSWER_CHARS)):
        if not value:
            errors[name] = f"Write the {name}."
        elif len(value) < low:
            errors[name] = f"The {name} is too short: at least {low} characters."
        elif len(value) > high:
            errors[name] = f"The {name} is too long: at most {high:,} characters (it has {len(value):,})."
    if errors:
        raise CuratedAnswerInvalid(errors)
    return question, answer


def curated_answer_body(*, question: str, answer: str) -> str:
    return f"# {question}\n\n{answer}"


def curated_answer_text(body: str) -> str:
    """The answer part of a curated answer's body (everything after the question heading)."""
    if body.startswith("# "):
        _, _, rest = body.partition("\n\n")
        return rest.strip()
    return body.strip()


def _new_slug(question: str) -> str:
    """A slug no document of the collection has. The random tail keeps two answers to similar
    questions from ever being stored as versions of one document (``_document_store`` finds
    documents by slug), and citations link to ``/help/<slug>/``, shared by all collections."""
    stem = slugify(question)[:80].strip("-") or "answer"
    while True:
        slug = f"{SLUG_PREFIX}-{stem}-{uuid.uuid4().hex[:6]}"
        if not Document.objects.filter(slug=slug).exists():
            return slug


@dataclass
class CuratedDraft:
    """A curated answer checked and embedded, ready to be stored in a transaction."""

    collection: Collection
    question: str
    actor: object
    may_publish: bool
    live_refusal: str
    document: Document | None = None
    conversation_id: str = ""
    prepared: object = None  # from _document_prepare; None when nothing is to be stored
    unchanged: Document | None = None  # the answer as it already is: nothing to store


def curated_answer_prepare(*, collection: Collection, question: str, answer: str, actor,
                           document: Document | None = None, conversation_id: str = "") -> CuratedDraft:
    """Check and embed a curated answer without writing anything (embedding takes a while, so
    it stays outside any transaction). ``curated_answer_store`` then stores it.

    Raises ``CuratedAnswerInvalid`` (with per-field errors) for a question outside
    ``QUESTION_CHARS`` or an answer outside ``ANSWER_CHARS``, and ``PermissionDenied`` when
    ``actor`` may not edit the collection (or change a live answer)."""
    question, answer = curated_answer_clean(question=question, answer=answer)
    if document is not None:
        if document.kind != DocumentKind.CURATED:
            raise CuratedAnswerInvalid({"document": "Only curated answers can be edited here."})
        if document.collection_id != collection.pk:
            raise CuratedAnswerInvalid({"collection": "A curated answer stays in its collection."})
    actions = actions_on(actor, collection)
    if Action.EDIT not in actions:
        raise PermissionDenied(f"You may not add answers to the collection “{collection.name}”.")
    may_publish = Action.PUBLISH in actions
    live_refusal = f"This answer is live; only someone who may publish in “{collection.name}” can change it."
    if document is not None and document.published and not may_publish:
        raise PermissionDenied(live_refusal)
    draft = CuratedDraft(collection=collection, question=question, actor=actor, may_publish=may_publish,
                         live_refusal=live_refusal, document=document, conversation_id=str(conversation_id or ""))

    body = curated_answer_body(question=question, answer=answer)
    if document is None:
        # The same question and answer again (a second click, another agent): keep one.
        existing = Document.objects.filter(collection=collection, kind=DocumentKind.CURATED,
                                           checksum=_checksum(body)).first()
        if existing is not None:
            draft.unchanged = existing
            return draft
    elif document.checksum == _checksum(body):
        draft.unchanged = document  # nothing to embed
        return draft
    slug = document.slug if document is not None else _new_slug(question)
    try:
        draft.prepared = _document_prepare(collection=collection, slug=slug, body=body, title=question,
                                           url=_url_for(collection, slug))
    except IngestionError:
        raise CuratedAnswerInvalid({"answer": "The answer has no text to index."}) from None
    return draft


def curated_answer_store(draft: CuratedDraft, *, source_review_item=None) -> tuple[Document, bool]:
    """Store a prepared curated answer, in the caller's transaction (so that, e.g., a flagged
    answer's curated answer, review item and evaluation case commit together).
    ``source_review_item`` records, on a new answer, the review it came from."""
    if draft.unchanged is not None:
        return draft.unchanged, False
    collection, document = draft.collection, draft.document
    metadata = None
    if document is None:
        metadata = {}
        if draft.conversation_id:
            metadata["conversation"] = draft.conversation_id
        if source_review_item is not None:
            metadata["source"] = f"review:{source_review_item.pk}"
    with transaction.atomic():
        if document is not None:
            current = Document.objects.select_for_update().get(pk=document.pk)
            if current.published and not draft.may_publish:  # published meanwhile
                raise PermissionDenied(draft.live_refusal)
        stored, changed = _document_store(collection=collection, prepared=draft.prepared, actor=draft.actor,
                                          source_name="curated answer", source_kind=DocumentKind.CURATED,
                                          metadata=metadata, publish=draft.may_publish)
        if stored.kind != DocumentKind.CURATED:
            stored.kind = DocumentKind.CURATED
            stored.save(update_fields=["kind", "updated_at"])
        if changed:
            audit_event_record(
                actor=draft.actor, action="knowledge.curated_answer_saved", target=stored,
                data={"collection": str(collection.pk), "version": stored.version, "question": draft.question,
                      "published": stored.published, "conversation": stored.metadata.get("conversation", ""),
                      "source": stored.metadata.get("source", "")},
            )
    return stored, changed


def curated_answer_save(*, collection: Collection, question: str, answer: str, actor,
                        source_review_item=None, document: Document | None = None,
                        conversation_id: str = "") -> tuple[Document, bool]:
    """Create a curated answer in ``collection``, or with ``document`` give one a new version.

    ``actor`` must be allowed to edit the collection (``PermissionDenied`` otherwise). Without
    publish permission a new answer is stored unpublished, and a live one cannot be changed.
    ``source_review_item`` and ``conversation_id`` record where a new answer came from.
    Returns (document, changed); the same text again changes nothing (and a new answer with
    the text of one already in the collection returns that one).

    Raises ``CuratedAnswerInvalid`` (with per-field errors) for a question outside
    ``QUESTION_CHARS`` or an answer outside ``ANSWER_CHARS``."""
    draft = curated_answer_prepare(collection=collection, question=question, answer=answer, actor=actor,
                                   document=document, conversation_id=conversation_id)
    with transaction.atomic(durable=True):
        return curated_answer_store(draft, source_review_item=source_review_item)


# --- reads ------------------------------------------------------------------------------------

def curated_answer_list(*, collection: Collection | None = None, user=None,
                        conversation_id: str = "") -> QuerySet[Document]:
    """Curated answers, newest first: of one collection, and/or saved from one conversation.

    With ``user``, only answers of collections they may read, annotated with ``may_edit`` and
    ``may_publish`` (their rights on each answer's collection), in one query."""
    answers = Document.objects.filter(kind=DocumentKind.CURATED).select_related("collection").order_by(
        "-created_at")
    if collection is not None:
        answers = answers.filter(collection=collection)
    if conversation_id:
        answers = answers.filter(metadata__contains={"conversation": str(conversation_id)})
    if user is None:
        return answers
    if is_knowledge_admin(user):
        return answers.annotate(may_edit=Value(True), may_publish=Value(True))
    return answers.filter(collection__in=collections_for(user, Action.READ).values("pk")).annotate(
        may_edit=Exists(collections_for(user, Action.EDIT).filter(pk=OuterRef("collection_id"))),
        may_publish=Exists(collections_for(user, Action.PUBLISH).filter(pk=OuterRef("collection_id"))),
    )


def curated_collections_for(user) -> QuerySet[Collection]:
    """The collections ``user`` may add curated answers to (edit), annotated with
    ``may_publish``; ``DEFAULT_COLLECTION`` first, then by name. One query."""
    editable = Collection.objects.filter(pk__in=collections_for(user, Action.EDIT).values("pk"))
    return collections_with_access(user, editable).order_by(
        Case(When(name=DEFAULT_COLLECTION, then=Value(0)), default=Value(1), output_field=IntegerField()), "name")


def curated_answer_texts(*, document_ids) -> dict[str, str]:
    """The full answers of curated answer documents by id, in one query (a retrieved chunk
    may hold only part of a long answer)."""
    rows = Document.objects.filter(pk__in=list(document_ids), kind=DocumentKind.CURATED).values_list("pk", "body")
    return {str(pk): curated_answer_text(body) for pk, body in rows}
