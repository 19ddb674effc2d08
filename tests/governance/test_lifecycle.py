"""The version lifecycle and deployments, through the services: four eyes, evidence, immutability,
activation and rollback taking effect for the next turn, A/B stickiness, refusals audited."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, transaction
from django.utils import timezone

from governance import lifecycle
from governance.exceptions import LifecycleRefused
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
from governance.routing import Routing, assistant_routing, conversation_bucket

pytestmark = pytest.mark.django_db


@pytest.fixture
def owners(users):
    return users["modelowner"], users["modelowner2"]


@pytest.fixture
def live(say):
    """The runtime registered as the active pair by the first turn."""
    say("How long do refunds take?")
    return assistant_routing().primary


def _finished_run(model_version, prompt_version, author) -> EvaluationRun:
    return EvaluationRun.objects.create(kind=RunKind.DATASET, status=RunStatus.DONE, candidate_model=model_version,
                                        candidate_prompt=prompt_version, created_by=author, total=1, done=1,
                                        finished_at=timezone.now())


def _concise_model(author) -> ModelVersion:
    return lifecycle.model_version_create(actor=author, name="offline-brief", provider="offline",
                                          model_name="extractive-v1", parameters={"max_sentences": 1},
                                          intended_use="Short answers", limitations="English only")


def _approved(model_version, prompt_version, author, approver) -> ModelVersion:
    lifecycle.version_submit(actor=author, version=model_version)
    run = _finished_run(model_version, prompt_version, author)
    return lifecycle.version_approve(actor=approver, version=model_version, reason="Evaluated on the golden set",
                                     evidence_run_ids=[run.pk])


def _refusals(code: str) -> int:
    return AuditEvent.objects.filter(action="version.refused", data__code=code).count()


def test_the_configured_runtime_is_registered_once_as_the_active_pair(say):
    turn = say("How long do refunds take?")
    routing = assistant_routing()
    assert routing.primary.from_configuration
    assert turn.model_version == routing.primary.model_version
    assert turn.prompt_version == routing.primary.prompt_version
    assert turn.model_version.status == turn.prompt_version.status == VersionStatus.ACTIVE
    assert AuditEvent.objects.filter(action="deployment.primary_started", data__bootstrap=True).count() == 1
    say("And exchanges?")
    assert Deployment.objects.count() == 1


def test_a_draft_is_numbered_and_editable_until_submitted_then_frozen(owners):
    author, _ = owners
    first = _concise_model(author)
    second = _concise_model(author)
    assert (first.version, second.version, first.status) == (1, 2, VersionStatus.DRAFT)
    lifecycle.version_update(actor=author, version=first, limitations="English and French")
    lifecycle.version_submit(actor=author, version=first)
    first.refresh_from_db()
    assert first.content_hash

    with pytest.raises(LifecycleRefused, match="can no longer change; create a new version"):
        lifecycle.version_update(actor=author, version=first, parameters={"max_sentences": 5})
    first.refresh_from_db()
    assert first.parameters == {"max_sentences": 1} and first.limitations == "English and French"
    assert _refusals("immutable") == 1

    derived = lifecycle.version_derive(actor=author, version=first)
    assert (derived.version, derived.status, derived.parameters) == (3, VersionStatus.DRAFT, {"max_sentences": 1})


def test_approval_takes_another_owner_a_reason_and_a_finished_run_of_this_version(owners, live):
    author, approver = owners
    version = _concise_model(author)
    lifecycle.version_submit(actor=author, version=version)
    run = _finished_run(version, live.prompt_version, author)
    other = _finished_run(live.model_version, live.prompt_version, author)
    unfinished = EvaluationRun.objects.create(kind=RunKind.REPLAY, status=RunStatus.RUNNING, candidate_model=version,
                                              candidate_prompt=live.prompt_version)

    with pytest.raises(LifecycleRefused, match="another model owner"):
        lifecycle.version_approve(actor=author, version=version, reason="looks fine", evidence_run_ids=[run.pk])
    with pytest.raises(LifecycleRefused, match="reason"):
        lifecycle.version_approve(actor=approver, version=version, reason="  ", evidence_run_ids=[run.pk])
    for evidence in ([], [other.pk], [unfinished.pk], [run.pk, other.pk]):
        with pytest.raises(LifecycleRefused, match="evidence"):
            lifecycle.version_approve(actor=approver, version=version, reason="ok", evidence_run_ids=evidence)
    version.refresh_from_db()
    assert version.status == VersionStatus.SUBMITTED and version.approved_by is None
    assert _refusals("own_version") == 1 and _refusals("evidence_required") == 4

    lifecycle.version_approve(actor=approver, version=version, reason="Grounded on 40/40", evidence_run_ids=[run.pk])
    version.refresh_from_db()
    assert (version.status, version.approved_by) == (VersionStatus.APPROVED, approver)
    approval = VersionEvent.objects.get(model_version=version, kind="approved")
    assert approval.actor == approver and list(approval.evidence.all()) == [run]
    assert AuditEvent.objects.filter(action="model_version.approved", target_id=str(version.pk),
                                     data__evidence=[str(run.pk)]).exists()


def test_a_version_changed_behind_the_services_back_cannot_be_approved(owners, live):
    author, approver = owners
    version = _concise_model(author)
    lifecycle.version_submit(actor=author, version=version)
    run = _finished_run(version, live.prompt_version, author)
    ModelVersion.objects.filter(pk=version.pk).update(parameters={"max_sentences": 9})
    with pytest.raises(LifecycleRefused, match="changed after it was submitted"):
        lifecycle.version_approve(actor=approver, version=version, reason="ok", evidence_run_ids=[run.pk])


def test_people_who_are_not_model_owners_change_nothing(users, live):
    for username in ("agent", "supervisor", "compliance"):
        with pytest.raises(LifecycleRefused, match="Only model owners"):
            _concise_model(users[username])
        with pytest.raises(LifecycleRefused, match="Only model owners"):
            lifecycle.deployment_rollback(actor=users[username], reason="x")
    assert not ModelVersion.objects.filter(name="offline-brief").exists()
    assert _refusals("not_model_owner") == 6


def test_activating_an_unapproved_version_is_refused(owners, live):
    author, _ = owners
    version = _concise_model(author)
    for step in (None, "submit"):
        if step:
            lifecycle.version_submit(actor=author, version=version)
        with pytest.raises(LifecycleRefused, match="only approved versions"):
            lifecycle.deployment_activate(actor=author, model_version=version, prompt_version=live.prompt_version,
                                          reason="try")
    assert assistant_routing().primary.pk == live.pk
    assert _refusals("not_approved") == 2


def test_activation_applies_to_the_next_turn_and_rollback_restores_the_previous_pair(owners, live, say):
    author, approver = owners
    version = _approved(_concise_model(author), live.prompt_version, author, approver)
    lifecycle.deployment_activate(actor=approver, model_version=version, prompt_version=live.prompt_version,
                                  reason="Shorter answers")
    turn = say("How long do refunds take?")
    assert turn.model_version == version
    version.refresh_from_db()
    old = ModelVersion.objects.get(pk=live.model_version_id)
    assert (version.status, old.status) == (VersionStatus.ACTIVE, VersionStatus.RETIRED)
    short_answer = turn.reply.text

    with pytest.raises(LifecycleRefused, match="already active"):
        lifecycle.deployment_activate(actor=approver, model_version=version, prompt_version=live.prompt_version,
                                      reason="again")
    target = lifecycle.deployment_rollback_target(live.assistant)
    assert target.model_version_id == old.pk
    lifecycle.deployment_rollback(actor=approver, reason="Customers found answers too short")
    turn = say("How long do refunds take?")
    assert turn.model_version_id == old.pk
    # The concise version's parameters reached the provider: one sentence instead of several.
    assert len(short_answer) < len(turn.reply.text) and short_answer.count("[") == 1
    version.refresh_from_db()
    old.refresh_from_db()
    assert (version.status, old.status) == (VersionStatus.RETIRED, VersionStatus.ACTIVE)
    assert VersionEvent.objects.filter(model_version=old, kind="rolled_back").exists()
    assert AuditEvent.objects.filter(action="model_version.rolled_back", target_id=str(old.pk)).exists()
    assert Deployment.objects.filter(role=DeploymentRole.PRIMARY, ended_at__isnull=True).count() == 1


def test_a_prompt_version_is_approved_and_activated_the_same_way(owners, live, say):
    author, approver = owners
    prompt = lifecycle.prompt_version_create(
        actor=author, name=live.prompt_version.name,
        template="You help customers of {company}. Cite sources like [1].\n\nSources:\n{sources}", tools=[])
    assert prompt.version == live.prompt_version.version + 1 and prompt.variables == ["company", "sources"]
    lifecycle.version_submit(actor=author, version=prompt)
    run = _finished_run(live.model_version, prompt, author)
    lifecycle.version_approve(actor=approver, version=prompt, reason="Clearer", evidence_run_ids=[run.pk])
    lifecycle.deployment_activate(actor=author, model_version=live.model_version, prompt_version=prompt,
                                  reason="New wording")
    assert say("Do you ship abroad?").prompt_version == prompt
    with pytest.raises(LifecycleRefused, match="must include \\{sources\\}"):
        lifecycle.prompt_version_create(actor=author, name="x", template="No sources here")


def test_ab_split_is_sticky_per_conversation_and_shares_match(owners, live):
    author, approver = owners
    version = _approved(_concise_model(author), live.prompt_version, author, approver)
    split = lifecycle.deployment_split_start(actor=approver, model_version=version,
                                             prompt_version=live.prompt_version, percent=30, reason="A/B")
    routing = assistant_routing()
    assert [d.pk for d in routing.splits] == [split.pk]
    ids = [f"00000000-0000-7000-8000-{n:012d}" for n in range(2000)]
    chosen = {i: routing.for_conversation(i).pk for i in ids}
    share = sum(1 for pk in chosen.values() if pk == split.pk) / len(ids)
    assert 0.26 < share < 0.34
    # Sticky: the same conversation always gets the same pair, in a new routing read too.
    again = assistant_routing()
    assert all(again.for_conversation(i).pk == chosen[i] for i in ids[:200])
    assert all(conversation_bucket(i) < 30 for i, pk in chosen.items() if pk == split.pk)

    with pytest.raises(LifecycleRefused, match="at most 69%"):
        lifecycle.deployment_split_start(actor=approver, model_version=live.model_version,
                                         prompt_version=_approved_prompt(live, author, approver), percent=70)
    for bad in (0, 100, "20"):
        with pytest.raises(LifecycleRefused, match="between 1 and 99"):
            lifecycle.deployment_split_start(actor=approver, model_version=version,
                                             prompt_version=live.prompt_version, percent=bad)
    lifecycle.deployment_end(actor=approver, deployment=split, reason="enough data")
    assert assistant_routing().splits == []
    version.refresh_from_db()
    assert version.status == VersionStatus.RETIRED


def _approved_prompt(live, author, approver) -> PromptVersion:
    prompt = lifecycle.version_derive(actor=author, version=live.prompt_version)
    lifecycle.version_submit(actor=author, version=prompt)
    run = _finished_run(live.model_version, prompt, author)
    return lifecycle.version_approve(actor=approver, version=prompt, reason="ok", evidence_run_ids=[run.pk])


def test_a_submitted_version_may_shadow_and_its_results_collect_in_a_shadow_run(owners, live):
    author, approver = owners
    version = _concise_model(author)
    with pytest.raises(LifecycleRefused, match="approved or submitted"):
        lifecycle.deployment_shadow_start(actor=author, model_version=version, prompt_version=live.prompt_version)
    lifecycle.version_submit(actor=author, version=version)
    shadow = lifecycle.deployment_shadow_start(actor=author, model_version=version,
                                               prompt_version=live.prompt_version, reason="try on live traffic")
    run = EvaluationRun.objects.get(deployment=shadow)
    assert (run.kind, run.status, run.baseline_model_id) == (RunKind.SHADOW, RunStatus.RUNNING,
                                                             live.model_version_id)
    version.refresh_from_db()
    assert version.status == VersionStatus.SUBMITTED  # not approved: it only shadows
    assert [d.pk for d in assistant_routing().shadows] == [shadow.pk]
    lifecycle.deployment_end(actor=author, deployment=shadow, reason="enough")
    run.refresh_from_db()
    assert run.status == RunStatus.DONE and run.finished_at
    # A finished shadow run is evidence for the approval.
    lifecycle.version_approve(actor=approver, version=version, reason="agreed 95%", evidence_run_ids=[run.pk])


def test_the_active_version_cannot_be_retired_or_ended(owners, live):
    author, _ = owners
    with pytest.raises(LifecycleRefused, match="activate another one first"):
        lifecycle.version_retire(actor=author, version=live.model_version, reason="old")
    with pytest.raises(LifecycleRefused, match="cannot be stopped"):
        lifecycle.deployment_end(actor=author, deployment=live, reason="x")
    assert Deployment.objects.get(pk=live.pk).ended_at is None


def test_rejection_needs_another_owner_and_a_reason(owners, live):
    author, reviewer = owners
    version = _concise_model(author)
    lifecycle.version_submit(actor=author, version=version)
    with pytest.raises(LifecycleRefused, match="another model owner"):
        lifecycle.version_reject(actor=author, version=version, reason="no")
    lifecycle.version_reject(actor=reviewer, version=version, reason="Drops the refund deadline")
    version.refresh_from_db()
    assert version.status == VersionStatus.REJECTED
    with pytest.raises(LifecycleRefused, match="only approved versions"):
        lifecycle.deployment_activate(actor=reviewer, model_version=version, prompt_version=live.prompt_version,
                                      reason="x")


def test_version_events_are_append_only(owners):
    author, _ = owners
    _concise_model(author)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        VersionEvent.objects.update(reason="rewritten")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        VersionEvent.objects.all().delete()


def test_a_changed_runtime_configuration_replaces_a_configured_primary_only(owners, live, settings):
    class Runtime:
        name, model_name, endpoint = "openai", "gpt-test", "http://127.0.0.1:9/v1"

    routing = assistant_routing(runtime=Runtime())
    assert routing.primary.pk != live.pk and routing.primary.model_version.model_name == "gpt-test"
    assert ModelVersion.objects.get(pk=live.model_version_id).status == VersionStatus.RETIRED
    # Once a governed version is active, the configuration no longer decides.
    author, approver = owners
    version = _approved(_concise_model(author), live.prompt_version, author, approver)
    lifecycle.deployment_activate(actor=approver, model_version=version, prompt_version=live.prompt_version,
                                  reason="governed")
    assert assistant_routing(runtime=Runtime()).primary.model_version == version
    assert isinstance(assistant_routing(), Routing)


def test_the_demo_has_a_candidate_waiting_for_another_owners_approval(users):
    from convo.demo.loader import CONCISE_MODEL, load_versions

    candidate = ModelVersion.objects.get(name=CONCISE_MODEL)
    assert candidate.status == VersionStatus.SUBMITTED and candidate.created_by == users["modelowner"]
    assert candidate.intended_use and candidate.limitations
    load_versions()
    assert ModelVersion.objects.filter(name=CONCISE_MODEL).count() == 1


def test_a_prompt_with_a_placeholder_the_assistant_does_not_fill_is_refused(owners):
    author, _ = owners
    with pytest.raises(LifecycleRefused, match=r"\{tone\}: the assistant fills in only"):
        lifecycle.prompt_version_create(actor=author, name="x", template="Be {tone}.\n{sources}")
    assert not PromptVersion.objects.filter(name="x").exists()
    assert _refusals("invalid") == 1
