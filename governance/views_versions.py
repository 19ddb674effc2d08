"""Model owners' pages for versions and deployments (``/governance/``), and each version's
technical documentation.

Who: model owners and administrators read and act; compliance officers read every page (no
forms are shown to them, and their POSTs answer 403); everyone else gets 403 and anonymous
visitors the sign-in page. Every POST calls one ``governance.lifecycle`` service. When the
lifecycle refuses (it audits the refusal and changes nothing), the page is shown again with the
reason and what was typed, with the status of ``refusal_status``: 403 when the person may not
(their own version: four eyes), 400 for bad input (no reason, no evidence, a malformed form),
409 when the state does not allow it (wrong status, already active, nothing to roll back).

The reads (``*_list``, ``*_get_for_user``, ``overview``) are the selectors of these pages and of
the governance API (``governance/api``)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from urllib.parse import urlencode, urlparse

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Max
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from governance import lifecycle
from governance.exceptions import LifecycleRefused
from governance.forms_versions import FORMS, DecisionForm, DeployForm, ReasonForm, parameters_help
from governance.models import (
    DEPLOYABLE_STATUSES,
    AuditCheckpoint,
    AuditEvent,
    Deployment,
    DeploymentRole,
    EvaluationRun,
    Provider,
    RunStatus,
    VersionEventKind,
    VersionStatus,
)
from governance.permissions import can_own_models, can_read_governance
from governance.selectors import (
    KINDS,
    READ_DENIED,
    deployment_get_for_user,
    deployments_live,
    overview,
    split_live,
    version_deployments,
    version_events,
    version_get_for_user,
    version_runs,
)
from governance.services import DEFAULT_PROMPT_TEMPLATE

PARTNER = {"model": "prompt", "prompt": "model"}
WRITE_DENIED = "Only model owners and administrators change versions and deployments; your role reads them."

# Refusal codes of governance.lifecycle by meaning; any other code is a state conflict (409).
FORBIDDEN_CODES = frozenset({"not_model_owner", "own_version"})
BAD_INPUT_CODES = frozenset({"invalid", "reason_required", "evidence_required"})


def refusal_status(exc: LifecycleRefused) -> int:
    if exc.code in FORBIDDEN_CODES:
        return 403
    if exc.code in BAD_INPUT_CODES:
        return 400
    return 409


# --- the shared summary of an evaluation run ----------------------------------------------------

METRICS = [("groundedness", "Groundedness", "share"), ("accuracy", "Accuracy (expected intent or answer met)", "share"),
           ("latency_p50_ms", "Latency, median", "ms"), ("latency_p95_ms", "Latency, 95th percentile", "ms"),
           ("cost", "Cost", "money"), ("tokens", "Tokens", "count")]
ESCALATION = [("both", "Both escalated"), ("baseline_only", "Only the baseline escalated"),
              ("candidate_only", "Only the candidate escalated"), ("neither", "Neither escalated")]
ACTIONS = [("same", "Same action"), ("differ", "Different actions"), ("baseline_only", "Only the baseline acted"),
           ("candidate_only", "Only the candidate acted"), ("neither", "Neither acted")]


def _shown(value, unit: str) -> str:
    if value is None or value == "":
        return "—"
    try:
        if unit == "share":
            return f"{float(value) * 100:.1f} %"
        if unit == "ms":
            return f"{float(value):,.0f} ms"
        if unit == "money":
            amount = Decimal(str(value)).quantize(Decimal("0.000001")).normalize()
            return f"{amount:f}"
        return f"{int(value):,}"
    except (TypeError, ValueError, InvalidOperation):
        return str(value)


def run_report(run: EvaluationRun) -> dict | None:
    """A run's ``summary`` (the shared schema) as rows to show; None before there is one."""
    summary = run.summary if isinstance(run.summary, dict) else {}
    if not summary:
        return None
    baseline = summary.get("baseline") if isinstance(summary.get("baseline"), dict) else {}
    candidate = summary.get("candidate") if isinstance(summary.get("candidate"), dict) else {}
    escalation = summary.get("escalation") if isinstance(summary.get("escalation"), dict) else {}
    actions = summary.get("actions") if isinstance(summary.get("actions"), dict) else {}
    return {
        "cases": _shown(summary.get("cases"), "count"),
        "agreement": _shown(summary.get("agreement"), "share"),
        "differing": _shown(summary.get("differing"), "count"),
        "metrics": [{"label": label, "baseline": _shown(baseline.get(key), unit),
                     "candidate": _shown(candidate.get(key), unit)}
                    for key, label, unit in METRICS if key in baseline or key in candidate],
        "escalation": [(label, _shown(escalation.get(key), "count")) for key, label in ESCALATION if key in escalation],
        "actions": [(label, _shown(actions.get(key), "count")) for key, label in ACTIONS if key in actions],
    }


