"""Governance models: versions and deployments, evaluation, audit (and retention)."""

from governance.models.audit import AuditCheckpoint, AuditEvent
from governance.models.evaluation import (
    EvaluationCase,
    EvaluationCategory,
    EvaluationResult,
    EvaluationRun,
    RunKind,
    RunStatus,
)
from governance.models.retention import (
    HoldScope,
    LegalHold,
    RetentionAction,
    RetentionPolicy,
    RetentionRun,
    RetentionRunStatus,
)
from governance.models.versions import (
    DEPLOYABLE_STATUSES,
    FROZEN_STATUSES,
    Assistant,
    Deployment,
    DeploymentRole,
    ModelVersion,
    PromptVersion,
    Provider,
    RiskLevel,
    VersionEvent,
    VersionEventKind,
    VersionStatus,
)

__all__ = [
    "DEPLOYABLE_STATUSES", "FROZEN_STATUSES", "Assistant", "AuditCheckpoint", "AuditEvent", "Deployment",
    "DeploymentRole", "EvaluationCase", "EvaluationCategory", "EvaluationResult", "EvaluationRun", "ModelVersion",
    "PromptVersion", "Provider", "RiskLevel", "RunKind", "RunStatus", "VersionEvent", "VersionEventKind",
    "VersionStatus",
    "HoldScope", "LegalHold", "RetentionAction", "RetentionPolicy", "RetentionRun", "RetentionRunStatus",
]
