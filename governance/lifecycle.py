"""Services of the version lifecycle and of deployments (every write; reads are in ``routing``).

draft → submitted → approved / rejected → active / shadow / retired. Content is frozen once
submitted; approval needs a model owner other than the author, a written reason and at least
one finished evaluation run of the version as evidence (four eyes). Activation, A/B splits,
shadows, retirement and rollback change ``Deployment`` rows, which the next turn reads: no
restart. Every transition appends a ``VersionEvent`` and an audit event in its transaction; a
refusal changes nothing and is audited on its own (``version.refused``)."""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Any, Iterable

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from governance.audit import canonical_json
from governance.evaluation import run_summary
from governance.exceptions import LifecycleRefused
from governance.models import (
    DEPLOYABLE_STATUSES,
    Assistant,
    Deployment,
    DeploymentRole,
    EvaluationRun,
    ModelVersion,
    PromptVersion,
    Provider,
    RunKind,
    RunStatus,
    VersionEvent,
    VersionEventKind,
    VersionStatus,
)
from governance.permissions import can_own_models
from governance.routing import DEFAULT_ASSISTANT
from governance.services import audit_event_record

MODEL_CONTENT_FIELDS = ("provider", "model_name", "endpoint", "api_key_env", "parameters", "cost_per_1k_input",
                        "cost_per_1k_output", "risk_level", "intended_use", "limitations")
PROMPT_CONTENT_FIELDS = ("template", "variables", "tools")
Version = ModelVersion | PromptVersion
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# What convo.pipeline fills into a prompt template; anything else would reach the model verbatim.
FILLED_PLACEHOLDERS = ("company", "sources")


