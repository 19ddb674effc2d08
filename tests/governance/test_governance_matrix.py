"""Every role × every governance page and API endpoint of versions and deployments, GET and POST.

The rule: model owners and administrators read and act; compliance officers read every page and
API (GET 200) and change nothing (forms 403, POSTs 403); agents and supervisors get 403 on
everything; anonymous visitors are sent to sign in (pages) or refused (API 403). A refused write
changes nothing: each one is checked against a snapshot of every row a write could touch. An
allowed write is checked to have changed something, so the cell cannot pass by doing nothing.

Each endpoint is its own test (``endpoint`` for reads, ``endpoint-owner`` for writes, which first
check that every other role is refused), with one world per test: the demo's active
pair (the runtime registered at load), a second pair that was active before it (so there is
something to roll back to), a draft, a version submitted by another owner with a finished run,
an approved version to deploy or retire, a running shadow, and a draft prompt."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from governance import lifecycle
from governance.models import (
    AuditEvent,
    Deployment,
    EvaluationRun,
    ModelVersion,
    PromptVersion,
    VersionEvent,
)
from governance.routing import assistant_routing
from tests.governance.test_lifecycle_views import MODEL_FORM, approved_model, concise_model, finished_run

pytestmark = [pytest.mark.django_db]

ROLES = ["anonymous", "agent", "supervisor", "compliance", "modelowner", "admin"]
OWNERS = {"modelowner", "admin"}
REFUSED = ["anonymous", "agent", "supervisor", "compliance"]
READERS = OWNERS | {"compliance"}
TEMPLATE = "You help customers of {company}.\n\nSources:\n{sources}"


@dataclass
class World:
    live: Deployment          # the active pair
    draft: ModelVersion       # modelowner's draft
    submitted: ModelVersion   # modelowner2's, submitted, with a finished run; also in shadow
    run: EvaluationRun
    approved: ModelVersion    # approved, not deployed
    shadow: Deployment
    prompt: PromptVersion     # a draft prompt
    users: dict


@pytest.fixture
def world(users) -> World:
    owner, other = users["modelowner"], users["modelowner2"]
    boot = assistant_routing().primary  # registered by the demo loader
    first = approved_model(other, owner, boot.prompt_version, name="offline-first")
    live = lifecycle.deployment_activate(actor=owner, model_version=first, prompt_version=boot.prompt_version,
                                         reason="Before the matrix")
    draft = concise_model(owner, name="offline-draft")
    submitted = concise_model(other, name="offline-submitted")
    lifecycle.version_submit(actor=other, version=submitted)
    run = finished_run(submitted, boot.prompt_version, other)
    shadow = lifecycle.deployment_shadow_start(actor=other, model_version=submitted,
                                               prompt_version=boot.prompt_version, reason="Evidence")
    approved = approved_model(other, owner, boot.prompt_version, name="offline-approved")
    prompt = lifecycle.prompt_version_create(actor=owner, name="matrix-prompt", template=TEMPLATE)
    return World(live=live, draft=draft, submitted=submitted, run=run, approved=approved, shadow=shadow,
                 prompt=prompt, users={**users, "anonymous": None})


def snapshot() -> dict:
    """Every row a governance write could touch."""
    return {
        "models": sorted(ModelVersion.objects.values_list("pk", "status", "updated_at", "approved_by")),
        "prompts": sorted(PromptVersion.objects.values_list("pk", "status", "updated_at")),
        "deployments": sorted(Deployment.objects.values_list("pk", "ended_at")),
        "events": VersionEvent.objects.count(),
        "runs": sorted(EvaluationRun.objects.values_list("pk", "status")),
        "audit": AuditEvent.objects.count(),
    }


def page(name: str, *args) -> str:
    return reverse(f"governance:{name}", args=args)


# --- pages --------------------------------------------------------------------------------------

# name -> (url of the world, is a form page for owners only)
PAGES_GET = {
    "overview": (lambda w: page("versions_overview"), False),
    "model_detail": (lambda w: page("versions_detail", "model", w.approved.pk), False),
    "prompt_detail": (lambda w: page("versions_detail", "prompt", w.prompt.pk), False),
    "model_documentation": (lambda w: page("versions_documentation", "model", w.approved.pk), False),
    "prompt_documentation": (lambda w: page("versions_documentation", "prompt", w.prompt.pk), False),
    "model_new": (lambda w: page("versions_new", "model"), True),
    "prompt_new": (lambda w: page("versions_new", "prompt"), True),
    "model_edit": (lambda w: page("versions_edit", "model", w.draft.pk), True),
    "prompt_edit": (lambda w: page("versions_edit", "prompt", w.prompt.pk), True),
    "rollback": (lambda w: page("deployment_rollback"), True),
}


def _partner(w: World) -> dict:
    return {"partner": str(w.live.prompt_version_id), "reason": "matrix"}


# name -> (url, form data); every one answers 302 to an owner and changes something.
PAGES_POST = {
    "model_new": (lambda w: page("versions_new", "model"), lambda w: MODEL_FORM),
    "prompt_new": (lambda w: page("versions_new", "prompt"),
                   lambda w: {"name": "matrix-new", "template": TEMPLATE, "tools_mode": "none"}),
    "model_edit": (lambda w: page("versions_edit", "model", w.draft.pk),
                   lambda w: {**MODEL_FORM, "limitations": "Changed in the matrix"}),
    "prompt_edit": (lambda w: page("versions_edit", "prompt", w.prompt.pk),
                    lambda w: {"template": TEMPLATE + "\nBe brief.", "tools_mode": "all"}),
    "submit": (lambda w: page("versions_submit", "model", w.draft.pk), lambda w: {}),
    "approve": (lambda w: page("versions_approve", "model", w.submitted.pk),
                lambda w: {"reason": "Evaluated", "evidence": [str(w.run.pk)]}),
    "reject": (lambda w: page("versions_reject", "model", w.submitted.pk), lambda w: {"reason": "Not yet"}),
    "derive": (lambda w: page("versions_derive", "model", w.approved.pk), lambda w: {}),
    "retire": (lambda w: page("versions_retire", "model", w.approved.pk), lambda w: {"reason": "Superseded"}),
    "activate": (lambda w: page("versions_activate", "model", w.approved.pk), _partner),
    "split": (lambda w: page("versions_split", "model", w.approved.pk), lambda w: {**_partner(w), "percent": "10"}),
    "shadow": (lambda w: page("versions_shadow", "model", w.approved.pk), _partner),
    "deployment_end": (lambda w: page("deployment_end", w.shadow.pk), lambda w: {"reason": "Enough"}),
    "rollback": (lambda w: page("deployment_rollback"), lambda w: {"reason": "Back to the previous pair"}),
}


def _client(client, world: World, role: str):
    if role != "anonymous":
        client.force_login(world.users[role])
    return client


def _expected_get(role: str, form_page: bool) -> int:
    if role == "anonymous":
        return 302
    return 200 if role in OWNERS or (role == "compliance" and not form_page) else 403


@pytest.mark.parametrize("name", PAGES_GET)
def test_page_get(client, world, name):
    """Reads change nothing, so one world serves every role of a page."""
    page_url, form_page = PAGES_GET[name]
    for role in ROLES:
        client.logout()
        response = _client(client, world, role).get(page_url(world))
        assert response.status_code == _expected_get(role, form_page), (name, role)
        if role == "anonymous":
            assert response["Location"].startswith(reverse("login"))


def _refused_posts_change_nothing(client, world, send) -> None:
    """Anonymous visitors go to sign in; agents, supervisors and compliance officers get 403."""
    before = snapshot()
    for role in REFUSED:
        client.logout()
        response = send(_client(client, world, role), role)
        assert response.status_code == (302 if role == "anonymous" else 403), role
        if role == "anonymous":
            assert response["Location"].startswith(reverse("login"))
    assert snapshot() == before


@pytest.mark.parametrize("owner", sorted(OWNERS))
@pytest.mark.parametrize("name", PAGES_POST)
def test_page_post(client, world, name, owner):
    """Every other role is refused with nothing changed; then the owner's POST succeeds."""
    page_url, data = PAGES_POST[name]
    _refused_posts_change_nothing(client, world, lambda c, role: c.post(page_url(world), data(world)))
    before = snapshot()
    client.logout()
    response = _client(client, world, owner).post(page_url(world), data(world))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert snapshot() != before


