"""Curated answers from the conversation workspace: an agent saves the answer they gave, a
publisher makes it live, and the assistant answers that question with it from then on."""

from __future__ import annotations

import html
import uuid

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from convo.models import Decision, Role
from convo.selectors import messages_after
from convo.services import agent_reply, conversation_start, conversation_takeover
from governance.models import AuditEvent
from governance.roles import Role as StaffRole
from knowledge.models import Collection, Document, DocumentKind
from knowledge.permissions import Action, collection_access_set
from review.models import ItemKind, ReviewItem, Team
from tests.fakes.openai_server import FakeOpenAI
from tests.knowledge.test_curated import ANSWER, PARAPHRASE, QUESTION, UNRELATED

pytestmark = pytest.mark.django_db

# The help centre covers delivery times; the agent's answer adds what no article says.


@pytest.fixture
def curated_collection(demo) -> Collection:
    return Collection.objects.get(name="Curated answers")


@pytest.fixture
def handled(say, customer_conversation, users):
    """Escalated, taken over by the agent, who answered the customer's question themselves."""
    say("I want to talk to a real person please")
    conversation_takeover(conversation_id=customer_conversation.pk, agent=users["agent"])
    say(QUESTION)  # the assistant stays quiet: a person is in the chat
    agent_reply(conversation_id=customer_conversation.pk, agent=users["agent"], text=ANSWER)
    customer_conversation.refresh_from_db()
    return customer_conversation


def page_url(conversation) -> str:
    return reverse("office:conversation", args=[conversation.pk])


def save_url(conversation) -> str:
    return reverse("office:curated_answer", args=[conversation.pk])


def curated_state() -> tuple:
    """What a refused POST must leave alone."""
    return (list(Document.objects.filter(kind=DocumentKind.CURATED).values_list("pk", "version", "body")),
            AuditEvent.objects.count())


def publish(user, document) -> None:
    client = APIClient()
    client.force_authenticate(user)
    response = client.post(f"/api/v1/knowledge/documents/{document.pk}/publish", {}, format="json")
    assert response.status_code == 200, response.content


def new_form(response) -> dict:
    return response.context["curated"]["new"]


# --- the form -------------------------------------------------------------------------------

def test_agent_gets_the_form_prefilled_and_told_it_waits_for_a_publisher(client, users, handled):
    client.force_login(users["agent"])
    response = client.get(page_url(handled))
    assert response.status_code == 200
    body = html.unescape(response.content.decode())
    assert f'action="{save_url(handled)}"' in body
    assert "Save as curated answer" in body
    assert new_form(response)["question"] == QUESTION
    assert new_form(response)["answer"] == ANSWER
    assert f">{QUESTION}</textarea>" in body and f">{ANSWER}</textarea>" in body
    # Agents may add answers to one collection only: no choice to make, the note says where.
    assert 'name="csrfmiddlewaretoken"' in body
    assert 'id="curated-collection"' not in body
    assert "Saved to “Curated answers”. Waits for someone who may publish in this collection" in body


def test_supervisor_chooses_among_the_collections_they_may_edit(client, users, handled):
    client.force_login(users["supervisor"])
    response = client.get(page_url(handled))
    body = html.unescape(response.content.decode())
    assert [(c.name, c.may_publish) for c in response.context["curated"]["collections"]] == [
        ("Curated answers", True), ("Agent playbooks", False)]
    assert 'id="curated-collection"' in body and "Help centre</option>" not in body
    assert "Goes live as soon as you save it." in body
    assert 'data-publish="no" data-internal="yes">Agent playbooks (internal)</option>' in body


def test_answers_in_internal_collections_are_for_agents_only(client, users, handled, say):
    playbooks = Collection.objects.get(name="Agent playbooks")
    client.force_login(users["admin"])
    response = client.post(save_url(handled), {"question": QUESTION, "answer": ANSWER, "collection": playbooks.pk},
                           follow=True)
    assert ("Curated answer saved. It is live in knowledge search for agents; customers never get internal "
            "answers.") in html.unescape(response.content.decode())
    document = Document.objects.get(kind=DocumentKind.CURATED)
    assert (document.collection, document.published, document.url) == (playbooks, True, "")
    turn = say(PARAPHRASE, conversation=conversation_start())
    assert "winter sale" not in turn.reply.text
    assert str(document.pk) not in {s["document_id"] for s in turn.sources}


