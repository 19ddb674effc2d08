"""Model and prompt versions, their approvals, and the deployments that route turns to them."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models

from config.models import BaseModel


class VersionStatus(models.TextChoices):
    """draft → submitted → approved / rejected → active / shadow / retired (``governance.lifecycle``).

    A version's content is frozen from ``submitted`` on; only a draft can be edited, and an edit
    of anything else is a new draft (``version_derive``)."""

    DRAFT = "draft", "Draft"
    SUBMITTED = "submitted", "Submitted for approval"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    ACTIVE = "active", "Active"
    SHADOW = "shadow", "Shadow"
    RETIRED = "retired", "Retired"


# Statuses whose content may no longer change.
FROZEN_STATUSES = frozenset(VersionStatus.values) - {VersionStatus.DRAFT}
# An approved version may be deployed; one that was deployed and then retired may be again (rollback).
DEPLOYABLE_STATUSES = frozenset({VersionStatus.APPROVED, VersionStatus.ACTIVE, VersionStatus.SHADOW,
                                 VersionStatus.RETIRED})


class Provider(models.TextChoices):
    OFFLINE = "offline", "Offline (extractive, no network)"
    OPENAI = "openai", "OpenAI-compatible endpoint"


class RiskLevel(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"


class VersionedArtifact(BaseModel):
    """What model and prompt versions share: a name and number, the lifecycle and its actors."""

    name = models.CharField(max_length=120)
    version = models.PositiveIntegerField(default=1)
    description = models.TextField(blank=True, help_text="What changed and why")
    status = models.CharField(max_length=20, choices=VersionStatus.choices, default=VersionStatus.DRAFT)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    submitted_at = models.DateTimeField(null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+")
    # The content fields hashed at submission; the lifecycle refuses a version whose content
    # no longer matches (an edit made behind the services' back).
    content_hash = models.CharField(max_length=64, blank=True)

    class Meta:
        abstract = True

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def is_frozen(self) -> bool:
        return self.status in FROZEN_STATUSES


class ModelVersion(VersionedArtifact):
    """One model configuration that may answer customers, with its model card.

    ``parameters`` go to the provider: for ``openai`` ``temperature`` and ``max_tokens``; for
    ``offline`` ``max_sentences`` and ``min_score``. The API key is never stored: it comes from
    ``LLM_API_KEY`` (or the environment variable named by ``api_key_env``)."""

    kind = "model"

    provider = models.CharField(max_length=20, choices=Provider.choices)
    model_name = models.CharField(max_length=200)
    endpoint = models.CharField(max_length=500, blank=True)
    api_key_env = models.CharField(max_length=80, blank=True,
                                   help_text="Environment variable holding the API key (default LLM_API_KEY)")
    parameters = models.JSONField(default=dict, blank=True)
    cost_per_1k_input = models.DecimalField(max_digits=10, decimal_places=6, default=Decimal("0"))
    cost_per_1k_output = models.DecimalField(max_digits=10, decimal_places=6, default=Decimal("0"))
    risk_level = models.CharField(max_length=10, choices=RiskLevel.choices, default=RiskLevel.MEDIUM)
    intended_use = models.TextField(blank=True)
    limitations = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "version"], name="modelversion_name_version_uniq")]
        indexes = [models.Index(fields=["status", "name"], name="modelversion_status_idx")]

    def __str__(self) -> str:
        return f"{self.label} ({self.provider}:{self.model_name})"


class PromptVersion(VersionedArtifact):
    """A versioned system prompt: the template, the variables it uses and the tools it offers."""

    kind = "prompt"

    template = models.TextField()
    variables = models.JSONField(default=list, blank=True, help_text="Placeholders the template uses, e.g. company")
    tools = models.JSONField(null=True, blank=True,
                             help_text="Action names offered to the model; empty for none, unset for every enabled")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["name", "version"], name="promptversion_name_version_uniq")]
        indexes = [models.Index(fields=["status", "name"], name="promptversion_status_idx")]

    def __str__(self) -> str:
        return self.label


class VersionEventKind(models.TextChoices):
    CREATED = "created", "Created"
    EDITED = "edited", "Edited"
    SUBMITTED = "submitted", "Submitted"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    ACTIVATED = "activated", "Activated"
    SHADOWED = "shadowed", "Put in shadow"
    SPLIT = "split", "A/B split"
    RETIRED = "retired", "Retired"
    ROLLED_BACK = "rolled_back", "Rolled back to"


class VersionEvent(BaseModel):
    """One transition of a model or prompt version, with who, why and the evidence (append-only:
    a trigger refuses UPDATE and DELETE). Approvals are the ``approved``/``rejected`` rows."""

    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT,
                                      related_name="events")
    prompt_version = models.ForeignKey(PromptVersion, null=True, blank=True, on_delete=models.PROTECT,
                                       related_name="events")
    kind = models.CharField(max_length=20, choices=VersionEventKind.choices)
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                              related_name="+")
    reason = models.TextField(blank=True)
    evidence = models.ManyToManyField("governance.EvaluationRun", blank=True, related_name="cited_by")
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(model_version__isnull=False, prompt_version__isnull=True)
                | models.Q(model_version__isnull=True, prompt_version__isnull=False),
                name="versionevent_one_subject",
            )
        ]

    def __str__(self) -> str:
        subject = self.model_version or self.prompt_version
        return f"{subject}: {self.kind}"


class Assistant(BaseModel):
    """A customer-facing assistant; its deployments say which versions answer its turns."""

    name = models.SlugField(max_length=80, unique=True)
    title = models.CharField(max_length=120)

    def __str__(self) -> str:
        return self.title or self.name


class DeploymentRole(models.TextChoices):
    PRIMARY = "primary", "Active"
    SPLIT = "split", "A/B variant"
    SHADOW = "shadow", "Shadow"


class Deployment(BaseModel):
    """A model + prompt version pair serving an assistant, from ``started_at`` until ``ended_at``.

    One live primary per assistant (a partial unique index); A/B variants take ``traffic_percent``
    of conversations, chosen by a stable hash of the conversation id (sticky); shadows answer
    the same turns afterwards, recorded only."""

    assistant = models.ForeignKey(Assistant, on_delete=models.PROTECT, related_name="deployments")
    role = models.CharField(max_length=10, choices=DeploymentRole.choices)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="deployments")
    prompt_version = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="deployments")
    traffic_percent = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    ended_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="+")
    reason = models.TextField(blank=True)
    # Registered from the environment's LLM_* settings rather than activated in Tandem; such a
    # deployment follows the configuration until a model owner activates a governed version.
    from_configuration = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["assistant"], condition=models.Q(role="primary", ended_at__isnull=True),
                                    name="deployment_one_live_primary"),
            models.CheckConstraint(condition=models.Q(traffic_percent__lte=100), name="deployment_percent_range"),
        ]
        # Every turn reads the live deployments of its assistant.
        indexes = [models.Index(fields=["assistant", "role"], condition=models.Q(ended_at__isnull=True),
                                name="deployment_live_idx")]

    def __str__(self) -> str:
        return f"{self.assistant}: {self.get_role_display()} {self.model_version.label} + {self.prompt_version.label}"
