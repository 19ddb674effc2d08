"""Which model and prompt version answer a turn: the assistant's live deployments (reads only,
plus the first-use registration of the configured runtime).

A/B variants are chosen by a stable hash of the conversation id, so a conversation keeps its
variant for as long as the split is unchanged (sticky, with nothing stored); raising a variant's
share only moves conversations into it. Every turn reads the deployments afresh (one query), so
an activation or rollback takes effect for the next turn without a restart."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.utils import timezone

from governance.models import (
    Assistant,
    Deployment,
    DeploymentRole,
    ModelVersion,
    PromptVersion,
    Provider,
    VersionEvent,
    VersionEventKind,
    VersionStatus,
)
from governance.services import DEFAULT_PROMPT_NAME, DEFAULT_PROMPT_TEMPLATE, audit_event_record

DEFAULT_ASSISTANT = "customer-assistant"


@dataclass(frozen=True)
class Routing:
    primary: Deployment
    splits: list[Deployment] = field(default_factory=list)
    shadows: list[Deployment] = field(default_factory=list)

    def for_conversation(self, conversation_id) -> Deployment:
        """The deployment that answers this conversation: an A/B variant if its bucket falls in
        one's share (variants in start order, cumulative), else the primary."""
        if not self.splits:
            return self.primary
        bucket = conversation_bucket(conversation_id)
        edge = 0
        for deployment in self.splits:
            edge += deployment.traffic_percent
            if bucket < edge:
                return deployment
        return self.primary


def conversation_bucket(conversation_id) -> int:
    """0..99, uniform and stable for a conversation id."""
    digest = hashlib.sha256(f"tandem-ab:{conversation_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def assistant_routing(*, assistant_name: str = DEFAULT_ASSISTANT, runtime=None) -> Routing:
    """The live deployments (one query); with none yet, the configured ``runtime`` provider
    (``name``, ``model_name``, ``endpoint``) is registered as the active version first."""
    live = list(
        Deployment.objects.filter(assistant__name=assistant_name, ended_at__isnull=True)
        .select_related("model_version", "prompt_version").order_by("created_at")
    )
    primary = next((d for d in live if d.role == DeploymentRole.PRIMARY), None)
    if primary is not None and primary.from_configuration and runtime is not None and (
            primary.model_version.provider, primary.model_version.model_name, primary.model_version.endpoint
    ) != (runtime.name, runtime.model_name, runtime.endpoint):
        # The operator changed the LLM_* settings and no governed version was activated since.
        primary = None
    if primary is None:
        if runtime is None:
            raise LookupError(f"assistant {assistant_name!r} has no active version")
        primary = runtime_register(assistant_name=assistant_name, provider=runtime.name,
                                   model_name=runtime.model_name, endpoint=runtime.endpoint)
    return Routing(primary=primary, splits=[d for d in live if d.role == DeploymentRole.SPLIT],
                   shadows=[d for d in live if d.role == DeploymentRole.SHADOW])


def runtime_register(*, assistant_name: str, provider: str, model_name: str, endpoint: str = "") -> Deployment:
    """First use: record the configured runtime (settings) as the assistant's active model and
    prompt version, so every turn names the exact versions it used. Marked ``bootstrap`` in the
    version events and the audit chain: it was configured by the operator, not approved in
    Tandem. From then on, changes go through the lifecycle (``governance.lifecycle``)."""
    try:
        with transaction.atomic():
            assistant, _ = Assistant.objects.get_or_create(name=assistant_name,
                                                           defaults={"title": "Customer assistant"})
            assistant = Assistant.objects.select_for_update().get(pk=assistant.pk)
            live = Deployment.objects.filter(assistant=assistant, role=DeploymentRole.PRIMARY, ended_at__isnull=True)
            existing = live.select_related("model_version", "prompt_version").first()
            if existing and (existing.model_version.provider, existing.model_version.model_name,
                             existing.model_version.endpoint) == (provider, model_name, endpoint):
                return existing
            if existing and not existing.from_configuration:
                return existing
            if existing:
                existing.ended_at = timezone.now()
                existing.save(update_fields=["ended_at", "updated_at"])
                audit_event_record(action="deployment.primary_ended", target=existing,
                                   data={"reason": "runtime configuration changed"})
                old = existing.model_version
                ModelVersion.objects.filter(pk=old.pk).update(status=VersionStatus.RETIRED)
            model_version = ModelVersion.objects.filter(provider=provider, model_name=model_name,
                                                        endpoint=endpoint).order_by("-version").first()
            if model_version is None:
                name = "offline-extractive" if provider == Provider.OFFLINE else model_name[:120]
                model_version = ModelVersion.objects.create(
                    name=name, version=1, provider=provider, model_name=model_name, endpoint=endpoint,
                    status=VersionStatus.ACTIVE, description="Registered from the runtime configuration.",
                    intended_use="Answer customers' questions from the published help centre, with citations.",
                    limitations=(
                        "Extractive: replies only with sentences of the retrieved articles; it cannot combine facts "
                        "or explain in its own words. English only." if provider == Provider.OFFLINE else ""),
                    risk_level="low" if provider == Provider.OFFLINE else "medium",
                )
                _bootstrap_event(model_version)
            prompt_version = PromptVersion.objects.filter(name=DEFAULT_PROMPT_NAME).order_by("version").first()
            if prompt_version is None:
                prompt_version = PromptVersion.objects.create(
                    name=DEFAULT_PROMPT_NAME, version=1, template=DEFAULT_PROMPT_TEMPLATE,
                    variables=["company", "sources"], status=VersionStatus.ACTIVE,
                    description="The default customer-assistant prompt.",
                )
                _bootstrap_event(prompt_version)
            for version in (model_version, prompt_version):
                if version.status != VersionStatus.ACTIVE:
                    type(version).objects.filter(pk=version.pk).update(status=VersionStatus.ACTIVE)
                    version.status = VersionStatus.ACTIVE
            deployment = Deployment.objects.create(assistant=assistant, role=DeploymentRole.PRIMARY,
                                                   model_version=model_version, prompt_version=prompt_version,
                                                   reason="Registered from the runtime configuration.",
                                                   from_configuration=True)
            audit_event_record(action="deployment.primary_started", target=deployment,
                               data={"assistant": assistant_name, "model_version": str(model_version.pk),
                                     "prompt_version": str(prompt_version.pk), "bootstrap": True})
            return deployment
    except IntegrityError:
        # Another worker registered it first.
        return Deployment.objects.select_related("model_version", "prompt_version").get(
            assistant__name=assistant_name, role=DeploymentRole.PRIMARY, ended_at__isnull=True)


def _bootstrap_event(version) -> None:
    field_name = "model_version" if isinstance(version, ModelVersion) else "prompt_version"
    VersionEvent.objects.create(**{field_name: version}, kind=VersionEventKind.ACTIVATED, to_status=version.status,
                                reason="Registered from the runtime configuration.", data={"bootstrap": True})
    audit_event_record(action=f"{version.kind}_version.registered", target=version,
                       data={"label": version.label, "bootstrap": True})