def test_question_without_an_agent_reply_leaves_the_answer_empty(client, users, say, customer_conversation):
    say("Do you sell kayak paddles?")
    say("I want to talk to a real person please")
    client.force_login(users["supervisor"])
    form = new_form(client.get(page_url(customer_conversation)))
    assert (form["question"], form["answer"]) == ("I want to talk to a real person please", "")


def test_readers_and_agents_who_may_not_edit_get_no_form_and_403(client, users, handled, curated_collection,
                                                                  django_user_model):
    # Compliance reads conversations but does not work them.
    client.force_login(users["compliance"])
    assert client.get(page_url(handled)).context["curated"] is None
    before = curated_state()
    assert client.post(save_url(handled), {"question": QUESTION, "answer": ANSWER,
                                           "collection": curated_collection.pk}).status_code == 403
    # Agents whose role lost edit on the collection may no longer add answers anywhere.
    collection_access_set(actor="test", collection=curated_collection, grantee=Group.objects.get(name=StaffRole.AGENT),
                          actions=[Action.READ])
    client.force_login(users["agent"])
    response = client.get(page_url(handled))
    assert response.context["curated"] is None
    assert save_url(handled) not in response.content.decode()
    response = client.post(save_url(handled), {"question": QUESTION, "answer": ANSWER,
                                               "collection": curated_collection.pk})
    assert response.status_code == 403
    assert curated_state()[0] == before[0]


def test_anonymous_and_other_teams_change_nothing(client, users, handled, curated_collection, django_user_model):
    data = {"question": QUESTION, "answer": ANSWER, "collection": curated_collection.pk}
    before = curated_state()
    response = client.post(save_url(handled), data)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    billing = django_user_model.objects.create_user(username="billing-agent", password="x-billing", is_staff=True)
    billing.groups.add(Group.objects.get(name=StaffRole.AGENT))
    assign_perm("review.work_team", billing, Team.objects.create(name="Billing"))
    client.force_login(billing)
    assert client.post(save_url(handled), data).status_code == 404
    assert curated_state() == before


def test_csrf_token_is_required(users, handled, curated_collection):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["agent"])
    before = curated_state()
    response = client.post(save_url(handled), {"question": QUESTION, "answer": ANSWER,
                                               "collection": curated_collection.pk})
    assert response.status_code == 403
    assert curated_state() == before


# --- saving, publishing, answering --------------------------------------------------------------

def test_saved_by_an_agent_published_by_a_supervisor_then_answered_with_it(
        client, users, handled, curated_collection, say):
    client.force_login(users["agent"])
    response = client.post(save_url(handled), {"question": QUESTION, "answer": ANSWER,
                                               "collection": curated_collection.pk}, follow=True)
    assert response.redirect_chain == [(page_url(handled), 302)]
    body = html.unescape(response.content.decode())
    assert ("Curated answer saved. It waits for someone who may publish in “Curated answers”; until then the "
            "assistant does not use it.") in body
    [saved] = response.context["curated"]["saved"]
    document = saved["document"]
    assert (document.title, document.published, document.version) == (QUESTION, False, 1)
    assert "Saved from this conversation" in body and "Waiting for a publisher" in body
    # The form no longer offers what was just saved, and saving it again keeps one copy.
    assert (new_form(response)["question"], new_form(response)["answer"]) == ("", "")
    again = client.post(save_url(handled), {"question": QUESTION, "answer": ANSWER,
                                            "collection": curated_collection.pk}, follow=True)
    assert "This question and answer are already saved in “Curated answers”." in html.unescape(
        again.content.decode())
    assert Document.objects.filter(kind=DocumentKind.CURATED).count() == 1
    escalation = ReviewItem.objects.get(kind=ItemKind.ESCALATION, subject_id=str(handled.pk))
    assert document.metadata == {"conversation": str(handled.pk), "source": f"review:{escalation.pk}"}

    # Not published yet: another customer asking the same thing gets the help-centre extract.
    waiting = say(PARAPHRASE, conversation=conversation_start())
    assert waiting.decision == Decision.ANSWER
    assert ANSWER not in waiting.reply.text
    assert str(document.pk) not in {s["document_id"] for s in waiting.sources}

    publish(users["supervisor"], document)
    conversation = conversation_start()
    turn = say(PARAPHRASE, conversation=conversation)
    assert turn.decision == Decision.ANSWER and turn.reason == "curated_answer"
    assert turn.reply.text == f"{ANSWER} [1]"
    [cited] = turn.reply.sources
    assert (cited["n"], cited["document_id"], cited["title"], cited["curated"]) == (1, str(document.pk), QUESTION,
                                                                                    True)
    assert cited["url"] == f"/help/{document.slug}/"
    # Ranked first, over the help-centre article on the same topic.
    assert [s["curated"] for s in turn.sources][:2] == [True, False]
    assert "Shipping times and costs" in {s["title"] for s in turn.sources[1:]}
    # The customer's chat shows the citation as usual, and it links to the answer's page.
    reply = [m for m in messages_after(conversation_id=conversation.pk) if m["role"] == Role.ASSISTANT][-1]
    assert reply["text"] == f"{ANSWER} [1]" and reply["sources"][0]["title"] == QUESTION
    article = client.get(cited["url"])
    assert article.status_code == 200 and "allow one extra day" in article.content.decode()
    # The office shows which source is a curated answer (to whoever reads every conversation:
    # this one was never escalated to a team).
    client.force_login(users["compliance"])
    office = html.unescape(client.get(page_url(conversation)).content.decode())
    assert '<span class="chip chip-info chip-sm">Curated</span>' in office
    assert f"[1] {QUESTION} <span class=\"chip chip-info\">Curated</span>" in office


