"""Evaluation cases (governance.EvaluationCase): one per flagged answer, kept with the versions
that answered, and read-only in the admin for compliance officers and model owners."""

from __future__ import annotations

import uuid

import pytest
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError

from governance.models import EvaluationCase, EvaluationCategory, ModelVersion, PromptVersion

pytestmark = pytest.mark.django_db

LIST_URL = "/admin/governance/evaluationcase/"


@pytest.fixture
def versions(db) -> tuple[ModelVersion, PromptVersion]:
    model = ModelVersion.objects.create(name="Offline v1", provider="offline", model_name="extractive-test")
    prompt = PromptVersion.objects.create(name="support-test", version=1, template="You help customers.")
    return model, prompt


def make_case(versions, *, source_id: str | None = None, category=EvaluationCategory.WRONG_FACTS,
              question="How long does delivery take?", **kwargs) -> EvaluationCase:
    model, prompt = versions
    return EvaluationCase.objects.create(
        question=question, expected_answer="Two to four working days.", bad_answer="A week.", category=category,
        source_type="convo.message", source_id=source_id or str(uuid.uuid4()), conversation_id=str(uuid.uuid4()),
        model_version=model, prompt_version=prompt, **kwargs)


def test_one_case_per_source(versions):
    case = make_case(versions)
    with pytest.raises(IntegrityError, match="evaluationcase_source_uniq"), transaction.atomic():
        make_case(versions, source_id=case.source_id, category=EvaluationCategory.TONE)
    # The same id from another kind of source is another case.
    EvaluationCase.objects.create(question="q", expected_answer="a", bad_answer="b", category="tone",
                                  source_type="review.reviewitem", source_id=case.source_id)
    assert EvaluationCase.objects.count() == 2


def test_versions_that_gave_bad_answers_cannot_be_deleted(versions):
    make_case(versions)
    model, prompt = versions
    for version in (model, prompt):
        with pytest.raises(ProtectedError), transaction.atomic():
            version.delete()


def test_str_and_defaults(versions):
    case = make_case(versions, question="Is " + "very " * 20 + "long?")
    assert case.active and case.curated_document_id == "" and case.created_by is None
    assert str(case).startswith("Wrong facts: Is very very")
    assert str(case).endswith("…") and len(str(case)) == len("Wrong facts: ") + 60
    assert str(make_case(versions, category="outdated", question="Short?")) == "Outdated information: Short?"


# --- the admin --------------------------------------------------------------------------------

@pytest.mark.parametrize(("username", "status"), [
    ("compliance", 200), ("modelowner", 200), ("admin", 200),
    ("agent", 403), ("agent2", 403), ("supervisor", 403),
])
def test_who_may_read_the_cases(client, users, versions, username, status):
    case = make_case(versions)
    client.force_login(users[username])
    assert client.get(LIST_URL).status_code == status
    assert client.get(f"{LIST_URL}{case.pk}/change/").status_code == status


@pytest.mark.parametrize("username", ["compliance", "modelowner", "admin"])
def test_nobody_adds_changes_or_deletes_cases_in_the_admin(client, users, versions, username):
    case = make_case(versions)
    client.force_login(users[username])
    assert client.get(f"{LIST_URL}add/").status_code == 403
    response = client.post(f"{LIST_URL}{case.pk}/change/", {"question": "Changed", "category": "tone",
                                                              "active": ""})
    assert response.status_code == 403
    assert client.post(f"{LIST_URL}{case.pk}/delete/", {"post": "yes"}).status_code == 403
    page = client.get(f"{LIST_URL}{case.pk}/change/")
    assert page.status_code == 200 and 'name="question"' not in page.content.decode()  # read-only fields
    case.refresh_from_db()
    assert (case.question, case.category, case.active) == ("How long does delivery take?", "wrong_facts", True)
    assert EvaluationCase.objects.filter(pk=case.pk).exists()


def test_filters_by_category_model_version_and_active(client, users, versions):
    other_model = ModelVersion.objects.create(name="Offline v2", provider="offline", model_name="extractive-v2")
    wrong = make_case(versions, question="Wrong facts case?")
    make_case(versions, category=EvaluationCategory.TONE, question="Tone case?", active=False)
    newer = make_case((other_model, versions[1]), category=EvaluationCategory.TONE, question="Newer model case?")
    client.force_login(users["compliance"])

    def listed(query: str) -> set:
        response = client.get(f"{LIST_URL}?{query}")
        assert response.status_code == 200
        return {c.question for c in response.context["cl"].result_list}

    assert listed("category=wrong_facts") == {wrong.question}
    assert listed(f"model_version__id__exact={other_model.pk}") == {newer.question}
    assert listed("active__exact=0") == {"Tone case?"}
    assert listed("category=tone&active__exact=1") == {newer.question}
    body = client.get(LIST_URL).content.decode()
    for label in ("By category", "By model version", "By active", "Not in the sources / made up"):
        assert label in body


@pytest.mark.parametrize("cases", [1, 6])
def test_list_page_query_count_does_not_grow(client, users, versions, cases, django_assert_num_queries):
    for i in range(cases):
        make_case(versions, question=f"Question {i}?")
    client.force_login(users["modelowner"])
    client.get(LIST_URL)  # warm per-process caches (content types, permissions)
    with django_assert_num_queries(QUERIES):
        response = client.get(LIST_URL)
    assert response.status_code == 200 and len(response.context["cl"].result_list) == cases


# The session, the user, their user and group permissions, the model versions for the filter,
# two counts (filtered and total), the user's roles and readable collections (the admin's
# sidebar), the page (versions and creator joined) and the date hierarchy's two.
QUERIES = 12