def _refusal_audited(func):
    """Run the service; on LifecycleRefused, audit the refusal in its own transaction (the act's
    transaction rolled back, so nothing else changed) and re-raise."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except LifecycleRefused as exc:
            target = kwargs.get("version") or kwargs.get("deployment") or kwargs.get("model_version")
            with transaction.atomic():
                audit_event_record(actor=kwargs.get("actor"), action="version.refused", target=target,
                                   data={"service": func.__name__, "code": exc.code, "reason": str(exc)})
            raise

    return wrapper


def content_fields(version: Version) -> tuple[str, ...]:
    return MODEL_CONTENT_FIELDS if isinstance(version, ModelVersion) else PROMPT_CONTENT_FIELDS


def content_hash(version: Version) -> str:
    content = {name: getattr(version, name) for name in content_fields(version)}
    return hashlib.sha256(canonical_json({"name": version.name, "version": version.version, **content})
                          .encode()).hexdigest()


def _event(version: Version, *, kind: str, actor, from_status: str = "", reason: str = "",
           evidence: Iterable[EvaluationRun] = (), data: dict | None = None) -> VersionEvent:
    field = "model_version" if isinstance(version, ModelVersion) else "prompt_version"
    event = VersionEvent.objects.create(**{field: version}, kind=kind, actor=_user(actor), from_status=from_status,
                                        to_status=version.status, reason=reason, data=data or {})
    evidence = list(evidence)
    if evidence:
        event.evidence.set(evidence)
    audit_event_record(actor=actor, action=f"{version.kind}_version.{kind}", target=version,
                       data={"label": version.label, "from": from_status, "to": version.status, "reason": reason,
                             "evidence": [str(r.pk) for r in evidence], **(data or {})})
    return event


def _user(actor):
    return actor if getattr(actor, "is_authenticated", False) else None


def _require_owner(actor) -> None:
    if not can_own_models(actor):
        raise LifecycleRefused("Only model owners and administrators manage model and prompt versions.",
                               code="not_model_owner")


def _locked(version: Version) -> Version:
    return type(version).objects.select_for_update().get(pk=version.pk)


def _next_number(model, name: str) -> int:
    return (model.objects.filter(name=name).aggregate(n=Max("version"))["n"] or 0) + 1


# --- drafts -------------------------------------------------------------------------------------

def _validate_model_fields(fields: dict[str, Any]) -> None:
    provider = fields.get("provider")
    if provider not in Provider.values:
        raise LifecycleRefused(f"Unknown provider {provider!r}.", code="invalid")
    if provider == Provider.OPENAI and not fields.get("endpoint"):
        raise LifecycleRefused("An OpenAI-compatible model needs its endpoint (base URL).", code="invalid")
    if not isinstance(fields.get("parameters", {}), dict):
        raise LifecycleRefused("Parameters must be a JSON object.", code="invalid")


def _validate_prompt_fields(fields: dict[str, Any]) -> None:
    problems = template_problems(fields.get("template", ""))
    if problems:
        raise LifecycleRefused(" ".join(problems), code="invalid")
    tools = fields.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, str) for t in tools)):
        raise LifecycleRefused("Tools must be a list of action names.", code="invalid")


@_refusal_audited
def model_version_create(*, actor, name: str, **fields: Any) -> ModelVersion:
    """A new draft model version (numbered after the last version of that name)."""
    _require_owner(actor)
    _validate_model_fields(fields)
    with transaction.atomic():
        version = ModelVersion.objects.create(name=name, version=_next_number(ModelVersion, name),
                                              created_by=_user(actor), status=VersionStatus.DRAFT, **fields)
        _event(version, kind=VersionEventKind.CREATED, actor=actor)
    return version


@_refusal_audited
def prompt_version_create(*, actor, name: str, template: str, variables: list | None = None,
                          tools: list | None = None, description: str = "") -> PromptVersion:
    _require_owner(actor)
    _validate_prompt_fields({"template": template, "tools": tools})
    with transaction.atomic():
        version = PromptVersion.objects.create(
            name=name, version=_next_number(PromptVersion, name), template=template,
            variables=variables if variables is not None else template_placeholders(template), tools=tools,
            description=description, created_by=_user(actor), status=VersionStatus.DRAFT,
        )
        _event(version, kind=VersionEventKind.CREATED, actor=actor)
    return version


def template_placeholders(template: str) -> list[str]:
    """The ``{name}`` placeholders of a prompt template, sorted."""
    return sorted(set(PLACEHOLDER_RE.findall(template)))


def template_problems(template: str) -> list[str]:
    """Why a template cannot answer customers (empty when it can); the forms and the API show
    the same reasons the services refuse with."""
    if not template.strip():
        return ["Write the prompt template."]
    problems = []
    if "{sources}" not in template:
        problems.append("The template must include {sources}: the numbered sources the answer cites.")
    unknown = [p for p in template_placeholders(template) if p not in FILLED_PLACEHOLDERS]
    if unknown:
        problems.append(f"{', '.join('{' + p + '}' for p in unknown)}: the assistant fills in only "
                        f"{{company}} and {{sources}}; anything else would reach the model as written.")
    return problems


@_refusal_audited
def version_update(*, actor, version: Version, **fields: Any) -> Version:
    """Edit a draft. Anything submitted or later is immutable: derive a new version instead."""
    _require_owner(actor)
    allowed = set(content_fields(version)) | {"description"}
    unknown = set(fields) - allowed
    if unknown:
        raise LifecycleRefused(f"These fields cannot be edited: {', '.join(sorted(unknown))}.", code="invalid")
    with transaction.atomic():
        version = _locked(version)
        if version.status != VersionStatus.DRAFT:
            raise LifecycleRefused(
                f"{version.label} is {version.get_status_display().lower()} and can no longer change; "
                f"create a new version from it instead.", code="immutable")
        merged = {name: getattr(version, name) for name in allowed} | fields
        (_validate_model_fields if isinstance(version, ModelVersion) else _validate_prompt_fields)(merged)
        for name, value in fields.items():
            setattr(version, name, value)
        version.save()
        _event(version, kind=VersionEventKind.EDITED, actor=actor, from_status=version.status,
               data={"fields": sorted(fields)})
    return version


@_refusal_audited
def version_derive(*, actor, version: Version) -> Version:
    """A new draft with the content of ``version`` (how a submitted version is "edited")."""
    _require_owner(actor)
    with transaction.atomic():
        copy = {name: getattr(version, name) for name in content_fields(version)}
        new = type(version).objects.create(name=version.name, version=_next_number(type(version), version.name),
                                           description=f"Derived from v{version.version}.", created_by=_user(actor),
                                           status=VersionStatus.DRAFT, **copy)
        _event(new, kind=VersionEventKind.CREATED, actor=actor, data={"derived_from": str(version.pk)})
    return new


# --- approval -------------------------------------------------------------------------------------

@_refusal_audited
def version_submit(*, actor, version: Version) -> Version:
    _require_owner(actor)
    with transaction.atomic():
        version = _locked(version)
        if version.status != VersionStatus.DRAFT:
            raise LifecycleRefused(f"Only drafts can be submitted; {version.label} is "
                                   f"{version.get_status_display().lower()}.", code="wrong_status")
        version.status, version.submitted_at = VersionStatus.SUBMITTED, timezone.now()
        version.content_hash = content_hash(version)
        version.save(update_fields=["status", "submitted_at", "content_hash", "updated_at"])
        _event(version, kind=VersionEventKind.SUBMITTED, actor=actor, from_status=VersionStatus.DRAFT,
               data={"content_hash": version.content_hash})
    return version


def evidence_runs_for(version: Version):
    """Finished evaluation runs with ``version`` as the candidate (what approval may cite)."""
    field = "candidate_model" if isinstance(version, ModelVersion) else "candidate_prompt"
    return EvaluationRun.objects.filter(**{field: version}, status=RunStatus.DONE)


def _decide_checks(actor, version: Version, reason: str) -> None:
    _require_owner(actor)
    if version.status != VersionStatus.SUBMITTED:
        raise LifecycleRefused(f"{version.label} is {version.get_status_display().lower()}, not submitted for "
                               f"approval.", code="wrong_status")
    if version.created_by_id is not None and version.created_by_id == getattr(actor, "pk", None):
        raise LifecycleRefused("You wrote this version: another model owner must decide on it (four eyes).",
                               code="own_version")
    if not reason.strip():
        raise LifecycleRefused("Write the reason for your decision.", code="reason_required")
    if version.content_hash and version.content_hash != content_hash(version):
        raise LifecycleRefused(f"{version.label} changed after it was submitted; it cannot be approved.",
                               code="content_changed")


@_refusal_audited
def version_approve(*, actor, version: Version, reason: str, evidence_run_ids: Iterable = ()) -> Version:
    """Approve a submitted version, citing at least one finished evaluation run of it."""
    with transaction.atomic():
        version = _locked(version)
        _decide_checks(actor, version, reason)
        ids = [str(i) for i in evidence_run_ids]
        runs = list(evidence_runs_for(version).filter(pk__in=ids)) if ids else []
        if not runs or len(runs) != len(set(ids)):
            raise LifecycleRefused(
                "Attach the evidence: at least one finished evaluation run of this version "
                "(dataset, replay or shadow). Runs of other versions or unfinished runs do not count.",
                code="evidence_required")
        version.status, version.approved_at, version.approved_by = VersionStatus.APPROVED, timezone.now(), actor
        version.save(update_fields=["status", "approved_at", "approved_by", "updated_at"])
        _event(version, kind=VersionEventKind.APPROVED, actor=actor, from_status=VersionStatus.SUBMITTED,
               reason=reason, evidence=runs)
    return version


@_refusal_audited
def version_reject(*, actor, version: Version, reason: str) -> Version:
    with transaction.atomic():
        version = _locked(version)
        _decide_checks(actor, version, reason)
        version.status = VersionStatus.REJECTED
        version.save(update_fields=["status", "updated_at"])
        _event(version, kind=VersionEventKind.REJECTED, actor=actor, from_status=VersionStatus.SUBMITTED,
               reason=reason)
    return version


# --- deployments ----------------------------------------------------------------------------------

def assistant_get(name: str = DEFAULT_ASSISTANT) -> Assistant:
    assistant, _ = Assistant.objects.get_or_create(name=name, defaults={"title": "Customer assistant"})
    return assistant


def _require_deployable(version: Version, *, shadow: bool = False) -> None:
    """Customers only ever meet approved versions (or the runtime registered from configuration);
    a shadow, recorded only, may also be a version still waiting for approval."""
    cleared = version.status in DEPLOYABLE_STATUSES and (version.approved_at is not None or _bootstrapped(version))
    if cleared or (shadow and version.status == VersionStatus.SUBMITTED):
        return
    what = "approved or submitted" if shadow else "approved"
    raise LifecycleRefused(f"{version.label} is {version.get_status_display().lower()}: only {what} versions "
                           f"can be {'put in shadow' if shadow else 'deployed'}.", code="not_approved")


def _bootstrapped(version: Version) -> bool:
    return version.events.filter(data__bootstrap=True).exists()


def _sync_status(version: Version, *, actor) -> None:
    """A deployed version's status follows its live deployments."""
    live = set(version.deployments.filter(ended_at__isnull=True).values_list("role", flat=True))
    if live & {DeploymentRole.PRIMARY, DeploymentRole.SPLIT}:
        status = VersionStatus.ACTIVE
    elif DeploymentRole.SHADOW in live:
        status = VersionStatus.SHADOW if version.approved_at or _bootstrapped(version) else VersionStatus.SUBMITTED
    elif version.status in (VersionStatus.ACTIVE, VersionStatus.SHADOW):
        status = VersionStatus.RETIRED
    else:
        status = version.status
    if status != version.status:
        type(version).objects.filter(pk=version.pk).update(status=status, updated_at=timezone.now())
        version.status = status


