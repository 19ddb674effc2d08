"""The evaluation pages: every URL × every role (GET and POST), exact query counts of the list
and the report, bad input answered with form errors, and the shadow-disagreement verdict."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from guardian.shortcuts import assign_perm

from config.models import OutboxMessage
from governance import lifecycle
from governance.evaluation import evaluation_results_append, evaluation_run_begin, evaluation_run_finish
from governance.models import AuditEvent, EvaluationResult, EvaluationRun, RunKind, RunStatus
from governance.roles import Role as StaffRole
from review.models import ItemKind, ReviewItem, Team
from review.services import review_item_open

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "outsider", "agent", "other_team_agent", "supervisor", "compliance", "modelowner", "admin"]


def _side(decision: str, reply: str, *, action=None, met=None, latency=120.0) -> dict:
    return {"reply": reply, "decision": decision, "intent": "", "action": action, "cited": [], "grounded": None,
            "latency_ms": latency, "cost": "0.000120", "tokens": 30, "met": met}


def _result(n: int, *, agree: bool, case_type: str = "qa", ref: str = "") -> dict:
    return {"case_type": case_type, "case_ref": ref or f"case-{n}", "input_text": f"Question number {n}?",
            "expected": {"answer": f"Answer {n}."},
            "baseline": _side("answer", f"Answer {n}.", met=True),
            "candidate": _side("answer" if agree else "fallback", f"Answer {n}." if agree else "I couldn't find that.",
                               met=agree, latency=90.0),
            "agree": agree}


def make_dataset_run(model, prompt, owner, *, results: int = 3) -> EvaluationRun:
    """A finished dataset run built through the services the runner uses."""
    run = EvaluationRun.objects.create(kind=RunKind.DATASET, candidate_model=model, candidate_prompt=prompt,
                                       baseline_model=model, baseline_prompt=prompt, params={"intent_cases": 0},
                                       created_by=owner)
    evaluation_run_begin(run_id=run.pk, plan=[{"type": "qa", "ref": f"case-{n}"} for n in range(results)])
    evaluation_results_append(run_id=run.pk, results=[_result(n, agree=n % 2 == 0) for n in range(results)])
    return evaluation_run_finish(run_id=run.pk)


@dataclass
class World:
    model: object
    prompt: object
    run: EvaluationRun
    result: EvaluationResult          # a differing dataset case (no review item)
    shadow_result: EvaluationResult   # a shadow disagreement with its review item
    item: ReviewItem
    users: dict


@pytest.fixture
def other_team_agent(demo, django_user_model):
    user = django_user_model.objects.create_user(username="billing-agent", password="x-billing-pass", is_staff=True)
    user.groups.add(Group.objects.get(name=StaffRole.AGENT))
    assign_perm("review.work_team", user, Team.objects.create(name="Billing"))
    return user


@pytest.fixture
def world(users, outsider, other_team_agent) -> World:
    owner = users["modelowner"]
    model = lifecycle.model_version_create(actor=owner, name="offline-concise", provider="offline",
                                           model_name="extractive-v1", parameters={"max_sentences": 1})
    prompt = lifecycle.prompt_version_create(actor=owner, name="support", template="Help {company}.\n{sources}")
    run = make_dataset_run(model, prompt, owner)
    shadow = EvaluationRun.objects.create(kind=RunKind.SHADOW, status=RunStatus.RUNNING, candidate_model=model,
                                          candidate_prompt=prompt, baseline_model=model, baseline_prompt=prompt,
                                          created_by=owner)
    turn_id = str(uuid.uuid4())
    [shadow_result] = evaluation_results_append(run_id=shadow.pk, results=[
        _result(0, agree=False, case_type="shadow", ref=turn_id)])
    from django.db import transaction

    with transaction.atomic():
        item, _ = review_item_open(kind=ItemKind.SHADOW_DISAGREEMENT, subject_type="convo.turn", subject_id=turn_id,
                                   title="Shadow answered differently", summary="…", priority=3,
                                   data={"run_id": str(shadow.pk), "result_id": str(shadow_result.pk),
                                         "turn_id": turn_id})
    return World(model=model, prompt=prompt, run=run, result=run.results.get(agree=False), shadow_result=shadow_result,
                 item=item, users={"anonymous": None, "outsider": outsider, "agent": users["agent"],
                                   "other_team_agent": other_team_agent, "supervisor": users["supervisor"],
                                   "compliance": users["compliance"], "modelowner": owner, "admin": users["admin"]})


def client_for(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def snapshot() -> dict:
    return {"runs": list(EvaluationRun.objects.order_by("pk").values_list("pk", "status", "done")),
            "results": list(EvaluationResult.objects.order_by("pk").values_list("pk", "expected")),
            "items": list(ReviewItem.objects.order_by("pk").values_list("pk", "status", "outcome", "version")),
            "outbox": OutboxMessage.objects.count(), "audit": AuditEvent.objects.count()}


# --- GET --------------------------------------------------------------------------------------------

GET_URLS = {
    "list": lambda w: reverse("governance:evaluation_list"),
    "new": lambda w: reverse("governance:evaluation_new") + f"?model={w.model.pk}&prompt={w.prompt.pk}",
    "report": lambda w: reverse("governance:evaluation_report", args=[w.run.pk]),
    "report_all": lambda w: reverse("governance:evaluation_report", args=[w.run.pk]) + "?show=all&page=2",
    "progress": lambda w: reverse("governance:evaluation_progress", args=[w.run.pk]),
    "result": lambda w: reverse("governance:evaluation_result", args=[w.run.pk, w.result.pk]),
    "shadow_result": lambda w: reverse("governance:evaluation_result", args=[w.shadow_result.run_id,
                                                                             w.shadow_result.pk]),
}
# Columns in ROLES order. Pages send anonymous visitors to the login page; a shadow result is
# also open to whoever may see its review item (the Support queue), read-only for governance.
GET_TABLE = {
    "list":          (302, 403, 403, 403, 403, 200, 200, 200),
    "new":           (302, 403, 403, 403, 403, 403, 200, 200),
    "report":        (302, 403, 403, 403, 403, 200, 200, 200),
    "report_all":    (302, 403, 403, 403, 403, 200, 200, 200),
    "progress":      (302, 403, 403, 403, 403, 200, 200, 200),
    "result":        (302, 403, 404, 404, 404, 200, 200, 200),
    "shadow_result": (302, 403, 200, 404, 200, 200, 200, 200),
}
GET_CELLS = [pytest.param(endpoint, role, code, id=f"{endpoint}-{role}")
             for endpoint, row in GET_TABLE.items() for role, code in zip(ROLES, row)]


@pytest.mark.parametrize(("endpoint", "role", "expected"), GET_CELLS)
def test_get(world, endpoint, role, expected):
    before = snapshot()
    response = client_for(world.users[role]).get(GET_URLS[endpoint](world))
    assert response.status_code == expected, response.content[:300]
    if expected == 302:
        assert response["Location"].startswith(reverse("login"))
    assert snapshot() == before


def test_the_verdict_form_shows_only_to_who_may_decide(world):
    url = GET_URLS["shadow_result"](world)
    verdict = reverse("governance:evaluation_result_verdict", args=[world.shadow_result.run_id, world.shadow_result.pk])
    for role, shown in (("agent", True), ("admin", True), ("compliance", False), ("modelowner", False)):
        body = client_for(world.users[role]).get(url).content.decode()
        assert (verdict in body) is shown, role
        assert "Shadow better" in body or not shown
    body = client_for(world.users["compliance"]).get(url).content.decode()
    assert "Waiting for a reviewer" in body


def test_unknown_ids_answer_404(world):
    client = client_for(world.users["modelowner"])
    assert client.get(reverse("governance:evaluation_report", args=[uuid.uuid4()])).status_code == 404
    assert client.get(reverse("governance:evaluation_progress", args=[uuid.uuid4()])).status_code == 404
    # A result only exists under its own run.
    assert client.get(reverse("governance:evaluation_result", args=[world.shadow_result.run_id,
                                                                    world.result.pk])).status_code == 404


def test_progress_is_a_small_json(world):
    data = client_for(world.users["compliance"]).get(GET_URLS["progress"](world)).json()
    assert data == {"status": "done", "status_label": "Done", "done": 3, "total": 3, "percent": 100,
                    "agreement": pytest.approx(2 / 3, abs=1e-4), "error": "", "finished": True}
    denied = client_for(world.users["agent"]).get(GET_URLS["progress"](world))
    assert denied.status_code == 403 and "error" in denied.json()


# --- POST -------------------------------------------------------------------------------------------

def _new_run_data(w):
    return {"model_version": str(w.model.pk), "prompt_version": str(w.prompt.pk), "kind": "replay",
            "conversations": "12", "intent_cases": "60"}


POSTS = {
    "new": (lambda w: reverse("governance:evaluation_new"), _new_run_data),
    "verdict": (lambda w: reverse("governance:evaluation_result_verdict", args=[w.shadow_result.run_id,
                                                                                w.shadow_result.pk]),
                lambda w: {"outcome": "candidate_better", "note": "Shorter and right", "version": w.item.version}),
}
POST_TABLE = {
    "new":     (302, 403, 403, 403, 403, 403, 302, 302),
    "verdict": (302, 403, 302, 404, 302, 403, 403, 302),
}
POST_CELLS = [pytest.param(endpoint, role, code, id=f"{endpoint}-{role}")
              for endpoint, row in POST_TABLE.items() for role, code in zip(ROLES, row)]


@pytest.mark.parametrize(("endpoint", "role", "expected"), POST_CELLS)
def test_post(world, endpoint, role, expected):
    url, data = POSTS[endpoint]
    before = snapshot()
    response = client_for(world.users[role]).post(url(world), data(world))
    assert response.status_code == expected, response.content[:300]
    if role == "anonymous" or expected >= 400:
        assert snapshot() == before
        return
    if endpoint == "new":
        run = EvaluationRun.objects.exclude(pk__in=[world.run.pk, world.shadow_result.run_id]).get()
        assert response["Location"] == reverse("governance:evaluation_report", args=[run.pk])
        assert (run.kind, run.status, run.params, run.created_by) == ("replay", "queued", {"conversations": 12},
                                                                      world.users[role])
        assert OutboxMessage.objects.filter(task_name="convo.evaluation_run", args=[str(run.pk)]).exists()
    else:
        world.item.refresh_from_db()
        world.shadow_result.refresh_from_db()
        assert (world.item.status, world.item.outcome) == ("resolved", "candidate_better")
        assert world.shadow_result.expected["review"]["by"] == world.users[role].get_username()
        assert response["Location"] == GET_URLS["shadow_result"](world)


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"conversations": "0"}, "conversations", "greater than or equal to 1"),
    ({"conversations": "500"}, "conversations", "less than or equal to 200"),
    ({"conversations": "ten"}, "conversations", "Enter a whole number"),
    ({"conversations": ""}, "conversations", "Enter a number"),
    ({"kind": "shadow"}, "kind", "Select a valid choice"),
    ({"kind": "dataset", "intent_cases": "-1"}, "intent_cases", "greater than or equal to 0"),
    ({"model_version": str(uuid.uuid4())}, "model_version", "Choose one of the listed versions"),
    ({"model_version": "not-an-id"}, "model_version", "Choose one of the listed versions"),
    ({"prompt_version": ""}, "prompt_version", "This field is required"),
])
def test_bad_input_is_a_form_error_and_starts_nothing(world, change, field, message):
    before = snapshot()
    response = client_for(world.users["modelowner"]).post(reverse("governance:evaluation_new"),
                                                          {**_new_run_data(world), **change})
    assert response.status_code == 400
    assert message in str(response.context["form"].errors[field])
    assert message in response.content.decode()
    assert snapshot() == before


def test_the_other_kinds_number_is_ignored(world):
    data = {**_new_run_data(world), "kind": "dataset", "intent_cases": "7", "conversations": "0"}
    response = client_for(world.users["modelowner"]).post(reverse("governance:evaluation_new"), data)
    assert response.status_code == 302
    run = EvaluationRun.objects.get(kind="dataset", status="queued")
    assert run.params == {"intent_cases": 7}


def test_the_form_keeps_the_pair_from_the_link(world):
    body = client_for(world.users["modelowner"]).get(GET_URLS["new"](world)).content.decode()
    assert f'<option value="{world.model.pk}" selected>' in body
    assert f'<option value="{world.prompt.pk}" selected>' in body
    # A link with an unknown or malformed id just selects nothing.
    broken = reverse("governance:evaluation_new") + "?model=nope&prompt=" + str(uuid.uuid4())
    body = client_for(world.users["modelowner"]).get(broken).content.decode()
    assert " selected>" not in body.split('name="kind"')[0]


def test_a_bad_or_stale_verdict_is_refused_with_the_reason(world):
    url, data = POSTS["verdict"]
    agent = client_for(world.users["agent"])
    before = snapshot()
    response = agent.post(url(world), {**data(world), "outcome": "both_fine"})
    assert response.status_code == 400 and "Choose which answer was better" in response.content.decode()
    stale = agent.post(url(world), {**data(world), "version": world.item.version + 5})
    assert stale.status_code == 409 and "changed since you opened it" in stale.content.decode()
    assert "Shorter and right" in stale.content.decode()  # what was typed is kept
    assert snapshot() == before
    assert agent.post(url(world), data(world)).status_code == 302
    again = agent.post(url(world), data(world))
    assert again.status_code == 403  # decided: nothing left to decide


# --- what the pages show, and their queries ---------------------------------------------------------------

def test_the_report_shows_both_sides_of_each_differing_case(world):
    body = client_for(world.users["compliance"]).get(GET_URLS["report"](world)).content.decode()
    assert "67%" in body  # agreement, 2 of 3
    assert "Question number 1?" in body and "Question number 0?" not in body  # only the differing one
    assert "I couldn&#x27;t find that." in body and "Answer 1." in body
    assert "Missed" in body and "Met" in body
    assert reverse("governance:evaluation_new") not in body  # compliance reads only
    everything = client_for(world.users["modelowner"]).get(GET_URLS["report"](world) + "?show=all").content.decode()
    assert "Question number 0?" in everything and "Run again" in everything


def _runs(world, count: int) -> None:
    for _ in range(count):
        make_dataset_run(world.model, world.prompt, world.users["modelowner"], results=2)


def test_list_queries_do_not_grow_with_runs(world, django_assert_num_queries):
    client = client_for(world.users["modelowner"])
    client.get(reverse("governance:evaluation_list"))  # the session and the user are cached per request only
    # session, user, roles, count, the page of runs (candidate, baseline, author joined)
    with django_assert_num_queries(5):
        assert client.get(reverse("governance:evaluation_list")).status_code == 200
    _runs(world, 6)
    with django_assert_num_queries(5):
        response = client.get(reverse("governance:evaluation_list"))
    assert response.content.decode().count('class="ev-run-link"') == 8


def test_report_queries_do_not_grow_with_results(world, django_assert_num_queries):
    big = make_dataset_run(world.model, world.prompt, world.users["modelowner"], results=30)
    client = client_for(world.users["compliance"])
    # session, user, roles, the run (versions and author joined), count of shown results, the page of results
    for run in (world.run, big):
        with django_assert_num_queries(6):
            assert client.get(reverse("governance:evaluation_report", args=[run.pk]) + "?show=all").status_code == 200