def evaluation_url(run_id) -> str:
    """The evaluation pages are mounted at ``evaluations/`` below this app's root."""
    return f"{reverse('governance:versions_overview')}evaluations/{run_id}/"


def new_evaluation_url(*, model_id=None, prompt_id=None) -> str:
    query = {k: str(v) for k, v in (("model", model_id), ("prompt", prompt_id)) if v}
    return f"{reverse('governance:versions_overview')}evaluations/new/" + (f"?{urlencode(query)}" if query else "")


def version_url(version) -> str:
    return reverse("governance:versions_detail", args=[version.kind, version.pk])


# --- access ------------------------------------------------------------------------------------

def _page(*, write: bool = False):
    """Sign-in, then the role: read pages for anyone who may read governance, forms and acts
    for model owners and administrators."""

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        @login_required
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not can_read_governance(request.user):
                raise PermissionDenied(READ_DENIED)
            if write and not can_own_models(request.user):
                raise PermissionDenied(WRITE_DENIED)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def _version(request: HttpRequest, kind: str, pk):
    try:
        return version_get_for_user(user=request.user, kind=kind, pk=pk)
    except KINDS[kind].DoesNotExist:
        raise Http404(f"No {kind} version with that id.") from None


# --- overview ------------------------------------------------------------------------------------

@require_GET
@_page()
def versions_overview(request: HttpRequest) -> HttpResponse:
    return render(request, "governance/overview.html", overview(user=request.user))


def _overview_refused(request: HttpRequest, exc: LifecycleRefused) -> HttpResponse:
    return render(request, "governance/overview.html", {**overview(user=request.user), "refusal": str(exc)},
                  status=refusal_status(exc))


# --- a version -----------------------------------------------------------------------------------

def _detail_context(request: HttpRequest, version, *, posted: str = "", data=None, errors=None,
                    refusal: str = "") -> dict:
    """The detail page; ``posted`` names the form whose values (``data``) and ``errors`` are
    shown again after a refusal, so nothing typed is lost."""
    kind, partner_kind = version.kind, PARTNER[version.kind]
    user = request.user
    live = deployments_live()
    primary, _, _ = split_live(live)
    runs = list(version_runs(version))
    for run in runs:
        run.report = run_report(run)
        run.url = evaluation_url(run.pk)
    evidence = [r for r in runs if r.status == RunStatus.DONE]  # lifecycle.evidence_runs_for
    partners = list(KINDS[partner_kind].objects.filter(
        status__in=[*DEPLOYABLE_STATUSES, VersionStatus.SUBMITTED]).order_by("name", "-version"))
    live_partner_id = getattr(primary, f"{partner_kind}_version_id", None) if primary else None
    deployments = list(version_deployments(version))
    is_live_primary = bool(primary and getattr(primary, f"{kind}_version_id") == version.pk)
    values = {"reason": "", "partner": str(live_partner_id or ""), "percent": "", "evidence": []}
    if data is not None:
        values |= {"reason": data.get("reason", ""), "partner": data.get("partner", values["partner"]),
                   "percent": data.get("percent", ""), "evidence": data.getlist("evidence")}
    eval_ids = {"model_id": version.pk, "prompt_id": primary.prompt_version_id if primary else None} \
        if kind == "model" else {"model_id": primary.model_version_id if primary else None, "prompt_id": version.pk}
    events = list(version_events(version))
    derived = {e.data["derived_from"] for e in events if e.data.get("derived_from")}
    if derived:
        labels = {str(v.pk): v.label for v in KINDS[kind].objects.filter(pk__in=derived)}
        for event in events:
            event.derived_label = labels.get(event.data.get("derived_from", ""), "an earlier version")
    return {
        "version": version, "kind": kind, "partner_kind": partner_kind,
        "events": events,
        "deployments": deployments, "live_deployments": [d for d in deployments if d.ended_at is None],
        "runs": runs, "evidence_runs": evidence,
        "partners": partners, "primary": primary, "is_live_primary": is_live_primary,
        "can_own": can_own_models(user),
        "is_author": version.created_by_id is not None and version.created_by_id == user.pk,
        "deployable": version.status in DEPLOYABLE_STATUSES,
        "retirable": version.status in (VersionStatus.APPROVED, VersionStatus.ACTIVE, VersionStatus.SHADOW)
        and not is_live_primary,
        "new_evaluation_url": new_evaluation_url(**eval_ids),
        "parameters_help": parameters_help(version.provider) if kind == "model" else "",
        "parameters_json": json.dumps(version.parameters, indent=2) if kind == "model" and version.parameters else "",
        "posted": posted, "values": values, "errors": errors or {}, "refusal": refusal,
    }