def _live(assistant: Assistant):
    return Deployment.objects.select_for_update().filter(assistant=assistant, ended_at__isnull=True)


def _end(deployment: Deployment, *, actor, reason: str) -> None:
    deployment.ended_at, deployment.ended_by = timezone.now(), _user(actor)
    deployment.save(update_fields=["ended_at", "ended_by", "updated_at"])
    # The shadow's evaluation run ends with it, its summary brought up to date with every result.
    for run in EvaluationRun.objects.select_for_update().filter(deployment=deployment, status=RunStatus.RUNNING):
        run.status, run.finished_at, run.summary = RunStatus.DONE, deployment.ended_at, run_summary(run)
        run.save(update_fields=["status", "finished_at", "summary", "updated_at"])


def _start(assistant, *, role, model_version, prompt_version, actor, reason, percent=0) -> Deployment:
    deployment = Deployment.objects.create(assistant=assistant, role=role, model_version=model_version,
                                           prompt_version=prompt_version, traffic_percent=percent,
                                           started_by=_user(actor), reason=reason)
    audit_event_record(actor=actor, action=f"deployment.{role}_started", target=deployment,
                       data={"assistant": assistant.name, "model_version": str(model_version.pk),
                             "prompt_version": str(prompt_version.pk), "percent": percent, "reason": reason})
    return deployment


