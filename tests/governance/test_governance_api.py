"""The governance API: the lifecycle end to end (four eyes, evidence, activation for the next turn,
rollback), refusals with their reason and code (nothing changed, refusal audited), bodies it
cannot read, unknown ids, and list endpoints whose query count does not grow with their rows."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from governance import lifecycle
from governance.models import (
    AuditEvent,
    Deployment,
    DeploymentRole,
    EvaluationRun,
    ModelVersion,
    PromptVersion,
    RunStatus,
    VersionEvent,
    VersionStatus,
)
from governance.routing import assistant_routing
from tests.governance.test_lifecycle_views import SUMMARY, approved_model, concise_model, finished_run, refusals

pytestmark = pytest.mark.django_db

NEW_MODEL = {"name": "offline-brief", "provider": "offline", "model_name": "extractive-v1",
             "parameters": {"max_sentences": 1}, "risk_level": "low", "intended_use": "Short answers",
             "limitations": "English only", "cost_per_1k_input": "0.000150", "cost_per_1k_output": 0}


def api(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)  # session authentication, as the pages
    return client


def url(name: str, *args, **kwargs) -> str:
    return reverse(name, args=args, kwargs=kwargs or None)


def act(kind: str, version, action: str) -> str:
    return url(f"api-governance-{kind}-version-act", pk=str(version.pk), action=action)


@pytest.fixture
def owners(users):
    return users["modelowner"], users["modelowner2"]


@pytest.fixture
def live(say):
    say("How long do refunds take?")
    return assistant_routing().primary


def test_the_lifecycle_through_the_api(owners, live, say):
    author, approver = owners
    client = api(author)
    response = client.post(url("api-governance-model-versions"), NEW_MODEL, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    version = ModelVersion.objects.get(pk=body["id"])
    assert (body["kind"], body["label"], body["status"], body["created_by"]) == ("model", "offline-brief v1",
                                                                                 "draft", "modelowner")
    assert body["parameters"] == {"max_sentences": 1} and body["cost_per_1k_input"] == "0.000150"
    assert body["url"] == reverse("governance:versions_detail", args=["model", version.pk])
    assert [e["kind"] for e in body["events"]] == ["created"]

    response = client.patch(url("api-governance-model-version", pk=version.pk),
                            {"limitations": "English and French"}, format="json")
    assert response.status_code == 200 and response.json()["limitations"] == "English and French"
    assert client.post(act("model", version, "submit")).json()["status"] == "submitted"

    # Frozen: a PATCH is refused with 409, nothing changes, the refusal is audited.
    response = client.patch(url("api-governance-model-version", pk=version.pk), {"parameters": {"max_sentences": 3}},
                            format="json")
    assert response.status_code == 409 and response.json()["code"] == "immutable"
    assert "create a new version from it instead" in response.json()["detail"]
    version.refresh_from_db()
    assert version.parameters == {"max_sentences": 1} and refusals("immutable") == 1

    run = finished_run(version, live.prompt_version, author)
    # Four eyes: the author's approval is refused.
    response = client.post(act("model", version, "approve"), {"reason": "mine", "evidence": [str(run.pk)]},
                           format="json")
    assert response.status_code == 403
    assert response.json() == {"detail": "You wrote this version: another model owner must decide on it (four eyes).",
                                "code": "own_version"}
    version.refresh_from_db()
    assert version.status == VersionStatus.SUBMITTED and refusals("own_version") == 1

    other = api(approver)
    response = other.post(act("model", version, "approve"), {"reason": "", "evidence": [str(run.pk)]}, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "reason_required")
    response = other.post(act("model", version, "approve"), {"reason": "Grounded"}, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "evidence_required")
    unfinished = EvaluationRun.objects.create(kind="replay", status=RunStatus.RUNNING, candidate_model=version,
                                              candidate_prompt=live.prompt_version)
    response = other.post(act("model", version, "approve"), {"reason": "Grounded", "evidence": [str(unfinished.pk)]},
                          format="json")
    assert (response.status_code, response.json()["code"]) == (400, "evidence_required")
    version.refresh_from_db()
    assert version.status == VersionStatus.SUBMITTED

    response = other.post(act("model", version, "approve"), {"reason": "Grounded", "evidence": [str(run.pk)]},
                          format="json")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["approved_by"]) == ("approved", "modelowner2")
    assert body["events"][-1]["kind"] == "approved" and body["events"][-1]["evidence"] == [str(run.pk)]
    runs = {r["id"]: r for r in body["evaluation_runs"]}
    assert runs[str(run.pk)]["summary"] == SUMMARY and runs[str(run.pk)]["url"].endswith(f"evaluations/{run.pk}/")

    response = other.post(url("api-governance-deployments-activate"),
                          {"model_version": str(version.pk), "prompt_version": str(live.prompt_version_id),
                           "reason": "Shorter answers"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["role"] == "primary" and response.json()["model_version"]["id"] == str(version.pk)
    assert say("How long do refunds take?").model_version == version
    response = other.post(url("api-governance-deployments-activate"),
                          {"model_version": str(version.pk), "prompt_version": str(live.prompt_version_id),
                           "reason": "again"}, format="json")
    assert (response.status_code, response.json()["code"]) == (409, "already_active")

    listing = other.get(url("api-governance-deployments")).json()
    assert [d["model_version"]["label"] for d in listing["live"]] == ["offline-brief v1"]
    assert listing["count"] == 2 and listing["results"][1]["ended_at"] is not None

    response = other.post(url("api-governance-deployments-rollback"), {"reason": ""}, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "reason_required")
    response = other.post(url("api-governance-deployments-rollback"), {"reason": "Too short"}, format="json")
    assert response.status_code == 201 and response.json()["model_version"]["id"] == str(live.model_version_id)
    assert say("How long do refunds take?").model_version_id == live.model_version_id
    assert AuditEvent.objects.filter(action="model_version.rolled_back", actor_id=str(approver.pk)).exists()

    response = other.post(act("model", version, "derive"))
    assert response.status_code == 201
    assert (response.json()["version"], response.json()["status"]) == (2, "draft")


def test_activating_an_unapproved_version_is_refused(owners, live):
    author, _ = owners
    version = concise_model(author)
    client = api(author)
    payload = {"model_version": str(version.pk), "prompt_version": str(live.prompt_version_id), "reason": "try"}
    for step in (None, "submit"):
        if step:
            lifecycle.version_submit(actor=author, version=version)
        response = client.post(url("api-governance-deployments-activate"), payload, format="json")
        assert (response.status_code, response.json()["code"]) == (409, "not_approved")
        assert "only approved versions can be deployed" in response.json()["detail"]
    assert assistant_routing().primary.pk == live.pk and refusals("not_approved") == 2


def test_prompt_versions_through_the_api(owners, live):
    author, approver = owners
    client = api(author)
    template = "You help customers of {company}.\n\nSources:\n{sources}"
    response = client.post(url("api-governance-prompt-versions"),
                           {"name": "customer-assistant", "template": template, "tools": []}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["variables"], body["tools"], body["version"]) == (["company", "sources"], [], 2)
    prompt = PromptVersion.objects.get(pk=body["id"])
    response = client.patch(url("api-governance-prompt-version", pk=prompt.pk),
                            {"template": "Only {sources}.", "tools": None}, format="json")
    assert response.status_code == 200
    assert (response.json()["variables"], response.json()["tools"]) == (["sources"], None)
    response = client.patch(url("api-governance-prompt-version", pk=prompt.pk), {"template": "No sources"},
                            format="json")
    assert response.status_code == 400 and "must include {sources}" in response.json()["errors"]["template"]
    prompt.refresh_from_db()
    assert prompt.template == "Only {sources}."


def test_split_shadow_and_end_through_the_api(owners, live):
    author, approver = owners
    version = approved_model(author, approver, live.prompt_version)
    client = api(author)
    pair = {"model_version": str(version.pk), "prompt_version": str(live.prompt_version_id), "reason": "try"}
    response = client.post(url("api-governance-deployments-split"), {**pair, "percent": 100}, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "invalid")
    response = client.post(url("api-governance-deployments-split"), {**pair, "percent": "20"}, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "invalid")
    response = client.post(url("api-governance-deployments-split"), {**pair, "percent": 20}, format="json")
    assert response.status_code == 201 and response.json()["traffic_percent"] == 20
    split = Deployment.objects.get(pk=response.json()["id"])
    response = client.post(url("api-governance-deployments-split"), {**pair, "percent": 5}, format="json")
    assert (response.status_code, response.json()["code"]) == (409, "already_deployed")

    candidate = concise_model(approver, name="offline-strict")
    lifecycle.version_submit(actor=approver, version=candidate)
    response = client.post(url("api-governance-deployments-shadow"), {**pair, "model_version": str(candidate.pk)},
                           format="json")
    assert response.status_code == 201 and response.json()["role"] == "shadow"
    shadow = Deployment.objects.get(pk=response.json()["id"])
    assert EvaluationRun.objects.get(deployment=shadow).status == RunStatus.RUNNING

    live_roles = [d["role"] for d in client.get(url("api-governance-deployments")).json()["live"]]
    assert live_roles == ["primary", "split", "shadow"]
    response = client.post(url("api-governance-deployment-end", pk=str(shadow.pk)), {"reason": "done"}, format="json")
    assert response.status_code == 200 and response.json()["live"] is False
    assert EvaluationRun.objects.get(deployment=shadow).status == RunStatus.DONE
    response = client.post(url("api-governance-deployment-end", pk=str(live.pk)), format="json")
    assert (response.status_code, response.json()["code"]) == (409, "primary")
    # Retiring the version ends its A/B variant.
    response = client.post(act("model", version, "retire"), {"reason": "Superseded"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "retired"
    response = client.post(url("api-governance-deployment-end", pk=str(split.pk)), format="json")
    assert (response.status_code, response.json()["code"]) == (409, "already_ended")
    assert not Deployment.objects.filter(role__in=[DeploymentRole.SPLIT, DeploymentRole.SHADOW],
                                         ended_at__isnull=True).exists()


def test_bodies_the_api_cannot_read_are_400_with_the_reason(owners, live):
    author, _ = owners
    client = api(author)
    before = (ModelVersion.objects.count(), VersionEvent.objects.count(), Deployment.objects.count())
    cases = [
        (["not", "an", "object"], "The body must be a JSON object.", None),
        ({**NEW_MODEL, "status": "approved"}, "Unknown field status", None),
        ({**NEW_MODEL, "name": ""}, None, "name"),
        ({**NEW_MODEL, "provider": "anthropic"}, None, "provider"),
        ({**NEW_MODEL, "parameters": {"temperature": 2}}, None, "parameters"),
        ({**NEW_MODEL, "parameters": {"max_sentences": 0}}, None, "parameters"),
        ({**NEW_MODEL, "provider": "openai"}, None, "endpoint"),
        ({**NEW_MODEL, "cost_per_1k_input": "-1"}, None, "cost_per_1k_input"),
        ({**NEW_MODEL, "cost_per_1k_input": True}, None, "cost_per_1k_input"),
        ({**NEW_MODEL, "risk_level": "extreme"}, None, "risk_level"),
        ({**NEW_MODEL, "model_name": 5}, None, "model_name"),
    ]
    for body, detail, field in cases:
        response = client.post(url("api-governance-model-versions"), body, format="json")
        assert response.status_code == 400, body
        assert response.json()["code"] == "invalid"
        if detail:
            assert detail in response.json()["detail"]
        if field:
            assert field in response.json()["errors"], response.json()
    response = client.post(url("api-governance-model-versions"), "{not json", content_type="application/json")
    assert response.status_code == 400

    version = concise_model(author)
    lifecycle.version_submit(actor=author, version=version)
    response = client.post(act("model", version, "approve"), {"reason": "ok", "evidence": "all"}, format="json")
    assert response.json()["detail"] == "evidence must be a list of evaluation run ids."
    response = client.post(act("model", version, "approve"), {"reason": "ok", "evidence": ["nope"]}, format="json")
    assert response.status_code == 400
    response = client.post(url("api-governance-deployments-activate"), {"reason": "x"}, format="json")
    assert response.status_code == 400 and "model_version is required" in response.json()["detail"]
    response = client.post(url("api-governance-deployments-activate"),
                           {"model_version": str(uuid.uuid4()), "prompt_version": str(live.prompt_version_id)},
                           format="json")
    assert response.status_code == 404 and response.json()["detail"] == "No model version with that id."
    assert client.get(url("api-governance-model-version", pk=uuid.uuid4())).status_code == 404
    assert client.post(f"/api/governance/model-versions/{'-' * 36}/submit/").status_code == 404
    assert client.post(f"/api/governance/prompt-versions/{uuid.uuid4()}/submit").status_code == 404
    assert client.post(f"/api/governance/deployments/{uuid.uuid4()}/end").status_code == 404
    assert client.get(url("api-governance-model-versions") + "?status=live").status_code == 400
    assert (ModelVersion.objects.count(), Deployment.objects.count()) == (before[0] + 1, before[2])


# --- list endpoints: exact query counts --------------------------------------------------------------

# Session, user, roles; then the page's count and rows (people joined).
LIST_QUERIES = 5


@pytest.mark.parametrize("extra", [1, 5])
def test_version_lists_query_count_does_not_grow(owners, live, extra, django_assert_num_queries):
    author, approver = owners
    for n in range(extra):
        version = concise_model(author if n % 2 else approver, name=f"offline-{n}")
        if n % 2:
            lifecycle.version_submit(actor=author, version=version)
        lifecycle.prompt_version_create(actor=author, name=f"prompt-{n}", template="Use {sources}.")
    client = api(author)
    for name, model in (("api-governance-model-versions", ModelVersion), ("api-governance-prompt-versions",
                                                                         PromptVersion)):
        with django_assert_num_queries(LIST_QUERIES):
            response = client.get(url(name))
        assert response.status_code == 200
        assert response.json()["count"] == model.objects.count() == len(response.json()["results"])
    submitted = client.get(url("api-governance-model-versions") + "?status=submitted").json()
    assert {v["status"] for v in submitted["results"]} == {"submitted"}
    assert submitted["count"] == ModelVersion.objects.filter(status="submitted").count()


# Session, user, roles; the live deployments; the history's count and rows.
DEPLOYMENT_QUERIES = 6


@pytest.mark.parametrize("variants", [1, 3])
def test_deployment_list_query_count_does_not_grow(owners, live, variants, django_assert_num_queries):
    author, approver = owners
    for n in range(variants):
        version = approved_model(author, approver, live.prompt_version, name=f"offline-{n}")
        lifecycle.deployment_split_start(actor=author, model_version=version, prompt_version=live.prompt_version,
                                         percent=10)
    client = api(approver)
    with django_assert_num_queries(DEPLOYMENT_QUERIES):
        response = client.get(url("api-governance-deployments"))
    assert response.status_code == 200
    body = response.json()
    assert len(body["live"]) == 1 + variants == body["count"] == len(body["results"])
    assert body["live"][0]["role"] == "primary" and body["live"][0]["from_configuration"] is True