def _detail(request: HttpRequest, version, *, status: int = 200, **kwargs) -> HttpResponse:
    return render(request, "governance/version_detail.html", _detail_context(request, version, **kwargs),
                  status=status)


@require_GET
@_page()
def versions_detail(request: HttpRequest, kind: str, pk) -> HttpResponse:
    return _detail(request, _version(request, kind, pk))


def _act(request: HttpRequest, version, *, posted: str, call: Callable[[], object], success: Callable[[object], str],
         then: Callable[[object], str] | None = None) -> HttpResponse:
    """Run one lifecycle service; success → a message and a redirect, refusal → the page again."""
    try:
        result = call()
    except LifecycleRefused as exc:
        version.refresh_from_db()
        return _detail(request, version, status=refusal_status(exc), posted=posted, data=request.POST,
                       refusal=str(exc))
    messages.success(request, success(result))
    return redirect(then(result) if then else version_url(version))


def _form_refused(request: HttpRequest, version, *, posted: str, form) -> HttpResponse:
    errors = {name: " ".join(str(e) for e in errs) for name, errs in form.errors.items()}
    return _detail(request, version, status=400, posted=posted, data=request.POST, errors=errors,
                   refusal="Check the form: " + " ".join(errors.values()))


@require_POST
@_page(write=True)
def versions_submit(request: HttpRequest, kind: str, pk) -> HttpResponse:
    version = _version(request, kind, pk)
    return _act(request, version, posted="submit",
                call=lambda: lifecycle.version_submit(actor=request.user, version=version),
                success=lambda v: f"{v.label} is submitted for approval: another model owner decides on it.")


def _decision(request: HttpRequest, kind: str, pk, *, approve: bool) -> HttpResponse:
    version = _version(request, kind, pk)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        return _form_refused(request, version, posted="decision", form=form)
    reason = form.cleaned_data["reason"]
    if approve:
        return _act(request, version, posted="decision",
                    call=lambda: lifecycle.version_approve(actor=request.user, version=version, reason=reason,
                                                           evidence_run_ids=form.cleaned_data["evidence"]),
                    success=lambda v: f"{v.label} is approved; it can now be activated.")
    return _act(request, version, posted="decision",
                call=lambda: lifecycle.version_reject(actor=request.user, version=version, reason=reason),
                success=lambda v: f"{v.label} is rejected.")


@require_POST
@_page(write=True)
def versions_approve(request: HttpRequest, kind: str, pk) -> HttpResponse:
    return _decision(request, kind, pk, approve=True)


@require_POST
@_page(write=True)
def versions_reject(request: HttpRequest, kind: str, pk) -> HttpResponse:
    return _decision(request, kind, pk, approve=False)


@require_POST
@_page(write=True)
def versions_derive(request: HttpRequest, kind: str, pk) -> HttpResponse:
    version = _version(request, kind, pk)
    return _act(request, version, posted="derive",
                call=lambda: lifecycle.version_derive(actor=request.user, version=version),
                success=lambda new: f"Draft {new.label} created from v{version.version}: edit it, then submit it.",
                then=lambda new: reverse("governance:versions_edit", args=[new.kind, new.pk]))


@require_POST
@_page(write=True)
def versions_retire(request: HttpRequest, kind: str, pk) -> HttpResponse:
    version = _version(request, kind, pk)
    form = ReasonForm(request.POST)
    form.is_valid()
    return _act(request, version, posted="retire",
                call=lambda: lifecycle.version_retire(actor=request.user, version=version,
                                                      reason=form.cleaned_data.get("reason", "")),
                success=lambda v: f"{v.label} is retired.")