def _sync_and_record(versions: Iterable[Version], *, actor, kind: str, reason: str, data: dict) -> None:
    seen = set()
    for version in versions:
        if version.pk in seen:
            continue
        seen.add(version.pk)
        before = version.status
        _sync_status(version, actor=actor)
        _event(version, kind=kind, actor=actor, from_status=before, reason=reason, data=data)


@_refusal_audited
def deployment_activate(*, actor, model_version: ModelVersion, prompt_version: PromptVersion, reason: str,
                        assistant: Assistant | None = None, kind: str = VersionEventKind.ACTIVATED) -> Deployment:
    """Make the pair the assistant's active versions from the next turn on (one click)."""
    _require_owner(actor)
    assistant = assistant or assistant_get()
    with transaction.atomic():
        model_version, prompt_version = _locked(model_version), _locked(prompt_version)
        _require_deployable(model_version)
        _require_deployable(prompt_version)
        live = list(_live(assistant).select_related("model_version", "prompt_version"))
        old = [d for d in live if d.role == DeploymentRole.PRIMARY or
               (d.model_version_id == model_version.pk and d.prompt_version_id == prompt_version.pk)]
        if any(d.role == DeploymentRole.PRIMARY and d.model_version_id == model_version.pk
               and d.prompt_version_id == prompt_version.pk for d in old):
            raise LifecycleRefused(f"{model_version.label} with {prompt_version.label} is already active.",
                                   code="already_active")
        for deployment in old:
            _end(deployment, actor=actor, reason=reason)
        new = _start(assistant, role=DeploymentRole.PRIMARY, model_version=model_version,
                     prompt_version=prompt_version, actor=actor, reason=reason)
        data = {"deployment": str(new.pk), "assistant": assistant.name}
        _sync_and_record([model_version, prompt_version], actor=actor, kind=kind, reason=reason, data=data)
        _sync_and_record([v for d in old for v in (d.model_version, d.prompt_version)
                          if v.pk not in (model_version.pk, prompt_version.pk)],
                         actor=actor, kind=VersionEventKind.RETIRED, reason=reason, data=data)
    return new


