"""Curated answers (knowledge/curated.py): stored like any document, published like any
document, and ranked first for the question they answer (knowledge.selectors._fuse)."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from rest_framework.test import APIClient

from governance.models import AuditEvent
from knowledge.curated import (
    ANSWER_CHARS,
    QUESTION_CHARS,
    CuratedAnswerInvalid,
    curated_answer_list,
    curated_answer_save,
    curated_collections_for,
)
from knowledge.models import Collection, Document, DocumentKind, DocumentVersion
from knowledge.permissions import Action, collection_access_set
from knowledge.selectors import CURATED_MIN_SIMILARITY, chunk_search

pytestmark = pytest.mark.django_db

# The help centre answers delivery times ("Shipping times and costs"); the curated answer says
# something the articles do not, so the tests can tell which one the assistant used.
QUESTION = "How long does standard delivery take within Germany?"
ANSWER = ("Standard delivery within Germany takes 2 to 4 working days. During the winter sale "
          "(1 to 15 January) allow one extra day.")
PARAPHRASE = "How many days does normal shipping inside Germany take?"
# A neighbour: the curated answer is retrieved (second) but answers another question.
UNRELATED = "How much is express delivery within Germany?"


@pytest.fixture
def curated(demo) -> Collection:
    return Collection.objects.get(name="Curated answers")


@pytest.fixture
def help_centre(demo) -> Collection:
    return Collection.objects.get(name="Help centre")


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def save(curated, user, question=QUESTION, answer=ANSWER, **kwargs):
    return curated_answer_save(collection=curated, question=question, answer=answer, actor=user, **kwargs)


# --- permissions and publishing ---------------------------------------------------------------

def test_demo_access_agents_write_supervisors_and_model_owners_publish(curated, users):
    def rights(name):
        collection = Collection.objects.get(pk=curated.pk)  # rights are remembered per instance
        from knowledge.permissions import actions_on
        return set(actions_on(users[name], collection))

    assert rights("agent") == rights("agent2") == {Action.READ, Action.EDIT}
    assert rights("supervisor") == rights("modelowner") == {Action.READ, Action.EDIT, Action.PUBLISH}
    assert rights("compliance") == {Action.READ}
    assert curated.audience == "customer"
    # Loading the demo again grants nothing new.
    from convo.demo.loader import load_demo

    before = AuditEvent.objects.filter(action="knowledge.collection_access_changed").count()
    load_demo()
    assert AuditEvent.objects.filter(action="knowledge.collection_access_changed").count() == before


def test_agents_answer_waits_unpublished_until_a_supervisor_publishes_it(curated, users):
    document, changed = save(curated, users["agent"], conversation_id="0190c0de-0000-7000-8000-000000000001")
    assert changed
    assert (document.kind, document.title, document.published, document.version) == (
        DocumentKind.CURATED, QUESTION, False, 1)
    assert document.body == f"# {QUESTION}\n\n{ANSWER}"
    assert document.metadata == {"conversation": "0190c0de-0000-7000-8000-000000000001"}
    assert document.url == f"/help/{document.slug}/" and document.slug.startswith("curated-how-long-does")
    # Unpublished: no search serves it.
    assert str(document.pk) not in {h.document_id for h in chunk_search(query=PARAPHRASE, k=10)}

    # The agent may not publish it; a supervisor may, through the existing API.
    url = f"/api/v1/knowledge/documents/{document.pk}/publish"
    assert api(users["agent"]).post(url, {}, format="json").status_code == 403
    document.refresh_from_db()
    assert not document.published
    response = api(users["supervisor"]).post(url, {"reason": "Checked"}, format="json")
    assert response.status_code == 200, response.content
    document.refresh_from_db()
    assert document.published

    [first, *rest] = chunk_search(query=PARAPHRASE, k=4)
    assert (first.document_id, first.curated, first.title) == (str(document.pk), True, QUESTION)
    assert first.similarity >= CURATED_MIN_SIMILARITY
    assert "Shipping times and costs" in {h.title for h in rest}
    assert first.as_source(1)["curated"] is True and rest[0].as_source(2)["curated"] is False


def test_supervisors_answer_is_live_at_once(curated, users):
    document, _ = save(curated, users["supervisor"])
    assert document.published
    assert chunk_search(query=PARAPHRASE, k=4)[0].document_id == str(document.pk)
    event = AuditEvent.objects.get(action="knowledge.curated_answer_saved", target_id=str(document.pk))
    assert event.actor_label == "supervisor"
    assert event.data["published"] is True and event.data["question"] == QUESTION
    assert AuditEvent.objects.filter(action="knowledge.document_ingested", target_id=str(document.pk)).exists()


@pytest.mark.parametrize("who", ["compliance", "agent"])
def test_without_edit_permission_nothing_is_stored(who, curated, help_centre, users):
    # Compliance may only read "Curated answers"; agents may only read the help centre.
    collection = curated if who == "compliance" else help_centre
    documents, audit = Document.objects.count(), AuditEvent.objects.count()
    with pytest.raises(PermissionDenied, match="You may not add answers"):
        save(collection, users[who])
    assert (Document.objects.count(), AuditEvent.objects.count()) == (documents, audit)


def test_administrators_may_write_anywhere(help_centre, users):
    document, _ = save(help_centre, users["admin"])
    assert document.published and document.collection == help_centre


# --- ranking ----------------------------------------------------------------------------------

def test_curated_answer_ranks_above_the_help_article_it_overlaps(curated, users):
    before = chunk_search(query=PARAPHRASE, k=4)
    assert before[0].title == "Shipping times and costs" and not before[0].curated
    document, _ = save(curated, users["supervisor"])
    after = chunk_search(query=PARAPHRASE, k=4)
    assert after[0].document_id == str(document.pk) and after[0].curated_match
    # The other hits keep their fused order.
    assert [h.chunk_id for h in after[1:]] == [h.chunk_id for h in before if h.document_id != str(document.pk)][:3]


def test_unrelated_question_does_not_get_the_curated_answer_first(curated, users):
    document, _ = save(curated, users["supervisor"])
    hits = chunk_search(query=UNRELATED, k=4)
    assert hits[0].title == "Shipping times and costs"
    [curated_hit] = [h for h in hits if h.document_id == str(document.pk)]
    assert curated_hit.curated and not curated_hit.curated_match
    assert curated_hit.similarity < CURATED_MIN_SIMILARITY


@pytest.mark.parametrize(("query", "matches"), [
    ("Is shipping to Switzerland possible?", True),
    ("Do you deliver to Switzerland?", True),
    ("How much does shipping to Austria cost?", False),
    ("Do you have a shop in Zurich?", False),
])
def test_threshold_separates_paraphrases_from_neighbours(curated, users, query, matches):
    """Figures behind CURATED_MIN_SIMILARITY (see knowledge/selectors.py), on one example."""
    document, _ = save(curated, users["supervisor"], question="Do you ship to Switzerland?",
                       answer="Yes, we deliver to Switzerland in 4 to 7 working days for 14.90 EUR. Swiss import "
                              "VAT and customs fees are charged by the carrier on delivery.")
    hits = chunk_search(query=query, k=4)
    top_is_curated = hits[0].document_id == str(document.pk) and hits[0].curated_match
    assert top_is_curated is matches


def test_lexical_and_dense_modes_put_it_first_too(curated, users):
    from knowledge.embeddings import embed_query

    document, _ = save(curated, users["supervisor"])
    for mode in ("dense", "lexical"):
        hits = chunk_search(query=PARAPHRASE, k=4, mode=mode, query_vector=embed_query(PARAPHRASE))
        assert hits[0].document_id == str(document.pk), mode


# --- validation and versions ------------------------------------------------------------------

@pytest.mark.parametrize(("question", "answer", "field", "message"), [
    ("", ANSWER, "question", "Write the question."),
    ("  \n ", ANSWER, "question", "Write the question."),
    ("Why", ANSWER, "question", "too short: at least 5"),
    ("x" * (QUESTION_CHARS[1] + 1), ANSWER, "question", "too long: at most 300 characters (it has 301)"),
    (QUESTION, "", "answer", "Write the answer."),
    (QUESTION, "Two days", "answer", "too short: at least 10"),
    (QUESTION, "y" * (ANSWER_CHARS[1] + 1), "answer", "too long: at most 4,000 characters (it has 4,001)"),
])
def test_bad_question_or_answer_is_refused_and_nothing_is_stored(curated, users, question, answer, field, message):
    documents, audit = Document.objects.count(), AuditEvent.objects.count()
    with pytest.raises(CuratedAnswerInvalid) as refused:
        save(curated, users["agent"], question=question, answer=answer)
    assert list(refused.value.errors) == [field]
    assert message in refused.value.errors[field]
    assert (Document.objects.count(), AuditEvent.objects.count()) == (documents, audit)


def test_limits_are_inclusive_and_the_question_is_one_line(curated, users):
    question = "Q" + "?" * (QUESTION_CHARS[1] - 1)
    document, _ = save(curated, users["agent"], question=question, answer="a" * ANSWER_CHARS[1])
    assert len(document.title) == QUESTION_CHARS[1]
    document, _ = save(curated, users["agent"], question="Can I\n  return   socks?", answer="  Yes, unworn.\r\n\r\n  ")
    assert document.title == "Can I return socks?"
    assert document.body == "# Can I return socks?\n\nYes, unworn."


def test_editing_makes_a_new_version_and_the_same_text_changes_nothing(curated, users):
    document, _ = save(curated, users["agent"])
    old_chunks = set(document.chunks.values_list("pk", flat=True))
    new_answer = "Standard delivery within Germany takes 2 to 4 working days, all year round."
    edited, changed = save(curated, users["agent"], answer=new_answer, document=document)
    assert changed and edited.pk == document.pk
    assert (edited.version, edited.body, edited.published) == (2, f"# {QUESTION}\n\n{new_answer}", False)
    assert list(DocumentVersion.objects.filter(document=document).values_list("version", flat=True)) == [2, 1]
    assert not old_chunks & set(edited.chunks.values_list("pk", flat=True))

    audit = AuditEvent.objects.count()
    again, changed = save(curated, users["agent"], answer=new_answer, document=edited)
    assert (changed, again.version) == (False, 2)
    assert AuditEvent.objects.count() == audit


def test_only_a_publisher_changes_a_live_answer(curated, users):
    from knowledge.publishing import document_publish

    document, _ = save(curated, users["agent"])
    document, _ = document_publish(actor=users["supervisor"], document=document)
    with pytest.raises(PermissionDenied, match="only someone who may publish"):
        save(curated, users["agent"], answer="Something else entirely, that is long enough.", document=document)
    document.refresh_from_db()
    assert (document.version, document.body) == (1, f"# {QUESTION}\n\n{ANSWER}")
    edited, changed = save(curated, users["supervisor"], answer="Now 1 to 3 working days within Germany.",
                           document=document)
    assert changed and (edited.version, edited.published) == (2, True)


def test_files_are_not_edited_as_curated_answers(help_centre, users):
    article = Document.objects.get(collection=help_centre, slug="shipping-and-delivery")
    with pytest.raises(CuratedAnswerInvalid, match="Only curated answers"):
        save(help_centre, users["admin"], document=article)
    article.refresh_from_db()
    assert article.version == 1 and article.kind == DocumentKind.FILE


def test_other_answers_are_separate_documents_and_the_same_one_is_kept_once(curated, users):
    first, _ = save(curated, users["agent"])
    second, _ = save(curated, users["agent"], answer="A different answer to the same question.")
    assert first.pk != second.pk and first.slug != second.slug
    assert (first.version, second.version) == (1, 1)
    audit = AuditEvent.objects.count()
    again, changed = save(curated, users["agent2"], question=f"  {QUESTION} ")
    assert (again.pk, changed, again.version) == (first.pk, False, 1)
    assert AuditEvent.objects.count() == audit
    assert Document.objects.filter(kind=DocumentKind.CURATED).count() == 2


# --- reads ------------------------------------------------------------------------------------

def test_list_by_collection_and_conversation_with_the_readers_rights(curated, help_centre, users):
    conversation = "0190c0de-0000-7000-8000-000000000002"
    mine, _ = save(curated, users["agent"], conversation_id=conversation)
    other, _ = save(curated, users["agent"], question="Do you ship to Switzerland?")
    admins, _ = save(help_centre, users["admin"], conversation_id=conversation)

    assert list(curated_answer_list(collection=curated)) == [other, mine]
    assert list(curated_answer_list(conversation_id=conversation)) == [admins, mine]
    # An agent reads both collections but may edit only "Curated answers".
    listed = {d.pk: (d.may_edit, d.may_publish) for d in curated_answer_list(user=users["agent"],
                                                                               conversation_id=conversation)}
    assert listed == {mine.pk: (True, False), admins.pk: (False, False)}
    # Someone who may not read the help centre does not see its answers.
    collection_access_set(actor="test", collection=help_centre, grantee=users["agent"].groups.get(), actions=[])
    assert [d.pk for d in curated_answer_list(user=users["agent"], conversation_id=conversation)] == [mine.pk]


def test_collections_offered_for_curated_answers(curated, users):
    assert [(c.name, c.may_publish) for c in curated_collections_for(users["agent"])] == [("Curated answers", False)]
    assert [(c.name, c.may_publish) for c in curated_collections_for(users["supervisor"])] == [
        ("Curated answers", True), ("Agent playbooks", False)]
    assert list(curated_collections_for(users["compliance"])) == []
    assert [c.name for c in curated_collections_for(users["admin"])] == [
        "Curated answers", "Agent playbooks", "Help centre"]
