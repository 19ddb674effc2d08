"""Flagging an AI answer as wrong (convo/flagging.py): the correction becomes a curated answer
the assistant uses from then on, an evaluation case for the next model version, and a resolved
flagged-answer review item; bad requests change nothing."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from guardian.shortcuts import assign_perm

from convo.flagging import (
    ALREADY_FLAGGED,
    FLAG_CATEGORIES,
    FlagError,
    FlagInvalid,
    ai_answer_flag,
    flagged_messages,
)
from convo.models import Decision, Message, Role, Turn
from convo.services import agent_reply, conversation_start, conversation_takeover, message_append
from governance.models import AuditEvent, EvaluationCase
from governance.roles import Role as StaffRole
from knowledge.curated import curated_answer_text
from knowledge.models import Collection, Document, DocumentKind
from knowledge.publishing import document_publish
from review.models import ItemKind, ItemStatus, ReviewEvent, ReviewItem, Team
from tests.knowledge.test_curated import ANSWER, PARAPHRASE, QUESTION

pytestmark = pytest.mark.django_db

ESCALATE = "I want to talk to a real person please"


@pytest.fixture
def curated(demo) -> Collection:
    return Collection.objects.get(name="Curated answers")


@pytest.fixture
def answered(say) -> Turn:
    """The assistant answered QUESTION from the help centre (without the winter-sale day the
    curated answer adds); then the customer asked for a person, so the Support team sees the
    conversation."""
    turn = say(QUESTION)
    assert turn.decision == Decision.ANSWER and ANSWER not in turn.reply.text
    say(ESCALATE)
    return turn


def state() -> tuple:
    """What a refused flag must leave alone."""
    return (ReviewItem.objects.count(), ReviewEvent.objects.count(), Document.objects.count(),
            EvaluationCase.objects.count(), AuditEvent.objects.count(),
            list(Message.objects.filter(data__has_key="flag").values_list("pk", flat=True)))


def flag(message, user, collection, **kwargs):
    return ai_answer_flag(message_id=message.pk, actor=user, collection=collection,
                          **{"category": "incomplete", "correct_answer": ANSWER, **kwargs})


def test_flag_categories_are_the_evaluation_categories():
    assert FLAG_CATEGORIES == (
        ("wrong_facts", "Wrong facts"), ("outdated", "Outdated information"),
        ("missing_source", "Not in the sources / made up"), ("incomplete", "Incomplete"),
        ("wrong_action", "Wrong action or intent"), ("tone", "Tone or wording"),
        ("unsafe", "Unsafe or against policy"),
    )


# --- the happy paths ----------------------------------------------------------------------------

def test_supervisor_flags_an_answer_and_the_next_customer_gets_the_correction(
        answered, users, curated, say, customer_conversation, django_capture_on_commit_callbacks):
    supervisor, reply = users["supervisor"], answered.reply
    assert answered.model_version_id and answered.prompt_version_id
    with django_capture_on_commit_callbacks(execute=True):
        result = flag(reply, supervisor, curated, note="The winter sale adds a day.")

    # The curated answer: live at once (supervisors publish in "Curated answers").
    document = result.document
    assert result.document_changed and result.published
    assert (document.kind, document.collection, document.title) == (DocumentKind.CURATED, curated, QUESTION)
    assert curated_answer_text(document.body) == ANSWER
    item = ReviewItem.objects.get(kind=ItemKind.FLAGGED_ANSWER)
    assert document.metadata == {"conversation": str(customer_conversation.pk), "source": f"review:{item.pk}"}

    # The evaluation case, with the versions that gave the bad answer.
    case = EvaluationCase.objects.get()
    assert case == result.eval_case
    assert (case.question, case.expected_answer, case.bad_answer, case.category) == (
        QUESTION, ANSWER, reply.text, "incomplete")
    assert (case.source_type, case.source_id, case.conversation_id) == (
        "convo.message", str(reply.pk), str(customer_conversation.pk))
    assert (case.model_version_id, case.prompt_version_id) == (answered.model_version_id, answered.prompt_version_id)
    assert (case.created_by, case.curated_document_id, case.active) == (supervisor, str(document.pk), True)

    # The review item: opened and resolved by the supervisor, in their team's queue.
    item = ReviewItem.objects.get(kind=ItemKind.FLAGGED_ANSWER)
    assert item == result.review_item and result.review_item_created
    assert (item.subject_type, item.subject_id, item.status, item.outcome) == (
        "convo.message", str(reply.pk), ItemStatus.RESOLVED, "corrected")
    assert item.title == f"Flagged: {QUESTION}"
    assert item.team == Team.objects.get(name="Support")
    assert item.data == {"category": "incomplete", "conversation_id": str(customer_conversation.pk),
                         "note": "The winter sale adds a day.", "collection": str(curated.pk)}
    assert list(item.events.order_by("created_at").values_list("kind", "actor")) == [
        ("opened", supervisor.pk), ("resolved", supervisor.pk)]

    # The message shows it was flagged, and the audit trail says who did it.
    reply.refresh_from_db()
    flagged = reply.data["flag"]
    assert flagged["category"] == "incomplete" and flagged["category_label"] == "Incomplete"
    assert (flagged["by"], flagged["eval_case"], flagged["curated_document"], flagged["review_item"]) == (
        "supervisor", str(case.pk), str(document.pk), str(item.pk))
    assert flagged_messages(conversation=customer_conversation) == {str(reply.pk): flagged}
    event = AuditEvent.objects.get(action="conversation.answer_flagged")
    assert (event.actor_label, event.target_type, event.target_id) == ("supervisor", "convo.message", str(reply.pk))
    assert event.data["turn"] == str(answered.pk) and event.data["published"] is True
    assert AuditEvent.objects.filter(action="knowledge.curated_answer_saved", target_id=str(document.pk)).exists()

    # The next customer asking the same question (or a paraphrase) gets the correction.
    for text in (QUESTION, PARAPHRASE):
        turn = say(text, conversation=conversation_start())
        assert turn.decision == Decision.ANSWER and turn.reason == "curated_answer"
        assert turn.reply.text == f"{ANSWER} [1]"
        assert turn.reply.sources[0]["document_id"] == str(document.pk) and turn.reply.sources[0]["curated"]


def test_agent_flags_an_answer_and_it_waits_for_a_publisher(answered, users, curated, say):
    result = flag(answered.reply, users["agent"], curated, category="wrong_facts")
    document = result.document
    assert not document.published and not result.published
    assert result.review_item.status == ItemStatus.RESOLVED
    assert result.eval_case.created_by == users["agent"]

    waiting = say(QUESTION, conversation=conversation_start())
    assert waiting.reason != "curated_answer" and ANSWER not in waiting.reply.text
    assert str(document.pk) not in {s["document_id"] for s in waiting.sources}

    document_publish(actor=users["supervisor"], document=document)
    turn = say(QUESTION, conversation=conversation_start())
    assert turn.reason == "curated_answer" and turn.reply.text == f"{ANSWER} [1]"


def test_an_identical_curated_answer_is_reused(answered, users, curated, say):
    first = flag(answered.reply, users["supervisor"], curated)
    # Another customer, another wrong answer to the same question (before the first went live
    # it would have been the help-centre answer again): the correction is stored once.
    other = conversation_start()
    second_turn = say("What is the delivery time for Germany? Quickly please", conversation=other)
    second_turn.refresh_from_db()
    say(ESCALATE, conversation=other)
    second = flag(second_turn.reply, users["supervisor"], curated, question=QUESTION)
    assert second.document == first.document and not second.document_changed
    assert Document.objects.filter(kind=DocumentKind.CURATED).count() == 1
    assert EvaluationCase.objects.count() == 2


def test_the_question_is_stored_without_personal_data(say, users, curated):
    turn = say(f"I am jo.bloggs@example.com. {QUESTION}")
    say(ESCALATE)
    result = flag(turn.reply, users["agent"], curated)
    assert result.eval_case.question == f"I am [EMAIL]. {QUESTION}"
    assert result.document.title == f"I am [EMAIL]. {QUESTION}"
    assert "jo.bloggs" not in result.review_item.title


def test_an_assistant_message_without_a_turn_answers_the_customer_message_before_it(
        say, users, curated, customer_conversation):
    say(QUESTION)
    say(ESCALATE)
    # e.g. a reply written by an integration rather than a turn
    message = message_append(conversation=customer_conversation, role=Role.ASSISTANT,
                             text="Delivery takes a week.")
    result = flag(message, users["agent"], curated)
    assert result.eval_case.question == ESCALATE  # the nearest customer message before it
    assert (result.eval_case.model_version, result.eval_case.prompt_version) == (None, None)


def test_the_greeting_has_no_question_unless_one_is_given(answered, users, curated, customer_conversation):
    greeting = customer_conversation.messages.get(seq=1)
    assert greeting.role == Role.ASSISTANT
    before = state()
    with pytest.raises(FlagInvalid) as excinfo:
        flag(greeting, users["agent"], curated, category="tone")
    assert excinfo.value.errors == {
        "question": "There is no customer question before this answer: write the question."}
    assert state() == before
    result = flag(greeting, users["agent"], curated, category="tone", question="Who am I talking to?",
                  correct_answer="You are talking to the Brightwater assistant, an AI.")
    assert result.eval_case.question == "Who am I talking to?"


# --- refusals: nothing changes ------------------------------------------------------------------

def test_flagging_the_same_answer_twice_is_refused(answered, users, curated):
    flag(answered.reply, users["agent"], curated)
    before = state()
    for user in (users["agent"], users["supervisor"]):
        with pytest.raises(FlagError, match=ALREADY_FLAGGED) as excinfo:
            flag(answered.reply, user, curated, category="outdated",
                 correct_answer="Something else entirely, a different answer.")
        assert excinfo.value.code == "already_flagged"
    assert state() == before


@pytest.mark.parametrize(("change", "errors"), [
    ({"category": "bogus"}, {"category": "Choose what is wrong with the answer."}),
    ({"category": ""}, {"category": "Choose what is wrong with the answer."}),
    ({"correct_answer": "   "}, {"correct_answer": "Write the answer."}),
    ({"correct_answer": "Too short"}, {"correct_answer": "The answer is too short: at least 10 characters."}),
    ({"correct_answer": "z" * 4001},
     {"correct_answer": "The answer is too long: at most 4,000 characters (it has 4,001)."}),
    ({"note": "n" * 1001}, {"note": "The note is too long: at most 1,000 characters."}),
    ({"question": "Why"}, {"question": "The question is too short: at least 5 characters."}),
    ({"category": "nope", "correct_answer": ""},
     {"category": "Choose what is wrong with the answer.", "correct_answer": "Write the answer."}),
])
def test_bad_input_is_refused_with_field_errors(answered, users, curated, change, errors):
    before = state()
    with pytest.raises(FlagInvalid) as excinfo:
        flag(answered.reply, users["agent"], curated, **change)
    assert excinfo.value.errors == errors
    assert excinfo.value.code == "flag_invalid"
    assert state() == before


def test_only_the_assistants_answers_can_be_flagged(answered, users, curated, customer_conversation):
    conversation_takeover(conversation_id=customer_conversation.pk, agent=users["agent"])
    agent_reply(conversation_id=customer_conversation.pk, agent=users["agent"], text="Hello, Alex here.")
    customer = customer_conversation.messages.filter(role=Role.CUSTOMER).first()
    agent = customer_conversation.messages.get(role=Role.AGENT)
    before = state()
    for message in (customer, agent):
        with pytest.raises(FlagError, match="Only the assistant's answers can be flagged.") as excinfo:
            flag(message, users["agent"], curated)
        assert excinfo.value.code == "not_an_ai_answer"
    assert state() == before


def test_a_collection_the_actor_may_not_edit_is_refused(answered, users, curated):
    help_centre = Collection.objects.get(name="Help centre")  # agents read it only
    before = state()
    with pytest.raises(PermissionDenied, match="You may not add answers to the collection “Help centre”."):
        flag(answered.reply, users["agent"], help_centre)
    assert state() == before


def test_people_who_may_not_work_conversations_are_refused(answered, users, curated, outsider):
    before = state()
    for user in (users["compliance"], users["modelowner"], outsider):
        with pytest.raises(PermissionDenied, match="Only agents, supervisors and administrators may flag answers."):
            flag(answered.reply, user, curated)
    assert state() == before


def test_conversations_the_actor_may_not_see_look_unknown(answered, users, curated, django_user_model):
    billing = django_user_model.objects.create_user(username="billing-agent", password="x-billing", is_staff=True)
    billing.groups.add(Group.objects.get(name=StaffRole.AGENT))
    assign_perm("review.work_team", billing, Team.objects.create(name="Billing"))
    before = state()
    for user, message_id in ((billing, answered.reply.pk), (users["agent"], uuid.uuid4()),
                             (users["agent"], "not-a-uuid")):
        with pytest.raises(Message.DoesNotExist):
            ai_answer_flag(message_id=message_id, actor=user, category="incomplete", correct_answer=ANSWER,
                           collection=curated)
    assert state() == before


def test_an_agent_in_no_team_is_refused(say, users, curated, customer_conversation, django_user_model):
    loner = django_user_model.objects.create_user(username="loner", password="x-loner", is_staff=True)
    loner.groups.add(Group.objects.get(name=StaffRole.AGENT))
    turn = say(QUESTION)
    # Assigned to them, so they see the conversation, but they work no queue.
    conversation_takeover(conversation_id=customer_conversation.pk, agent=loner)
    before = state()
    with pytest.raises(PermissionDenied, match="you work in no team's queue"):
        flag(turn.reply, loner, curated)
    assert state() == before


def test_an_administrator_may_flag_any_answer(answered, users, curated):
    result = flag(answered.reply, users["admin"], curated, category="unsafe")
    assert result.published and result.review_item.reason == "safety_flag"
    assert result.eval_case.category == "unsafe"