def deployment_rollback_target(assistant: Assistant) -> Deployment | None:
    """The primary before the live one (what "Roll back" re-activates)."""
    live = Deployment.objects.filter(assistant=assistant, role=DeploymentRole.PRIMARY, ended_at__isnull=True).first()
    previous = Deployment.objects.filter(assistant=assistant, role=DeploymentRole.PRIMARY, ended_at__isnull=False)
    if live:
        previous = previous.exclude(model_version=live.model_version_id, prompt_version=live.prompt_version_id)
    return previous.select_related("model_version", "prompt_version").order_by("-ended_at").first()


@_refusal_audited
def deployment_rollback(*, actor, reason: str, assistant: Assistant | None = None) -> Deployment:
    _require_owner(actor)
    assistant = assistant or assistant_get()
    target = deployment_rollback_target(assistant)
    if target is None:
        raise LifecycleRefused("There is no earlier active version to roll back to.", code="nothing_to_roll_back")
    if not reason.strip():
        raise LifecycleRefused("Write the reason for the rollback.", code="reason_required")
    return deployment_activate(actor=actor, model_version=target.model_version, prompt_version=target.prompt_version,
                               reason=reason, assistant=assistant, kind=VersionEventKind.ROLLED_BACK)


@_refusal_audited
def deployment_shadow_start(*, actor, model_version: ModelVersion, prompt_version: PromptVersion, reason: str = "",
                            assistant: Assistant | None = None) -> Deployment:
    """Run the pair on live turns after the active version answers, recording only; its results
    collect in a shadow evaluation run that ends with the shadow."""
    _require_owner(actor)
    assistant = assistant or assistant_get()
    with transaction.atomic():
        model_version, prompt_version = _locked(model_version), _locked(prompt_version)
        _require_deployable(model_version, shadow=True)
        _require_deployable(prompt_version, shadow=True)
        live = list(_live(assistant))
        primary = next((d for d in live if d.role == DeploymentRole.PRIMARY), None)
        if primary is None:
            raise LifecycleRefused("Activate a version first: a shadow runs beside the active one.", code="no_primary")
        if any(d.model_version_id == model_version.pk and d.prompt_version_id == prompt_version.pk for d in live):
            raise LifecycleRefused("This pair is already deployed.", code="already_deployed")
        deployment = _start(assistant, role=DeploymentRole.SHADOW, model_version=model_version,
                            prompt_version=prompt_version, actor=actor, reason=reason)
        EvaluationRun.objects.create(kind=RunKind.SHADOW, status=RunStatus.RUNNING, candidate_model=model_version,
                                     candidate_prompt=prompt_version, baseline_model_id=primary.model_version_id,
                                     baseline_prompt_id=primary.prompt_version_id, deployment=deployment,
                                     created_by=_user(actor), started_at=timezone.now())
        _sync_and_record([model_version, prompt_version], actor=actor, kind=VersionEventKind.SHADOWED,
                         reason=reason, data={"deployment": str(deployment.pk)})
    return deployment