def _deploy(request: HttpRequest, kind: str, pk, *, how: str) -> HttpResponse:
    version = _version(request, kind, pk)
    form = DeployForm(request.POST, partner_model=KINDS[PARTNER[kind]], split=how == "split")
    if not form.is_valid():
        return _form_refused(request, version, posted="deploy", form=form)
    partner, reason = form.cleaned_data["partner"], form.cleaned_data["reason"]
    model_version, prompt_version = (version, partner) if kind == "model" else (partner, version)
    pair = f"{model_version.label} with {prompt_version.label}"
    overview_url = reverse("governance:versions_overview")
    if how == "activate":
        return _act(request, version, posted="deploy", then=lambda d: overview_url,
                    call=lambda: lifecycle.deployment_activate(actor=request.user, model_version=model_version,
                                                               prompt_version=prompt_version, reason=reason),
                    success=lambda d: f"{pair} is active: the next turn uses it.")
    if how == "split":
        percent = form.cleaned_data["percent"]
        return _act(request, version, posted="deploy", then=lambda d: overview_url,
                    call=lambda: lifecycle.deployment_split_start(actor=request.user, model_version=model_version,
                                                                  prompt_version=prompt_version, percent=percent,
                                                                  reason=reason),
                    success=lambda d: f"A/B test started: {percent} % of conversations get {pair}.")
    return _act(request, version, posted="deploy", then=lambda d: overview_url,
                call=lambda: lifecycle.deployment_shadow_start(actor=request.user, model_version=model_version,
                                                               prompt_version=prompt_version, reason=reason),
                success=lambda d: f"{pair} runs in shadow: its answers are recorded in a shadow evaluation, "
                                  f"never sent.")


@require_POST
@_page(write=True)
def versions_activate(request: HttpRequest, kind: str, pk) -> HttpResponse:
    return _deploy(request, kind, pk, how="activate")


@require_POST
@_page(write=True)
def versions_split(request: HttpRequest, kind: str, pk) -> HttpResponse:
    return _deploy(request, kind, pk, how="split")


@require_POST
@_page(write=True)
def versions_shadow(request: HttpRequest, kind: str, pk) -> HttpResponse:
    return _deploy(request, kind, pk, how="shadow")


# --- new and edit --------------------------------------------------------------------------------

def _form_page(request: HttpRequest, *, kind: str, form, version=None, status: int = 200,
               frozen: bool = False) -> HttpResponse:
    return render(request, "governance/version_form.html", {
        "kind": kind, "form": form, "version": version, "frozen": frozen,
        "parameters_help": {p: parameters_help(p) for p in Provider.values},
    }, status=status)


def _new_initial(kind: str) -> dict:
    if kind == "model":
        return {"provider": Provider.OFFLINE, "parameters": "{}"}
    primary, _, _ = split_live(deployments_live())
    live_prompt = primary.prompt_version if primary else None
    return {"name": live_prompt.name if live_prompt else "customer-assistant",
            "template": live_prompt.template if live_prompt else DEFAULT_PROMPT_TEMPLATE,
            "tools_mode": "all"}


@require_http_methods(["GET", "POST"])
@_page(write=True)
def versions_new(request: HttpRequest, kind: str) -> HttpResponse:
    form_class = FORMS[kind]
    if request.method == "GET":
        return _form_page(request, kind=kind, form=form_class(initial=_new_initial(kind)))
    form = form_class(request.POST)
    if not form.is_valid():
        return _form_page(request, kind=kind, form=form, status=400)
    create = lifecycle.model_version_create if kind == "model" else lifecycle.prompt_version_create
    try:
        version = create(actor=request.user, name=form.cleaned_data["name"], **form.service_fields())
    except LifecycleRefused as exc:
        form.add_error(None, str(exc))
        return _form_page(request, kind=kind, form=form, status=refusal_status(exc))
    messages.success(request, f"Draft {version.label} created. Run an evaluation of it, then submit it for "
                              f"approval.")
    return redirect(version_url(version))


@require_http_methods(["GET", "POST"])
@_page(write=True)
def versions_edit(request: HttpRequest, kind: str, pk) -> HttpResponse:
    version = _version(request, kind, pk)
    form_class = FORMS[kind]
    initial = form_class.initial_from(version)
    frozen = version.status != VersionStatus.DRAFT
    if request.method == "GET":
        return _form_page(request, kind=kind, version=version, frozen=frozen,
                          form=form_class(initial=initial, editing=True))
    form = form_class(request.POST, initial=initial, editing=True)
    valid = form.is_valid()
    if not valid and not frozen:
        return _form_page(request, kind=kind, version=version, form=form, status=400)
    fields = form.service_fields() if valid else {}
    changed = {name: value for name, value in fields.items() if getattr(version, name) != value}
    if valid and not changed and not frozen:
        messages.info(request, "Nothing changed.")
        return redirect(version_url(version))
    try:
        # A frozen version goes to the service too: it refuses, and the refusal is audited.
        lifecycle.version_update(actor=request.user, version=version, **changed)
    except LifecycleRefused as exc:
        version.refresh_from_db()
        form.add_error(None, str(exc))
        return _form_page(request, kind=kind, version=version, form=form, status=refusal_status(exc),
                          frozen=version.status != VersionStatus.DRAFT)
    messages.success(request, f"{version.label} saved.")
    return redirect(version_url(version))