def test_unrelated_question_is_answered_from_the_help_centre(client, users, handled, curated_collection, say):
    client.force_login(users["supervisor"])
    client.post(save_url(handled), {"question": QUESTION, "answer": ANSWER, "collection": curated_collection.pk})
    document = Document.objects.get(kind=DocumentKind.CURATED)
    assert document.published  # supervisors publish as they save
    turn = say(UNRELATED, conversation=conversation_start())
    assert turn.decision == Decision.ANSWER and turn.reason == ""
    assert "winter sale" not in turn.reply.text
    assert {s["title"] for s in turn.reply.sources} == {"Shipping times and costs"}
    assert str(document.pk) in {s["document_id"] for s in turn.sources}  # retrieved, but not an answer to this


@pytest.mark.parametrize(("change", "field_error"), [
    ({"question": ""}, "Write the question."),
    ({"question": "Why"}, "The question is too short: at least 5 characters."),
    ({"question": "Is it " + "really " * 50 + "true?"}, "The question is too long: at most 300 characters"),
    ({"answer": "   "}, "Write the answer."),
    ({"answer": "z" * 4001}, "The answer is too long: at most 4,000 characters (it has 4,001)."),
    ({"collection": ""}, "Choose a collection you may add answers to."),
    ({"collection": str(uuid.uuid4())}, "Choose a collection you may add answers to."),
    ({"collection": "help-centre"}, "Choose a collection you may add answers to."),  # readable, not editable
])
def test_bad_input_is_a_form_error_and_stores_nothing(client, users, handled, curated_collection, change,
                                                      field_error):
    data = {"question": QUESTION, "answer": ANSWER, "collection": str(curated_collection.pk), **change}
    if data["collection"] == "help-centre":
        data["collection"] = str(Collection.objects.get(name="Help centre").pk)
    client.force_login(users["agent"])
    before = curated_state()
    response = client.post(save_url(handled), data)
    assert response.status_code == 400
    body = html.unescape(response.content.decode())
    assert field_error in body
    assert 'aria-invalid="true"' in body
    # What the agent typed is kept, so they can fix it.
    assert new_form(response)["question"] == data["question"] and new_form(response)["answer"] == data["answer"]
    # The workspace itself is still there.
    assert 'id="transcript"' in body and ANSWER in body
    assert curated_state() == before