@_refusal_audited
def deployment_split_start(*, actor, model_version: ModelVersion, prompt_version: PromptVersion, percent: int,
                           reason: str = "", assistant: Assistant | None = None) -> Deployment:
    """Serve ``percent`` % of conversations (sticky per conversation) with an approved pair."""
    _require_owner(actor)
    assistant = assistant or assistant_get()
    if not isinstance(percent, int) or not 1 <= percent <= 99:
        raise LifecycleRefused("The A/B share must be a whole percentage between 1 and 99.", code="invalid")
    with transaction.atomic():
        model_version, prompt_version = _locked(model_version), _locked(prompt_version)
        _require_deployable(model_version)
        _require_deployable(prompt_version)
        live = list(_live(assistant))
        if not any(d.role == DeploymentRole.PRIMARY for d in live):
            raise LifecycleRefused("Activate a version first: an A/B variant splits the active one's traffic.",
                                   code="no_primary")
        if any(d.model_version_id == model_version.pk and d.prompt_version_id == prompt_version.pk for d in live):
            raise LifecycleRefused("This pair is already deployed.", code="already_deployed")
        taken = sum(d.traffic_percent for d in live if d.role == DeploymentRole.SPLIT)
        if taken + percent > 99:
            raise LifecycleRefused(f"A/B variants already take {taken}% of conversations; at most {99 - taken}% "
                                   f"is left.", code="split_too_large")
        deployment = _start(assistant, role=DeploymentRole.SPLIT, model_version=model_version,
                            prompt_version=prompt_version, actor=actor, reason=reason, percent=percent)
        _sync_and_record([model_version, prompt_version], actor=actor, kind=VersionEventKind.SPLIT, reason=reason,
                         data={"deployment": str(deployment.pk), "percent": percent})
    return deployment


@_refusal_audited
def deployment_end(*, actor, deployment: Deployment, reason: str = "") -> Deployment:
    """Stop an A/B variant or a shadow (the active version is replaced by activating another)."""
    _require_owner(actor)
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().select_related("model_version", "prompt_version").get(
            pk=deployment.pk)
        if deployment.ended_at is not None:
            raise LifecycleRefused("This deployment has already ended.", code="already_ended")
        if deployment.role == DeploymentRole.PRIMARY:
            raise LifecycleRefused("The active version cannot be stopped; activate another version or roll back.",
                                   code="primary")
        _end(deployment, actor=actor, reason=reason)
        audit_event_record(actor=actor, action=f"deployment.{deployment.role}_ended", target=deployment,
                           data={"reason": reason})
        _sync_and_record([deployment.model_version, deployment.prompt_version], actor=actor,
                         kind=VersionEventKind.RETIRED, reason=reason or "deployment ended",
                         data={"deployment": str(deployment.pk)})
    return deployment


@_refusal_audited
def version_retire(*, actor, version: Version, reason: str) -> Version:
    """Take a version out of service (its A/B variants and shadows end); not the active one."""
    _require_owner(actor)
    if not reason.strip():
        raise LifecycleRefused("Write the reason for retiring this version.", code="reason_required")
    with transaction.atomic():
        version = _locked(version)
        live = list(version.deployments.select_for_update().filter(ended_at__isnull=True))
        if any(d.role == DeploymentRole.PRIMARY for d in live):
            raise LifecycleRefused(f"{version.label} is the active version: activate another one first.",
                                   code="primary")
        if version.status not in (VersionStatus.APPROVED, VersionStatus.ACTIVE, VersionStatus.SHADOW):
            raise LifecycleRefused(f"{version.label} is {version.get_status_display().lower()}; only approved or "
                                   f"deployed versions are retired.", code="wrong_status")
        for deployment in live:
            _end(deployment, actor=actor, reason=reason)
        before = version.status
        type(version).objects.filter(pk=version.pk).update(status=VersionStatus.RETIRED, updated_at=timezone.now())
        version.status = VersionStatus.RETIRED
        _event(version, kind=VersionEventKind.RETIRED, actor=actor, from_status=before, reason=reason)
    return version
