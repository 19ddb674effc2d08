"""Governance API: model and prompt versions, their lifecycle, and the assistant's deployments.

Session authentication, as the pages. Model owners and administrators read and act; compliance
officers read (GET 200) and change nothing (403); everyone else gets 403 whatever they ask. An
unknown id answers 404. Every POST or PATCH calls one ``governance.lifecycle`` service; a
refusal answers ``{"detail": reason, "code": code}`` with the pages' statuses
(``views_versions.refusal_status``): 403 who may not (four eyes), 400 bad input, 409 state
conflicts. A body the API cannot read answers 400 with ``"code": "invalid"`` and ``errors`` per
field. Nothing here writes a model: services do.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from governance import lifecycle
from governance.api.serializers import (
    BadRequest,
    deployment_as_dict,
    event_as_dict,
    evidence_parse,
    id_parse,
    model_fields_parse,
    percent_parse,
    prompt_fields_parse,
    reason_parse,
    run_as_dict,
    version_as_dict,
)
from governance.exceptions import LifecycleRefused
from governance.models import Deployment, ModelVersion, PromptVersion, VersionStatus
from governance.permissions import can_own_models, can_read_governance
from governance.selectors import (
    KINDS,
    READ_DENIED,
    deployment_get_for_user,
    deployment_list,
    deployments_live,
    version_deployments,
    version_events,
    version_get_for_user,
    version_list,
    version_runs,
)
from governance.views_versions import WRITE_DENIED, refusal_status


class ReadsGovernance(BasePermission):
    """Reading: model owners, compliance officers, administrators. Changing: model owners and
    administrators. (Here rather than in governance/permissions.py, which holds role checks, not
    DRF classes.)"""

    message = READ_DENIED

    def has_permission(self, request, view) -> bool:
        if not can_read_governance(request.user):
            self.message = READ_DENIED
            return False
        if request.method not in SAFE_METHODS and not can_own_models(request.user):
            self.message = WRITE_DENIED
            return False
        return True


class Page(LimitOffsetPagination):
    default_limit = 50
    max_limit = 100


class GovernanceAPIView(APIView):
    permission_classes = [IsAuthenticated, ReadsGovernance]
    parser_classes = [JSONParser]
    kind = "model"

    def handle_exception(self, exc):
        # Refusals become answers with the reason, never a 500.
        if isinstance(exc, BadRequest):
            body = {"detail": str(exc), "code": "invalid"} | ({"errors": exc.errors} if exc.errors else {})
            return Response(body, status=status.HTTP_400_BAD_REQUEST)
        if isinstance(exc, LifecycleRefused):
            return Response({"detail": str(exc), "code": exc.code}, status=refusal_status(exc))
        return super().handle_exception(exc)

    def version(self, pk):
        try:
            return version_get_for_user(user=self.request.user, kind=self.kind, pk=pk)
        except (KINDS[self.kind].DoesNotExist, ValidationError, ValueError):
            raise NotFound(f"No {self.kind} version with that id.") from None


def _detail(version) -> dict:
    return {**version_as_dict(version),
            "events": [event_as_dict(e) for e in version_events(version)],
            "deployments": [deployment_as_dict(d) for d in version_deployments(version)],
            "evaluation_runs": [run_as_dict(r) for r in version_runs(version)]}


class VersionListView(GovernanceAPIView):
    """GET: versions by name then newest number (``status`` filters, ``limit`` at most 100,
    ``offset``). POST: a new draft → 201."""

    def get(self, request):
        versions = version_list(kind=self.kind)
        wanted = (request.query_params.get("status") or "").strip()
        if wanted:
            if wanted not in VersionStatus.values:
                raise BadRequest(f"Unknown status {wanted}; choose among {', '.join(VersionStatus.values)}.")
            versions = versions.filter(status=wanted)
        page = Page()
        rows = page.paginate_queryset(versions, request, view=self)
        return page.get_paginated_response([version_as_dict(v) for v in rows])

    def post(self, request):
        if self.kind == "model":
            fields = model_fields_parse(request.data)
            version = lifecycle.model_version_create(actor=request.user, **fields)
        else:
            fields = prompt_fields_parse(request.data)
            version = lifecycle.prompt_version_create(actor=request.user, **fields)
        version = self.version(version.pk)
        return Response(_detail(version), status=status.HTTP_201_CREATED,
                        headers={"Location": request.build_absolute_uri(f"{version.pk}/")})


class VersionDetailView(GovernanceAPIView):
    """GET: the version with its events, deployments and evaluation runs. PATCH: edit a draft
    (any content field; a submitted or later version answers 409)."""

    def get(self, request, pk):
        return Response(_detail(self.version(pk)))

    def patch(self, request, pk):
        version = self.version(pk)
        parse = model_fields_parse if self.kind == "model" else prompt_fields_parse
        fields = parse(request.data, current=version)
        if not fields:
            raise BadRequest("Send the fields to change.")
        lifecycle.version_update(actor=request.user, version=version, **fields)
        return Response(_detail(self.version(pk)))


class VersionActView(GovernanceAPIView):
    """POST ``submit``; ``approve`` ``{"reason", "evidence": [run ids]}``; ``reject``
    ``{"reason"}``; ``derive`` (→ 201, the new draft); ``retire`` ``{"reason"}``."""

    def post(self, request, pk, action):
        version = self.version(pk)
        actor = request.user
        if action == "submit":
            lifecycle.version_submit(actor=actor, version=version)
        elif action == "approve":
            lifecycle.version_approve(actor=actor, version=version, reason=reason_parse(request.data),
                                      evidence_run_ids=evidence_parse(request.data))
        elif action == "reject":
            lifecycle.version_reject(actor=actor, version=version, reason=reason_parse(request.data))
        elif action == "retire":
            lifecycle.version_retire(actor=actor, version=version, reason=reason_parse(request.data))
        else:  # derive
            new = lifecycle.version_derive(actor=actor, version=version)
            return Response(_detail(self.version(new.pk)), status=status.HTTP_201_CREATED)
        return Response(_detail(self.version(pk)))


# --- deployments -----------------------------------------------------------------------------------

def _pair(request) -> tuple[ModelVersion, PromptVersion]:
    model_id, prompt_id = id_parse(request.data, "model_version"), id_parse(request.data, "prompt_version")
    model_version = ModelVersion.objects.filter(pk=model_id).first()
    prompt_version = PromptVersion.objects.filter(pk=prompt_id).first()
    if model_version is None or prompt_version is None:
        raise NotFound("No model version with that id." if model_version is None else
                       "No prompt version with that id.")
    return model_version, prompt_version


def _deployment(deployment: Deployment) -> dict:
    return deployment_as_dict(deployment_list().get(pk=deployment.pk))


class DeploymentListView(GovernanceAPIView):
    """GET: ``live`` (the assistant's live deployments, in start order) and the history, newest
    first (``limit`` at most 100, ``offset``)."""

    def get(self, request):
        live = deployments_live()
        page = Page()
        rows = page.paginate_queryset(deployment_list(), request, view=self)
        return Response({"live": [deployment_as_dict(d) for d in live], "count": page.count,
                         "next": page.get_next_link(), "previous": page.get_previous_link(),
                         "results": [deployment_as_dict(d) for d in rows]})


class DeploymentDetailView(GovernanceAPIView):
    def get(self, request, pk):
        try:
            return Response(deployment_as_dict(deployment_get_for_user(user=request.user, pk=pk)))
        except (Deployment.DoesNotExist, ValidationError, ValueError):
            raise NotFound("No deployment with that id.") from None


class DeploymentActivateView(GovernanceAPIView):
    """POST ``{"model_version", "prompt_version", "reason"}``: the pair answers from the next turn."""

    def post(self, request):
        model_version, prompt_version = _pair(request)
        deployment = lifecycle.deployment_activate(actor=request.user, model_version=model_version,
                                                   prompt_version=prompt_version, reason=reason_parse(request.data))
        return Response(_deployment(deployment), status=status.HTTP_201_CREATED)


class DeploymentRollbackView(GovernanceAPIView):
    """POST ``{"reason"}``: the previous active pair answers from the next turn."""

    def post(self, request):
        deployment = lifecycle.deployment_rollback(actor=request.user, reason=reason_parse(request.data))
        return Response(_deployment(deployment), status=status.HTTP_201_CREATED)


class DeploymentSplitView(GovernanceAPIView):
    """POST ``{"model_version", "prompt_version", "percent", "reason"}``: an A/B variant."""

    def post(self, request):
        model_version, prompt_version = _pair(request)
        deployment = lifecycle.deployment_split_start(actor=request.user, model_version=model_version,
                                                      prompt_version=prompt_version, percent=percent_parse(request.data),
                                                      reason=reason_parse(request.data))
        return Response(_deployment(deployment), status=status.HTTP_201_CREATED)


class DeploymentShadowView(GovernanceAPIView):
    """POST ``{"model_version", "prompt_version", "reason"}``: a shadow, with its running
    shadow evaluation run."""

    def post(self, request):
        model_version, prompt_version = _pair(request)
        deployment = lifecycle.deployment_shadow_start(actor=request.user, model_version=model_version,
                                                       prompt_version=prompt_version, reason=reason_parse(request.data))
        return Response(_deployment(deployment), status=status.HTTP_201_CREATED)


class DeploymentEndView(GovernanceAPIView):
    """POST ``{"reason"}`` (optional): stop an A/B variant or a shadow."""

    def post(self, request, pk):
        try:
            deployment = deployment_get_for_user(user=request.user, pk=pk)
        except (Deployment.DoesNotExist, ValidationError, ValueError):
            raise NotFound("No deployment with that id.") from None
        lifecycle.deployment_end(actor=request.user, deployment=deployment, reason=reason_parse(request.data))
        return Response(_deployment(deployment))