def test_editing_from_the_workspace_makes_a_new_version(client, users, handled, curated_collection):
    client.force_login(users["supervisor"])
    client.post(save_url(handled), {"question": QUESTION, "answer": ANSWER, "collection": curated_collection.pk})
    document = Document.objects.get(kind=DocumentKind.CURATED)
    better = "Standard delivery within Germany takes 2 to 4 working days, all year round."
    response = client.post(save_url(handled), {"document": document.pk, "question": QUESTION, "answer": better},
                           follow=True)
    assert "Curated answer saved as version 2. It is live" in html.unescape(response.content.decode())
    document.refresh_from_db()
    assert (document.version, document.body, document.published) == (2, f"# {QUESTION}\n\n{better}", True)
    [saved] = response.context["curated"]["saved"]
    assert saved["answer"] == better and saved["may_change"]

    # The agent may not change a live answer: no edit form, and a forged POST is a form error.
    client.force_login(users["agent"])
    page = client.get(page_url(handled))
    [saved] = page.context["curated"]["saved"]
    assert not saved["may_change"]
    assert "Live answers can only be changed by someone who may publish" in html.unescape(page.content.decode())
    before = curated_state()
    response = client.post(save_url(handled), {"document": document.pk, "question": QUESTION,
                                               "answer": "Agents think it is three days now."})
    assert response.status_code == 400
    assert "only someone who may publish in “Curated answers” can change it" in html.unescape(
        response.content.decode())
    assert curated_state() == before


def test_editing_something_that_is_not_a_curated_answer_is_refused(client, users, handled):
    article = Document.objects.get(slug="shipping-and-delivery")
    client.force_login(users["admin"])
    before = curated_state()
    for document_id, error in [(article.pk, "Only curated answers can be edited here."),
                               (uuid.uuid4(), "That answer does not exist, or you may not read it.")]:
        response = client.post(save_url(handled), {"document": document_id, "question": QUESTION, "answer": ANSWER})
        assert response.status_code == 400
        assert error in response.content.decode()
    article.refresh_from_db()
    assert article.version == 1 and curated_state() == before


# --- query count ------------------------------------------------------------------------------

# The session, the user, their roles, their teams, the queue's items and counts, the
# conversation, its action runs (none here, so no approvals or approval items are looked up),
# the messages, the turns, the escalation item, the collections the agent may add answers to,
# the answers saved from this conversation (with their collections and the agent's rights), and
# the actions an agent may propose.
PAGE_QUERIES = 14


@pytest.mark.parametrize("saved", [0, 3])
def test_conversation_page_with_the_form_query_count(client, users, handled, curated_collection, saved,
                                                     django_assert_num_queries):
    client.force_login(users["agent"])
    for i in range(saved):
        client.post(save_url(handled), {"question": f"{QUESTION} ({i})", "answer": ANSWER,
                                        "collection": curated_collection.pk})
    client.get(page_url(handled))  # django-guardian caches permission content types per process
    with django_assert_num_queries(PAGE_QUERIES):
        response = client.get(page_url(handled))
    assert response.status_code == 200
    assert len(response.context["curated"]["saved"]) == saved
    assert response.content.decode().count('class="curated-item"') == saved


# --- the OpenAI-compatible provider ---------------------------------------------------------------

@pytest.fixture(scope="module")
def fake_openai():
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


def test_openai_provider_gets_the_curated_answer_first_and_is_told_to_prefer_it(
        client, users, handled, curated_collection, say, fake_openai, settings):
    settings.LLM_BASE_URL, settings.LLM_API_KEY, settings.LLM_MODEL = fake_openai.base_url, "test-key", "fake-model"
    settings.LLM_TIMEOUT_S = 2.0
    fake_openai.reset()
    client.force_login(users["supervisor"])
    client.post(save_url(handled), {"question": QUESTION, "answer": ANSWER, "collection": curated_collection.pk})
    fake_openai.script({"text": "It takes 2 to 4 working days; in the winter sale one more [1]."})
    turn = say(PARAPHRASE, conversation=conversation_start())
    [request] = fake_openai.chat_requests
    system = request["messages"][0]["content"]
    sources = system.split("Sources:\n", 1)[1]
    assert sources.startswith("Source [1] is the answer our team wrote to this question. Prefer it")
    assert f"[1] Curated answer to the question “{QUESTION}”\n{ANSWER}\n\n[2] " in sources
    assert turn.reply.sources[0]["curated"] is True and turn.reason == "curated_answer"
    fake_openai.reset()
