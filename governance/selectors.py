"""Reads of the governance app."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied

from governance import lifecycle
from governance.audit import ChainReport, chain_verify
from governance.models import (
    AuditEvent,
    Deployment,
    DeploymentRole,
    EvaluationRun,
    ModelVersion,
    PromptVersion,
    VersionStatus,
)
from governance.permissions import can_own_models, can_read_governance
from governance.routing import DEFAULT_ASSISTANT

KINDS = {"model": ModelVersion, "prompt": PromptVersion}
READ_DENIED = "Governance is for model owners, compliance officers and administrators."


def audit_chain_verify(*, batch_size: int = 5000) -> ChainReport:
    """The whole chain, links and signed checkpoints (what ``manage.py audit_verify`` runs)."""
    return chain_verify(batch_size=batch_size)


def audit_events_for_target(*, target) -> list[AuditEvent]:
    target_type = f"{target._meta.app_label}.{target._meta.model_name}"
    return list(AuditEvent.objects.filter(target_type=target_type, target_id=str(target.pk)).order_by("seq"))


# --- versions and deployments ------------------------------------------------------------------

def version_list(*, kind: str):
    """Every version of a kind, by name then newest number, with its author (one query)."""
    return KINDS[kind].objects.select_related("created_by", "approved_by").order_by("name", "-version")


def version_get_for_user(*, user, kind: str, pk):
    """One version for someone who may read governance; ``DoesNotExist`` for an unknown id."""
    if not can_read_governance(user):
        raise PermissionDenied(READ_DENIED)
    return KINDS[kind].objects.select_related("created_by", "approved_by").get(pk=pk)


def deployment_list():
    """Every deployment, newest first, with its pair and people (one query)."""
    return Deployment.objects.select_related("assistant", "model_version", "prompt_version", "started_by",
                                             "ended_by").order_by("-created_at")


def deployments_live(*, assistant_name: str = DEFAULT_ASSISTANT) -> list[Deployment]:
    """The assistant's live deployments in start order (one query)."""
    return list(deployment_list().filter(assistant__name=assistant_name, ended_at__isnull=True)
                .order_by("created_at"))


def deployment_get_for_user(*, user, pk) -> Deployment:
    if not can_read_governance(user):
        raise PermissionDenied(READ_DENIED)
    return deployment_list().get(pk=pk)


def version_events(version):
    return version.events.select_related("actor").prefetch_related("evidence").order_by("created_at")


def version_deployments(version):
    return version.deployments.select_related("assistant", "model_version", "prompt_version", "started_by",
                                              "ended_by").order_by("-created_at")


def version_runs(version):
    """Evaluation runs with ``version`` as the candidate, newest first."""
    field = "candidate_model" if isinstance(version, ModelVersion) else "candidate_prompt"
    return EvaluationRun.objects.filter(**{field: version}).select_related(
        "candidate_model", "candidate_prompt", "baseline_model", "baseline_prompt").order_by("-created_at")


def split_live(live: list[Deployment]) -> tuple[Deployment | None, list[Deployment], list[Deployment]]:
    primary = next((d for d in live if d.role == DeploymentRole.PRIMARY), None)
    return (primary, [d for d in live if d.role == DeploymentRole.SPLIT],
            [d for d in live if d.role == DeploymentRole.SHADOW])


def overview(*, user) -> dict:
    """What the overview shows; a fixed number of queries however many versions exist."""
    live = deployments_live()
    primary, splits, shadows = split_live(live)
    if shadows:
        runs = {r.deployment_id: r for r in EvaluationRun.objects.filter(deployment__in=shadows).order_by("created_at")}
        for deployment in shadows:
            deployment.shadow_run = runs.get(deployment.pk)
    target = lifecycle.deployment_rollback_target(primary.assistant) if primary else None
    models, prompts = list(version_list(kind="model")), list(version_list(kind="prompt"))
    submitted = [v for v in models + prompts if v.status == VersionStatus.SUBMITTED]
    owner = can_own_models(user)
    return {
        "assistant_title": primary.assistant.title if primary else "Customer assistant",
        "primary": primary, "splits": splits, "shadows": shadows,
        "primary_share": 100 - sum(d.traffic_percent for d in splits),
        "rollback_target": target,
        "model_versions": models, "prompt_versions": prompts,
        "waiting": [v for v in submitted if v.created_by_id != user.pk] if owner else submitted,
        "own_submitted": [v for v in submitted if v.created_by_id == user.pk] if owner else [],
        "can_own": owner,
    }