# --- deployments -----------------------------------------------------------------------------------

@require_http_methods(["GET", "POST"])
@_page(write=True)
def deployment_rollback(request: HttpRequest) -> HttpResponse:
    """A confirmation (what is live, what comes back) and the reason; POST rolls back."""
    context = overview(user=request.user)
    if request.method == "GET":
        return render(request, "governance/rollback.html", {**context, "reason": ""})
    reason = request.POST.get("reason", "")
    try:
        deployment = lifecycle.deployment_rollback(actor=request.user, reason=reason)
    except LifecycleRefused as exc:
        return render(request, "governance/rollback.html", {**context, "reason": reason, "refusal": str(exc)},
                      status=refusal_status(exc))
    messages.success(request, f"Rolled back: {deployment.model_version.label} with "
                              f"{deployment.prompt_version.label} answer from the next turn.")
    return redirect("governance:versions_overview")


@require_POST
@_page(write=True)
def deployment_end(request: HttpRequest, pk) -> HttpResponse:
    try:
        deployment = deployment_get_for_user(user=request.user, pk=pk)
    except Deployment.DoesNotExist:
        raise Http404("No deployment with that id.") from None
    form = ReasonForm(request.POST)
    form.is_valid()
    try:
        lifecycle.deployment_end(actor=request.user, deployment=deployment, reason=form.cleaned_data.get("reason", ""))
    except LifecycleRefused as exc:
        return _overview_refused(request, exc)
    what = "A/B test" if deployment.role == DeploymentRole.SPLIT else deployment.get_role_display().lower()
    messages.success(request, f"The {what} of {deployment.model_version.label} with {deployment.prompt_version.label} "
                              f"has ended.")
    return redirect("governance:versions_overview")


# --- technical documentation -------------------------------------------------------------------

def documentation(*, version) -> dict:
    """The technical documentation of a version (EU AI Act, Annex IV in spirit): identification,
    intended use and limits, risk, what it was deployed with, evaluations, approval, deployment
    history, human oversight, logging, from the model card and the records."""
    kind, partner_kind = version.kind, PARTNER[version.kind]
    events = list(version_events(version))
    deployments = list(version_deployments(version))
    runs = [r for r in version_runs(version) if r.status == RunStatus.DONE]
    for run in runs:
        run.report = run_report(run)
        run.url = evaluation_url(run.pk)
    partners: dict = {}
    for deployment in reversed(deployments):
        partner = getattr(deployment, f"{partner_kind}_version")
        entry = partners.setdefault(partner.pk, {"version": partner, "roles": set(), "first": deployment.created_at})
        entry["roles"].add(deployment.get_role_display())
    target_type = f"governance.{type(version).__name__.lower()}"
    decisions = {VersionEventKind.SUBMITTED, VersionEventKind.APPROVED, VersionEventKind.REJECTED}
    return {
        "version": version, "kind": kind, "partner_kind": partner_kind,
        "endpoint_host": (urlparse(version.endpoint).hostname or version.endpoint) if kind == "model" else "",
        "partners": [{**p, "roles": sorted(p["roles"])} for p in partners.values()],
        "runs": runs,
        "approval_events": [e for e in events if e.kind in decisions],
        "bootstrapped": any(e.data.get("bootstrap") for e in events),
        "deployments": deployments,
        "audit_about": AuditEvent.objects.filter(target_type=target_type, target_id=str(version.pk)).count(),
        "turns_recorded": AuditEvent.objects.filter(action="ai.turn",
                                                    **{f"data__{kind}_version": str(version.pk)}).count(),
        "chain_length": AuditEvent.objects.aggregate(n=Max("seq"))["n"] or 0,
        "checkpoint": AuditCheckpoint.objects.order_by("-seq").first(),
        "generated_at": timezone.now(),
    }


@require_GET
@_page()
def versions_documentation(request: HttpRequest, kind: str, pk) -> HttpResponse:
    version = _version(request, kind, pk)
    return render(request, "governance/documentation.html", documentation(version=version))