POST_ONLY = [name for name in PAGES_POST if name not in PAGES_GET]


def test_post_only_pages_answer_get_with_405_and_read_pages_refuse_post(client, world):
    before = snapshot()
    for role in ROLES:
        client.logout()
        _client(client, world, role)
        for name in POST_ONLY:
            assert client.get(PAGES_POST[name][0](world)).status_code == 405, (name, role)
        for name in ("overview", "model_detail", "model_documentation"):
            assert client.post(PAGES_GET[name][0](world)).status_code == 405, (name, role)
    assert snapshot() == before


# --- API ----------------------------------------------------------------------------------------

def api_url(name: str, **kwargs) -> str:
    return reverse(name, kwargs={k: str(v) for k, v in kwargs.items()} or None)


API_GET = {
    "model_versions": lambda w: api_url("api-governance-model-versions"),
    "model_version": lambda w: api_url("api-governance-model-version", pk=w.approved.pk),
    "prompt_versions": lambda w: api_url("api-governance-prompt-versions"),
    "prompt_version": lambda w: api_url("api-governance-prompt-version", pk=w.prompt.pk),
    "deployments": lambda w: api_url("api-governance-deployments"),
    "deployment": lambda w: api_url("api-governance-deployment", pk=w.live.pk),
}


def _act(kind: str, attr: str, action: str):
    return lambda w: api_url(f"api-governance-{kind}-version-act", pk=getattr(w, attr).pk, action=action)


