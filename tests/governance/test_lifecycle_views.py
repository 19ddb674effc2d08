"""The version lifecycle through the model owners' pages: create, submit, four eyes, evidence,
activation for the next turn, rollback, A/B and shadow, refusals shown with their reason (nothing
changed, refusal audited), form errors that keep what was typed, the technical documentation, and
a query count for the overview that does not grow with the number of versions."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from governance import lifecycle
from governance.models import (
    AuditEvent,
    Deployment,
    DeploymentRole,
    EvaluationRun,
    ModelVersion,
    PromptVersion,
    RunKind,
    RunStatus,
    VersionEvent,
    VersionStatus,
)
from governance.routing import assistant_routing

pytestmark = pytest.mark.django_db

SUMMARY = {
    "cases": 40, "agreement": 0.925, "differing": 3,
    "escalation": {"both": 5, "baseline_only": 1, "candidate_only": 0, "neither": 34},
    "actions": {"same": 12, "differ": 1, "baseline_only": 0, "candidate_only": 1, "neither": 26},
    "baseline": {"groundedness": 0.95, "accuracy": 0.85, "latency_p50_ms": 212.0, "latency_p95_ms": 480.5,
                 "cost": "0.001200", "tokens": 18250},
    "candidate": {"groundedness": 0.975, "accuracy": 0.9, "latency_p50_ms": 180.2, "latency_p95_ms": 401.0,
                  "cost": "0.000900", "tokens": 9120},
}

MODEL_FORM = {
    "name": "offline-brief", "description": "One sentence answers", "provider": "offline",
    "model_name": "extractive-v1", "endpoint": "", "api_key_env": "", "parameters": '{"max_sentences": 1}',
    "cost_per_1k_input": "0", "cost_per_1k_output": "0", "risk_level": "low",
    "intended_use": "Short answers to delivery questions", "limitations": "English only",
}


# --- helpers (also used by the API and matrix tests) ---------------------------------------------

def finished_run(model_version, prompt_version, author=None, *, kind=RunKind.DATASET, summary=None) -> EvaluationRun:
    """A finished evaluation run written directly (the runner is someone else's)."""
    return EvaluationRun.objects.create(kind=kind, status=RunStatus.DONE, candidate_model=model_version,
                                        candidate_prompt=prompt_version, created_by=author, total=40, done=40,
                                        summary=summary if summary is not None else SUMMARY,
                                        started_at=timezone.now(), finished_at=timezone.now())


def concise_model(author, name="offline-brief", **fields) -> ModelVersion:
    return lifecycle.model_version_create(actor=author, name=name, provider="offline", model_name="extractive-v1",
                                          parameters=fields.pop("parameters", {"max_sentences": 1}),
                                          intended_use="Short answers", limitations="English only", **fields)


def approved_model(author, approver, prompt_version, name="offline-brief") -> ModelVersion:
    version = concise_model(author, name=name)
    lifecycle.version_submit(actor=author, version=version)
    run = finished_run(version, prompt_version, author)
    return lifecycle.version_approve(actor=approver, version=version, reason="Evaluated", evidence_run_ids=[run.pk])


def refusals(code: str) -> int:
    return AuditEvent.objects.filter(action="version.refused", data__code=code).count()


def url(name: str, *args) -> str:
    return reverse(f"governance:{name}", args=args)


@pytest.fixture
def owners(users):
    return users["modelowner"], users["modelowner2"]


@pytest.fixture
def live(say):
    """The runtime registered as the active pair by the first turn."""
    say("How long do refunds take?")
    return assistant_routing().primary


def _text(response) -> str:
    return response.content.decode()


# --- the whole flow ------------------------------------------------------------------------------

def test_create_submit_four_eyes_approve_activate_and_roll_back_through_the_pages(client, owners, live, say):
    author, approver = owners
    client.force_login(author)
    assert client.get(url("versions_new", "model")).status_code == 200
    response = client.post(url("versions_new", "model"), MODEL_FORM)
    version = ModelVersion.objects.get(name="offline-brief")
    assert response.status_code == 302 and response["Location"] == url("versions_detail", "model", version.pk)
    assert (version.status, version.created_by, version.parameters) == (VersionStatus.DRAFT, author,
                                                                        {"max_sentences": 1})
    assert version.intended_use == "Short answers to delivery questions"

    response = client.post(url("versions_submit", "model", version.pk), follow=True)
    assert "is submitted for approval" in _text(response)
    version.refresh_from_db()
    assert version.status == VersionStatus.SUBMITTED
    run = finished_run(version, live.prompt_version, author)

    # The author may not decide: the page says why, nothing changes, the refusal is audited.
    page = _text(client.get(url("versions_detail", "model", version.pk)))
    assert "another model owner must approve or reject it" in page and 'name="evidence"' not in page
    response = client.post(url("versions_approve", "model", version.pk),
                           {"reason": "I checked it myself", "evidence": [str(run.pk)]})
    assert response.status_code == 403
    assert "another model owner must decide on it (four eyes)" in _text(response)
    version.refresh_from_db()
    assert (version.status, version.approved_by) == (VersionStatus.SUBMITTED, None)
    assert refusals("own_version") == 1
    assert not VersionEvent.objects.filter(model_version=version, kind="approved").exists()

    # Another owner sees the finished run as evidence; a missing reason or evidence is refused.
    client.force_login(approver)
    page = _text(client.get(url("versions_detail", "model", version.pk)))
    assert f'value="{run.pk}"' in page and "92.5 %" in page
    response = client.post(url("versions_approve", "model", version.pk), {"reason": " ", "evidence": [str(run.pk)]})
    assert response.status_code == 400 and "Write the reason for your decision." in _text(response)
    response = client.post(url("versions_approve", "model", version.pk), {"reason": "Grounded on 40/40"})
    assert response.status_code == 400 and "Attach the evidence" in _text(response)
    assert "Grounded on 40/40</textarea>" in _text(response)  # what was typed is kept
    assert refusals("reason_required") == 1 and refusals("evidence_required") == 1
    version.refresh_from_db()
    assert version.status == VersionStatus.SUBMITTED

    response = client.post(url("versions_approve", "model", version.pk),
                           {"reason": "Grounded on 40/40", "evidence": [str(run.pk)]}, follow=True)
    assert "is approved" in _text(response)
    version.refresh_from_db()
    assert (version.status, version.approved_by) == (VersionStatus.APPROVED, approver)
    approval = VersionEvent.objects.get(model_version=version, kind="approved")
    assert approval.reason == "Grounded on 40/40" and list(approval.evidence.all()) == [run]
    page = _text(client.get(url("versions_detail", "model", version.pk)))
    assert f'evaluations/{run.pk}/' in page and "Grounded on 40/40" in page

    # Activation: one click with the live prompt; the next turn uses it.
    response = client.post(url("versions_activate", "model", version.pk),
                           {"partner": str(live.prompt_version_id), "reason": "Shorter answers"})
    assert response.status_code == 302 and response["Location"] == url("versions_overview")
    turn = say("How long do refunds take?")
    assert turn.model_version == version and turn.prompt_version == live.prompt_version
    overview = _text(client.get(url("versions_overview")))
    assert f"Roll back to {live.model_version.label} + {live.prompt_version.label}" in overview

    # Rollback: a confirmation with the reason; an empty reason changes nothing.
    page = _text(client.get(url("deployment_rollback")))
    assert live.model_version.label in page and "Roll back now" in page
    response = client.post(url("deployment_rollback"), {"reason": ""})
    assert response.status_code == 400 and "Write the reason for the rollback." in _text(response)
    assert assistant_routing().primary.model_version == version
    response = client.post(url("deployment_rollback"), {"reason": "Answers too short"}, follow=True)
    assert f"Rolled back: {live.model_version.label}" in _text(response)
    assert say("How long do refunds take?").model_version_id == live.model_version_id
    version.refresh_from_db()
    assert version.status == VersionStatus.RETIRED
    assert AuditEvent.objects.filter(action="model_version.rolled_back", target_id=str(live.model_version_id),
                                     actor_id=str(approver.pk)).exists()


def test_editing_a_submitted_version_is_refused_and_offers_a_new_version(client, owners, live):
    author, _ = owners
    client.force_login(author)
    version = concise_model(author)
    form = {**MODEL_FORM, "limitations": "English and French"}
    response = client.post(url("versions_edit", "model", version.pk), form)
    assert response.status_code == 302
    version.refresh_from_db()
    assert version.limitations == "English and French"
    lifecycle.version_submit(actor=author, version=version)

    page = _text(client.get(url("versions_edit", "model", version.pk)))
    assert "This version can no longer change" in page and "Create a new version from this" in page
    response = client.post(url("versions_edit", "model", version.pk), {**form, "parameters": '{"max_sentences": 5}'})
    assert response.status_code == 409
    assert "can no longer change; create a new version from it instead" in _text(response)
    version.refresh_from_db()
    assert version.parameters == {"max_sentences": 1} and version.status == VersionStatus.SUBMITTED
    assert refusals("immutable") == 1

    response = client.post(url("versions_derive", "model", version.pk))
    new = ModelVersion.objects.get(name=version.name, version=2)
    assert response.status_code == 302 and response["Location"] == url("versions_edit", "model", new.pk)
    assert (new.status, new.parameters, new.limitations) == (VersionStatus.DRAFT, {"max_sentences": 1},
                                                             "English and French")
    assert client.get(url("versions_edit", "model", new.pk)).status_code == 200


def test_activating_an_unapproved_version_is_refused(client, owners, live):
    author, _ = owners
    client.force_login(author)
    version = concise_model(author)
    page = _text(client.get(url("versions_detail", "model", version.pk)))
    assert "Activate for every conversation" not in page  # a draft offers no deployment
    for step in (None, "submit"):
        if step:
            lifecycle.version_submit(actor=author, version=version)
        response = client.post(url("versions_activate", "model", version.pk),
                               {"partner": str(live.prompt_version_id), "reason": "try"})
        assert response.status_code == 409
        assert "only approved versions can be deployed" in _text(response)
    assert assistant_routing().primary.pk == live.pk
    assert refusals("not_approved") == 2


def test_form_errors_say_what_is_wrong_and_keep_what_was_typed(client, owners):
    author, _ = owners
    prompts = PromptVersion.objects.count()
    client.force_login(author)
    cases = [
        ({"parameters": "{max_sentences: 1"}, "This is not valid JSON"),
        ({"parameters": '{"temperature": 0.2}'}, "Unknown parameter &#x27;temperature&#x27; for this provider"),
        ({"parameters": '{"max_sentences": "two"}'}, "max_sentences must be a whole number."),
        ({"parameters": "[1, 2]"}, "Parameters must be a JSON object"),
        ({"provider": "openai", "endpoint": ""}, "An OpenAI-compatible model needs its endpoint"),
        ({"provider": "openai", "endpoint": "ftp://models.example"}, "The endpoint must be an http(s) URL"),
        ({"name": "has spaces"}, "A name is 1 to 120 letters"),
        ({"cost_per_1k_input": "-1"}, "greater than or equal to 0"),
        ({"api_key_env": "my key"}, "An environment variable name"),
    ]
    for change, message in cases:
        response = client.post(url("versions_new", "model"), {**MODEL_FORM, **change})
        assert response.status_code == 400, change
        text = _text(response)
        assert message in text, (change, text[:3000])
        assert "Short answers to delivery questions</textarea>" in text  # nothing typed is lost
    assert not ModelVersion.objects.filter(name="offline-brief").exists()

    response = client.post(url("versions_new", "prompt"), {"name": "customer-assistant", "tools_mode": "all",
                                                           "template": "Answer kindly, {name}."})
    text = _text(response)
    assert response.status_code == 400 and "The template must include {sources}" in text
    assert "{name}: the assistant fills in only {company} and {sources}" in text
    response = client.post(url("versions_new", "prompt"), {"name": "customer-assistant", "tools_mode": "listed",
                                                           "tools": "", "template": "Use {sources}."})
    assert response.status_code == 400 and "Name at least one action" in _text(response)
    assert PromptVersion.objects.count() == prompts


def test_a_prompt_version_through_the_pages(client, owners, live, say):
    author, approver = owners
    client.force_login(author)
    template = "You help customers of {company}. Cite sources like [1].\n\nSources:\n{sources}"
    response = client.post(url("versions_new", "prompt"), {
        "name": live.prompt_version.name, "description": "Plainer", "template": template, "variables": "",
        "tools_mode": "listed", "tools": "refund_order\nchange_address"})
    prompt = PromptVersion.objects.get(name=live.prompt_version.name, version=live.prompt_version.version + 1)
    assert response.status_code == 302
    assert (prompt.variables, prompt.tools, prompt.status) == (["company", "sources"],
                                                               ["refund_order", "change_address"], "draft")
    page = _text(client.get(url("versions_detail", "prompt", prompt.pk)))
    assert '<pre class="code-block" aria-label="Template">You help customers of {company}.' in page
    assert f"evaluations/new/?model={live.model_version_id}&amp;prompt={prompt.pk}" in page

    lifecycle.version_submit(actor=author, version=prompt)
    run = finished_run(live.model_version, prompt, author, kind=RunKind.REPLAY)
    client.force_login(approver)
    client.post(url("versions_approve", "prompt", prompt.pk), {"reason": "Clearer", "evidence": [str(run.pk)]})
    response = client.post(url("versions_activate", "prompt", prompt.pk),
                           {"partner": str(live.model_version_id), "reason": "New wording"})
    assert response.status_code == 302
    assert say("Do you ship abroad?").prompt_version == prompt


def test_ab_split_and_shadow_through_the_pages(client, owners, live):
    author, approver = owners
    version = approved_model(author, approver, live.prompt_version)
    client.force_login(author)
    pair = {"partner": str(live.prompt_version_id), "reason": "Try it on a fifth"}
    response = client.post(url("versions_split", "model", version.pk), {**pair, "percent": "many"})
    assert response.status_code == 400 and "The share is a whole percentage." in _text(response)
    response = client.post(url("versions_split", "model", version.pk), {**pair, "percent": "100"})
    assert response.status_code == 400 and "between 1 and 99" in _text(response)
    response = client.post(url("versions_split", "model", version.pk), {**pair, "partner": ""})
    assert response.status_code == 400 and "Choose the version to pair it with." in _text(response)
    assert not Deployment.objects.filter(role=DeploymentRole.SPLIT).exists()
    response = client.post(url("versions_split", "model", version.pk), {**pair, "percent": "20"}, follow=True)
    assert "A/B test started: 20 % of conversations" in _text(response)
    split = Deployment.objects.get(role=DeploymentRole.SPLIT, ended_at__isnull=True)
    assert split.traffic_percent == 20 and split.model_version == version
    overview = _text(client.get(url("versions_overview")))
    assert "A/B variant · 20 % of conversations" in overview and "Active · 80 % of conversations" in overview
    response = client.post(url("versions_split", "model", version.pk), {**pair, "percent": "10"})
    assert response.status_code == 409 and "This pair is already deployed." in _text(response)

    # A submitted version may run in shadow to collect evidence; its run is linked.
    candidate = concise_model(approver, name="offline-strict", parameters={"min_score": 0.5})
    lifecycle.version_submit(actor=approver, version=candidate)
    response = client.post(url("versions_shadow", "model", candidate.pk), pair)
    assert response.status_code == 302
    shadow = Deployment.objects.get(role=DeploymentRole.SHADOW, ended_at__isnull=True)
    shadow_run = EvaluationRun.objects.get(deployment=shadow)
    overview = _text(client.get(url("versions_overview")))
    assert f"evaluations/{shadow_run.pk}/" in overview and "Shadow evaluation" in overview

    response = client.post(url("deployment_end", shadow.pk), {"reason": "Enough evidence"}, follow=True)
    assert "The shadow of offline-strict v1" in _text(response)
    shadow.refresh_from_db()
    shadow_run.refresh_from_db()
    assert shadow.ended_by == author and shadow_run.status == RunStatus.DONE
    response = client.post(url("deployment_end", shadow.pk))
    assert response.status_code == 409 and "already ended" in _text(response)
    response = client.post(url("deployment_end", live.pk))
    assert response.status_code == 409 and "The active version cannot be stopped" in _text(response)
    client.post(url("deployment_end", split.pk))
    assert not Deployment.objects.filter(role__in=["split", "shadow"], ended_at__isnull=True).exists()


def test_retiring_takes_a_version_out_of_service_with_a_reason(client, owners, live):
    author, approver = owners
    version = approved_model(author, approver, live.prompt_version)
    client.force_login(approver)
    response = client.post(url("versions_retire", "model", version.pk), {"reason": ""})
    assert response.status_code == 400 and "Write the reason for retiring this version." in _text(response)
    response = client.post(url("versions_retire", "model", version.pk), {"reason": "Superseded"})
    assert response.status_code == 302
    version.refresh_from_db()
    assert version.status == VersionStatus.RETIRED
    response = client.post(url("versions_retire", "model", live.model_version_id), {"reason": "No"})
    assert response.status_code == 409 and "is the active version" in _text(response)


def test_technical_documentation_is_generated_from_the_model_card_and_the_records(client, owners, users, live, say):
    author, approver = owners
    version = approved_model(author, approver, live.prompt_version)
    lifecycle.deployment_activate(actor=approver, model_version=version, prompt_version=live.prompt_version,
                                  reason="Shorter answers")
    say("How long do refunds take?")
    version.refresh_from_db()

    client.force_login(users["compliance"])
    response = client.get(url("versions_documentation", "model", version.pk))
    assert response.status_code == 200
    page = _text(response)
    for expected in ("Technical documentation", "offline-brief, version 1", "Offline (extractive, no network)",
                     "<code>max_sentences</code> = 1", "Short answers", "English only", "Declared risk level",
                     live.prompt_version.label, "Agreement", "92.5 %", "97.5 %", "401 ms", "0.0009",
                     "Approved", "Evaluated", "who is not its author (four eyes)", "Shorter answers",
                     "Human oversight", "hash-chained", "Customer turns recorded with it</th><td>1</td>",
                     "governance.css", "Print or save as PDF"):
        assert expected in page, expected
    assert approver.get_full_name() in page or approver.get_username() in page

    prompt_doc = client.get(url("versions_documentation", "prompt", live.prompt_version_id))
    assert prompt_doc.status_code == 200 and "Models it has been deployed with" in _text(prompt_doc)
    assert "Registered from the runtime configuration" in _text(prompt_doc)
    client.force_login(users["agent"])
    assert client.get(url("versions_documentation", "model", version.pk)).status_code == 403


def test_compliance_officers_read_the_pages_without_forms(client, owners, users, live):
    author, approver = owners
    version = concise_model(author)
    lifecycle.version_submit(actor=author, version=version)
    client.force_login(users["compliance"])
    for page_url in (url("versions_overview"), url("versions_detail", "model", version.pk)):
        response = client.get(page_url)
        assert response.status_code == 200
        assert "<form method=\"post\"" not in _text(response).split("</header>", 1)[1]
    assert "Submitted for approval" in _text(client.get(url("versions_overview")))


# --- query counts ------------------------------------------------------------------------------------

# Session, user, roles; live deployments, their shadow runs, the rollback target (2), model and prompt
# versions.
OVERVIEW_QUERIES = 9


@pytest.mark.parametrize("extra", [1, 6])
def test_overview_query_count_does_not_grow_with_versions(client, owners, live, extra, django_assert_num_queries):
    author, approver = owners
    version = approved_model(author, approver, live.prompt_version)
    lifecycle.deployment_split_start(actor=author, model_version=version, prompt_version=live.prompt_version,
                                     percent=10)
    candidate = concise_model(approver, name="offline-shadow")
    lifecycle.version_submit(actor=approver, version=candidate)
    lifecycle.deployment_shadow_start(actor=author, model_version=candidate, prompt_version=live.prompt_version)
    for n in range(extra):
        draft = concise_model(author if n % 2 else approver, name=f"offline-extra-{n}")
        if n % 3 == 0:
            lifecycle.version_submit(actor=draft.created_by, version=draft)
        lifecycle.prompt_version_create(actor=author, name=f"prompt-extra-{n}", template="Use {sources}.")
    models, prompts = ModelVersion.objects.count(), PromptVersion.objects.count()
    client.force_login(author)
    with django_assert_num_queries(OVERVIEW_QUERIES):
        response = client.get(url("versions_overview"))
    assert response.status_code == 200
    context = response.context
    assert (len(context["model_versions"]), len(context["prompt_versions"])) == (models, prompts)
    assert models >= 3 + extra and prompts == 1 + extra
    assert [d.traffic_percent for d in context["splits"]] == [10] and len(context["shadows"]) == 1
    assert context["shadows"][0].shadow_run is not None
    assert candidate in context["waiting"]
    assert context["primary"].pk == live.pk and context["rollback_target"] is None
