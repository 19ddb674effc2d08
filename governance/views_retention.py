"""The retention page: policies per kind of data with their last run and a preview, legal holds,
erasure requests and the run history. Compliance officers and administrators only (model
owners, agents and supervisors get 403). Writes go through ``governance.retention``; a refusal
or bad input re-renders the page with the form's errors (400), never a 500."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from governance.forms_retention import EraseForm, HoldForm, PolicyForm, PreviewForm, ReleaseForm
from governance.models import RetentionPolicy
from governance.retention import (
    RetentionError,
    can_manage_retention,
    data_erase,
    legal_hold_get,
    legal_hold_place,
    legal_hold_release,
    retention_overview,
    retention_policy_set,
    retention_run,
)
from governance.retention_registry import data_kind


def _require(request: HttpRequest) -> None:
    if not can_manage_retention(request.user):
        raise PermissionDenied("Retention and legal holds are for compliance officers and administrators.")


def _describe_errors(form) -> None:
    """Point each invalid field at its error message (the templates give it ``<auto_id>_error``),
    and focus the first one (or the form's first field for a refusal) so the browser scrolls to it."""
    if form is None or not form.is_bound or not form.errors:
        return
    invalid = [name for name in form.errors if name in form.fields and not form.fields[name].widget.is_hidden]
    for name in invalid:
        form.fields[name].widget.attrs["aria-describedby"] = f"{form[name].auto_id}_error"
    visible = [name for name, field in form.fields.items() if not field.widget.is_hidden]
    first = (invalid or visible or [None])[0]
    if first:
        form.fields[first].widget.attrs["autofocus"] = True


def _page(request: HttpRequest, *, status: int = 200, policy_form: PolicyForm | None = None,
          preview_error: tuple[str, str] | None = None, hold_form: HoldForm | None = None,
          release_form: tuple[str, ReleaseForm] | None = None, erase_form: EraseForm | None = None) -> HttpResponse:
    for form in (policy_form, hold_form, erase_form, release_form[1] if release_form else None):
        _describe_errors(form)
    overview = retention_overview()
    cards = []
    for row in overview.kinds:
        bound = policy_form if policy_form is not None and policy_form.data.get("data_kind") == row.handler.name \
            else None
        initial = {"data_kind": row.handler.name, "action": row.policy.action if row.policy else row.handler.actions[0],
                   "after_days": row.policy.after_days if row.policy else None,
                   "enabled": row.policy.enabled if row.policy else True}
        form = bound or PolicyForm(initial=initial, auto_id=f"id_{row.handler.name}_%s")
        form.fields["action"].choices = [(a, label) for a, label in form.fields["action"].choices
                                         if a in row.handler.actions]
        cards.append({
            "row": row, "form": form,
            "preview_error": preview_error[1] if preview_error and preview_error[0] == row.handler.name else "",
            "notes": [(action, row.handler.action_notes.get(action, "")) for action in row.handler.actions],
        })
    forms_release = {}
    if release_form is not None:
        forms_release[release_form[0]] = release_form[1]
    holds = [{"row": r, "form": forms_release.get(str(r.hold.pk)) or ReleaseForm(auto_id=f"id_release_{r.hold.pk}_%s")}
             for r in overview.holds]
    return render(request, "governance/retention.html", {
        "cards": cards, "holds": holds, "released": overview.released, "runs": overview.runs,
        "hold_form": hold_form or HoldForm(auto_id="id_hold_%s"),
        "erase_form": erase_form or EraseForm(auto_id="id_erase_%s"),
        # A post for a kind no card shows (an unknown kind): its errors go above the cards.
        "policies_error": " ".join(e for errors in policy_form.errors.values() for e in errors)
        if policy_form is not None and not any(c["form"] is policy_form for c in cards) else
        (preview_error[1] if preview_error and not preview_error[0] else ""),
    }, status=status)


def _back() -> HttpResponse:
    # The top of the page, where the confirmation message is (an anchor would scroll past it).
    return redirect(reverse("governance:retention_index"))


@login_required
@require_GET
def retention_index(request: HttpRequest) -> HttpResponse:
    _require(request)
    return _page(request)


@login_required
@require_POST
def retention_policy(request: HttpRequest) -> HttpResponse:
    """Create or change the policy of one kind."""
    _require(request)
    form = PolicyForm(request.POST, auto_id=f"id_{request.POST.get('data_kind', 'policy')}_%s")
    if form.is_valid():
        data = form.cleaned_data
        try:
            policy = retention_policy_set(actor=request.user, data_kind=data["data_kind"], action=data["action"],
                                          after_days=data["after_days"], enabled=data["enabled"])
        except RetentionError as exc:
            form.add_service_error(exc)
        else:
            handler = data_kind(policy.data_kind)
            state = "" if policy.enabled else " (disabled: it will not run)"
            messages.success(request, f"{handler.label if handler else policy.data_kind}: "
                                      f"{policy.get_action_display().lower()} after {policy.after_days} days{state}.")
            return _back()
    return _page(request, status=400, policy_form=form)


@login_required
@require_POST
def retention_preview(request: HttpRequest) -> HttpResponse:
    """Count what the kind's policy would do now (a dry run, recorded in the history)."""
    _require(request)
    form = PreviewForm(request.POST)
    if not form.is_valid():
        return _page(request, status=400, preview_error=("", " ".join(form.errors.get("data_kind", []))))
    kind = form.cleaned_data["data_kind"]
    policy = RetentionPolicy.objects.filter(data_kind=kind).first()
    if policy is None:
        return _page(request, status=400, preview_error=(kind, "Save a policy for this kind first; the preview "
                                                               "counts what it would do."))
    run = retention_run(policy=policy, dry_run=True, actor=request.user)
    handler = data_kind(kind)
    messages.info(request, f"{handler.label if handler else kind}: {run.matched - run.held_back} would be "
                           f"{policy.get_action_display().lower()}d now, {run.held_back} held back by legal holds.")
    return _back()


@login_required
@require_POST
def retention_hold_place(request: HttpRequest) -> HttpResponse:
    _require(request)
    form = HoldForm(request.POST, auto_id="id_hold_%s")
    if form.is_valid():
        data = form.cleaned_data
        try:
            hold = legal_hold_place(actor=request.user, name=data["name"], reason=data["reason"],
                                    subject_type=data["subject_type"], subject_id=data["subject_id"],
                                    from_date=data["from_date"], to_date=data["to_date"])
        except RetentionError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, f"Legal hold “{hold.name}” placed: the data it covers is kept until it is "
                                      "released.")
            return _back()
    return _page(request, status=400, hold_form=form)