def _pair(w: World, version=None) -> dict:
    return {"model_version": str((version or w.approved).pk), "prompt_version": str(w.live.prompt_version_id),
            "reason": "matrix"}


# name -> (method, url, body, status for an owner)
API_WRITE = {
    "model_create": ("post", lambda w: api_url("api-governance-model-versions"),
                     lambda w: {"name": "matrix-api", "provider": "offline", "model_name": "extractive-v1"}, 201),
    "prompt_create": ("post", lambda w: api_url("api-governance-prompt-versions"),
                      lambda w: {"name": "matrix-api", "template": TEMPLATE}, 201),
    "model_patch": ("patch", lambda w: api_url("api-governance-model-version", pk=w.draft.pk),
                    lambda w: {"limitations": "Changed"}, 200),
    "prompt_patch": ("patch", lambda w: api_url("api-governance-prompt-version", pk=w.prompt.pk),
                     lambda w: {"tools": []}, 200),
    "submit": ("post", _act("model", "draft", "submit"), lambda w: {}, 200),
    "approve": ("post", _act("model", "submitted", "approve"),
                lambda w: {"reason": "Evaluated", "evidence": [str(w.run.pk)]}, 200),
    "reject": ("post", _act("model", "submitted", "reject"), lambda w: {"reason": "Not yet"}, 200),
    "derive": ("post", _act("model", "approved", "derive"), lambda w: {}, 201),
    "retire": ("post", _act("model", "approved", "retire"), lambda w: {"reason": "Superseded"}, 200),
    "prompt_submit": ("post", _act("prompt", "prompt", "submit"), lambda w: {}, 200),
    "activate": ("post", lambda w: api_url("api-governance-deployments-activate"), _pair, 201),
    "split": ("post", lambda w: api_url("api-governance-deployments-split"), lambda w: {**_pair(w), "percent": 10},
              201),
    "shadow": ("post", lambda w: api_url("api-governance-deployments-shadow"), _pair, 201),
    "rollback": ("post", lambda w: api_url("api-governance-deployments-rollback"), lambda w: {"reason": "Back"}, 201),
    "end": ("post", lambda w: api_url("api-governance-deployment-end", pk=w.shadow.pk), lambda w: {"reason": "x"},
            200),
}


def _api(world: World, role: str) -> APIClient:
    client = APIClient()
    if role != "anonymous":
        client.force_login(world.users[role])
    return client


@pytest.mark.parametrize("name", API_GET)
def test_api_get(world, name):
    for role in ROLES:
        response = _api(world, role).get(API_GET[name](world))
        assert response.status_code == (200 if role in READERS else 403), (name, role)
        if role in ("agent", "supervisor"):
            assert response.json()["detail"] == ("Governance is for model owners, compliance officers and "
                                                 "administrators.")


@pytest.mark.parametrize("owner", sorted(OWNERS))
@pytest.mark.parametrize("name", API_WRITE)
def test_api_write(world, name, owner):
    """Anonymous, agent, supervisor and compliance officer: 403 and nothing changed; then the
    owner's write succeeds."""
    method, write_url, body, owner_status = API_WRITE[name]
    before = snapshot()
    for role in REFUSED:
        response = getattr(_api(world, role), method)(write_url(world), body(world), format="json")
        assert response.status_code == 403, role
        if role == "compliance":
            assert "your role reads them" in response.json()["detail"]
    assert snapshot() == before
    response = getattr(_api(world, owner), method)(write_url(world), body(world), format="json")
    assert response.status_code == owner_status, response.json()
    assert snapshot() != before