@login_required
@require_POST
def retention_hold_release(request: HttpRequest, hold_id) -> HttpResponse:
    _require(request)
    hold = legal_hold_get(hold_id=hold_id)
    if hold is None:
        raise Http404("No such legal hold.")
    form = ReleaseForm(request.POST, auto_id=f"id_release_{hold.pk}_%s")
    if form.is_valid():
        try:
            legal_hold_release(actor=request.user, hold_id=hold.pk, reason=form.cleaned_data["reason"])
        except RetentionError as exc:
            if exc.code == "released":  # released meanwhile: say so at the top (its form is gone)
                messages.error(request, str(exc))
                return _page(request, status=400)
            form.add_service_error(exc)
        else:
            messages.success(request, f"Legal hold “{hold.name}” released: the policies apply to its data again "
                                      "from their next run.")
            return _back()
    return _page(request, status=400, release_form=(str(hold.pk), form))


@login_required
@require_POST
def retention_erase(request: HttpRequest) -> HttpResponse:
    """An erasure request for one customer or conversation (refused under a legal hold)."""
    _require(request)
    form = EraseForm(request.POST, auto_id="id_erase_%s")
    if form.is_valid():
        data = form.cleaned_data
        try:
            result = data_erase(actor=request.user, subject_type=data["subject_type"], subject_id=data["subject_id"],
                                reason=data["reason"])
        except RetentionError as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, f"{result.label}: erased ({result.purged} records anonymised, audit "
                                      f"#{result.audit_seq}).")
            return _back()
    return _page(request, status=400, erase_form=form)
