"""Evaluation pages: the runs, starting one, a run's report, its progress, and one result.

Model owners, administrators and compliance officers read them; only model owners and
administrators start runs; anyone else gets 403. A shadow disagreement's result page is also
open to whoever may see its review item in the queue (its subject link), and those who may
work the item record their verdict there."""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation

from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from governance.evaluation import (
    EvaluationRefused,
    disagreement_review,
    evaluation_results_for_run,
    evaluation_run_create,
    evaluation_run_get_for_user,
    evaluation_run_list,
)
from governance.forms_evaluation import EvaluationRunForm
from governance.models import EvaluationResult, EvaluationRun, ModelVersion, PromptVersion, RunKind, RunStatus
from governance.permissions import can_own_models, can_read_governance, can_work_conversations

RUNS_PER_PAGE = 25
RESULTS_PER_PAGE = 20
LIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
DECISION_LABELS = {
    "answer": "Answer", "clarify": "Asks for a detail", "action": "Runs the action", "approval": "Sends for approval",
    "escalate": "Escalates to a person", "smalltalk": "Small talk", "fallback": "No answer found",
    "skipped": "Skipped", "error": "Error",
}
CASE_LABELS = {"intent": "Intent phrase", "qa": "Corrected answer", "curated": "Curated answer",
               "replay": "Recorded turn", "shadow": "Live turn"}


def _reader(request: HttpRequest):
    if not can_read_governance(request.user):
        raise PermissionDenied("Evaluations are for model owners, administrators and compliance officers.")
    return request.user


def _run_for(request: HttpRequest, run_id) -> EvaluationRun:
    try:
        return evaluation_run_get_for_user(user=request.user, run_id=run_id)
    except EvaluationRun.DoesNotExist:
        raise Http404("No such evaluation run.") from None


# --- formatting (the templates only show strings) ------------------------------------------------

def _pct(value) -> str:
    return "—" if value is None else f"{float(value) * 100:.0f}%"


def _ms(value) -> str:
    if value is None:
        return "—"
    return f"{float(value) / 1000:.2f} s" if float(value) >= 1000 else f"{float(value):.0f} ms"


def _money(value) -> str:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, TypeError):
        return "—"
    if not amount:
        return "0"
    return f"{amount:.4f}" if amount >= Decimal("0.01") else f"{amount:.6f}"


def baseline_label(run: EvaluationRun) -> str:
    if run.kind == RunKind.REPLAY:
        return "the recorded turns"
    if run.kind == RunKind.SHADOW:
        return "the live turns"
    if run.baseline_model_id:
        return f"{run.baseline_model.label} + {run.baseline_prompt.label}"
    return "the active version (set when the run starts)"


def pair_label(run: EvaluationRun) -> str:
    return f"{run.candidate_model.label} + {run.candidate_prompt.label}"


def _delta(candidate, baseline, *, lower_is_better: bool = False, percent: bool = False) -> dict:
    """The candidate's difference from the baseline, worded, with whether it is better."""
    if candidate is None or baseline is None:
        return {"text": "", "tone": ""}
    diff = float(candidate) - float(baseline)
    if round(diff * 100 if percent else diff) == 0:  # below what the page shows (a point, a millisecond)
        return {"text": "same", "tone": "same"}
    better = diff < 0 if lower_is_better else diff > 0
    text = f"{diff * 100:+.0f} pts" if percent else (f"{diff:+.0f} ms" if abs(diff) < 1000 else f"{diff / 1000:+.2f} s")
    return {"text": text, "tone": "better" if better else "worse"}


def report_figures(run: EvaluationRun) -> dict | None:
    """The headline figures of a run's summary, worded for the page."""
    summary = run.summary or {}
    if not summary.get("cases"):
        return None
    base, cand = summary.get("baseline") or {}, summary.get("candidate") or {}
    rows = []
    if run.kind == RunKind.DATASET:
        rows.append({"label": "Accuracy", "hint": "Cases where the expected intent or answer was met",
                     "baseline": _pct(base.get("accuracy")), "candidate": _pct(cand.get("accuracy")),
                     "delta": _delta(cand.get("accuracy"), base.get("accuracy"), percent=True)})
    rows += [
        {"label": "Groundedness", "hint": "Answer sentences supported by the cited sources",
         "baseline": _pct(base.get("groundedness")), "candidate": _pct(cand.get("groundedness")),
         "delta": _delta(cand.get("groundedness"), base.get("groundedness"), percent=True)},
        {"label": "Latency, median", "hint": "p50 per turn",
         "baseline": _ms(base.get("latency_p50_ms")), "candidate": _ms(cand.get("latency_p50_ms")),
         "delta": _delta(cand.get("latency_p50_ms"), base.get("latency_p50_ms"), lower_is_better=True)},
        {"label": "Latency, p95", "hint": "19 turns in 20 were faster",
         "baseline": _ms(base.get("latency_p95_ms")), "candidate": _ms(cand.get("latency_p95_ms")),
         "delta": _delta(cand.get("latency_p95_ms"), base.get("latency_p95_ms"), lower_is_better=True)},
        {"label": "Cost", "hint": "All cases, at each version's price",
         "baseline": _money(base.get("cost")), "candidate": _money(cand.get("cost")), "delta": {"text": "", "tone": ""}},
        {"label": "Tokens", "hint": "Input and output",
         "baseline": f"{base.get('tokens') or 0:,}", "candidate": f"{cand.get('tokens') or 0:,}",
         "delta": {"text": "", "tone": ""}},
    ]
    escalation = summary.get("escalation") or {}
    actions = summary.get("actions") or {}
    base_word, cand_word = SIDE_WORDS.get(run.kind, ("Baseline", "Candidate"))
    return {
        "words": {"baseline": base_word, "candidate": cand_word},
        "cases": summary["cases"], "agreement": _pct(summary.get("agreement")),
        "agreement_value": round(float(summary.get("agreement") or 0) * 100),
        "differing": summary.get("differing", 0), "rows": rows, "escalation": escalation,
        "actions": [("Same action and details", actions.get("same", 0)),
                    ("Both act, differently", actions.get("differ", 0)),
                    (f"Only {base_word.lower()} acts", actions.get("baseline_only", 0)),
                    (f"Only {cand_word.lower()} acts", actions.get("candidate_only", 0)),
                    ("Neither proposes an action", actions.get("neither", 0))],
        "stale": run.kind == RunKind.SHADOW and summary["cases"] != run.done,
    }


# Decisions for which the recognised intent says something (an answer's nearest intent does not).
INTENT_DECISIONS = {"clarify", "action", "approval", "escalate", "smalltalk"}


def _side(side: dict, *, show_intent: bool = False) -> dict:
    action = side.get("action") or None
    return {
        "decision": side.get("decision", ""),
        "decision_label": DECISION_LABELS.get(side.get("decision", ""), side.get("decision") or "—"),
        "reply": side.get("reply", ""),
        "intent": side.get("intent", "") if show_intent or side.get("decision") in INTENT_DECISIONS else "",
        "action": action["name"] if action else "",
        "params": [(k, v) for k, v in ((action or {}).get("params") or {}).items()],
        "cited": side.get("cited") or [], "grounded": _pct(side.get("grounded")) if side.get("grounded") is not None
        else "", "latency": _ms(side.get("latency_ms")), "cost": _money(side.get("cost")),
        "met": side.get("met"), "error": side.get("error", ""),
    }


# How the two sides are named on the pages, by kind of run: (baseline, candidate).
SIDE_WORDS = {RunKind.DATASET: ("Active", "Candidate"), RunKind.REPLAY: ("Recorded", "Candidate"),
              RunKind.SHADOW: ("Live", "Shadow")}
SIDE_LABELS = {RunKind.DATASET: ("Active version", "Candidate"), RunKind.REPLAY: ("As recorded", "Candidate"),
               RunKind.SHADOW: ("Active (sent to the customer)", "Shadow")}


def result_row(result: EvaluationResult, kind: str) -> dict:
    expected = result.expected or {}
    baseline_who, candidate_who = SIDE_LABELS.get(kind, ("Baseline", "Candidate"))
    return {
        "result": result, "case_label": CASE_LABELS.get(result.case_type, result.case_type),
        "expected_intent": expected.get("intent", ""), "expected_answer": expected.get("answer", ""),
        "review": expected.get("review"),
        "sides": [(baseline_who, _side(result.baseline or {}, show_intent=result.case_type == "intent"), "baseline"),
                  (candidate_who, _side(result.candidate or {}, show_intent=result.case_type == "intent"),
                   "candidate")],
    }


def progress_data(run: EvaluationRun) -> dict:
    return {"status": run.status, "status_label": run.get_status_display(), "done": run.done, "total": run.total,
            "percent": run.progress_percent, "agreement": (run.summary or {}).get("agreement"),
            "error": run.error, "finished": run.status not in LIVE_STATUSES}


# --- pages --------------------------------------------------------------------------------------

@login_required
@require_GET
def evaluation_list(request: HttpRequest) -> HttpResponse:
    user = _reader(request)
    page = Paginator(evaluation_run_list(user=user), RUNS_PER_PAGE).get_page(request.GET.get("page"))
    rows = [{"run": run, "baseline": baseline_label(run), "candidate": pair_label(run),
             "agreement": _pct(run.agreement), "live": run.status in LIVE_STATUSES} for run in page.object_list]
    return render(request, "governance/evaluation_list.html", {
        "page": page, "rows": rows, "can_start": can_own_models(user),
    })


def _initial_version(model, raw: str | None):
    if not raw:
        return None
    try:
        return model.objects.filter(pk=uuid.UUID(raw)).values_list("pk", flat=True).first()
    except ValueError:
        return None


@login_required
@require_http_methods(["GET", "POST"])
def evaluation_new(request: HttpRequest) -> HttpResponse:
    """Start a dataset run or a replay; ``?model=<id>&prompt=<id>`` preselects the pair."""
    user = _reader(request)
    if not can_own_models(user):
        raise PermissionDenied("Only model owners and administrators start evaluation runs.")
    status = 200
    if request.method == "POST":
        form = EvaluationRunForm(request.POST)
        if form.is_valid():
            try:
                run = evaluation_run_create(actor=user, kind=form.cleaned_data["kind"],
                                            model_version=form.cleaned_data["model_version"],
                                            prompt_version=form.cleaned_data["prompt_version"], params=form.params())
            except EvaluationRefused as exc:
                form.add_error(exc.field if exc.field in form.fields else None, str(exc))
            else:
                flash.success(request, f"The {run.get_kind_display().split(' (')[0].lower()} run of {pair_label(run)} "
                                       f"has started. This page follows its progress.")
                return redirect("governance:evaluation_report", run_id=run.pk)
        status = 400
    else:
        initial = {"model_version": _initial_version(ModelVersion, request.GET.get("model")),
                   "prompt_version": _initial_version(PromptVersion, request.GET.get("prompt"))}
        form = EvaluationRunForm(initial={k: v for k, v in initial.items() if v})
    return render(request, "governance/evaluation_new.html", {"form": form}, status=status)


@login_required
@require_GET
def evaluation_report(request: HttpRequest, run_id) -> HttpResponse:
    _reader(request)
    run = _run_for(request, run_id)
    show_all = request.GET.get("show") == "all"
    results = Paginator(evaluation_results_for_run(run=run, differing_only=not show_all), RESULTS_PER_PAGE)
    page = results.get_page(request.GET.get("page"))
    return render(request, "governance/evaluation_report.html", {
        "run": run, "figures": report_figures(run), "progress": progress_data(run),
        "live": run.status in LIVE_STATUSES, "baseline": baseline_label(run), "candidate": pair_label(run),
        "page": page, "rows": [result_row(r, run.kind) for r in page.object_list], "show_all": show_all,
        "params": {k: v for k, v in (run.params or {}).items() if k != "plan"},
        "can_start": can_own_models(request.user),
    })


@login_required
@require_GET
def evaluation_progress(request: HttpRequest, run_id) -> JsonResponse:
    """A small JSON the report polls while a run is queued or running."""
    if not can_read_governance(request.user):
        return JsonResponse({"error": "Evaluations are for model owners, administrators and compliance officers."},
                            status=403)
    try:
        run = evaluation_run_get_for_user(user=request.user, run_id=run_id)
    except EvaluationRun.DoesNotExist:
        return JsonResponse({"error": "No such evaluation run."}, status=404)
    return JsonResponse(progress_data(run))


def _result_for(request: HttpRequest, run_id, result_id) -> tuple[EvaluationResult, dict | None]:
    """The result and its review item as the user may see it: governance readers see every
    result; people of the queue only a shadow result whose item they may see."""
    reader = can_read_governance(request.user)
    if not reader and not can_work_conversations(request.user):
        raise PermissionDenied("Evaluations are for model owners, administrators and compliance officers.")
    result = (EvaluationResult.objects.select_related("run", "run__candidate_model", "run__candidate_prompt",
                                                      "run__baseline_model", "run__baseline_prompt")
              .filter(pk=result_id, run_id=run_id).first())
    if result is None:
        raise Http404("No such result.")
    review = disagreement_review()
    item = review.item_for(user=request.user, result=result) if review else None
    if not reader and item is None:
        raise Http404("No such result, or its review item is not in your teams.")
    return result, item


def _result_page(request: HttpRequest, result: EvaluationResult, item: dict | None, *, error: str = "",
                 posted: dict | None = None, status: int = 200) -> HttpResponse:
    run = result.run
    return render(request, "governance/evaluation_result.html", {
        "run": run, "row": result_row(result, run.kind), "item": item, "baseline": baseline_label(run),
        "candidate": pair_label(run), "reader": can_read_governance(request.user), "error": error,
        "posted": posted or {},
    }, status=status)


@login_required
@require_GET
def evaluation_result(request: HttpRequest, run_id, result_id) -> HttpResponse:
    """One case side by side: the input, what was expected, the active side and the candidate."""
    result, item = _result_for(request, run_id, result_id)
    return _result_page(request, result, item)


@login_required
@require_POST
def evaluation_result_verdict(request: HttpRequest, run_id, result_id) -> HttpResponse:
    """Resolve a shadow disagreement's review item with the reviewer's verdict."""
    result, item = _result_for(request, run_id, result_id)
    back = reverse("governance:evaluation_result", args=[run_id, result_id])
    review = disagreement_review()
    if item is None or review is None or not item["may_decide"]:
        raise PermissionDenied("You may not decide on this disagreement: it is closed, in another team's queue, "
                               "or your role reads only.")
    posted = {"outcome": request.POST.get("outcome", ""), "note": request.POST.get("note", "").strip()}
    try:
        review.decide(actor=request.user, result=result, outcome=posted["outcome"], note=posted["note"],
                      expected_version=request.POST.get("version"))
    except EvaluationRefused as exc:
        # A bad choice or a stale page: the page again, with the reason and what was typed.
        item = review.item_for(user=request.user, result=result)
        return _result_page(request, result, item, error=str(exc), posted=posted,
                            status=409 if exc.code == "refused" else 400)
    flash.success(request, "Thanks: your verdict is recorded with the evaluation.")
    return redirect(back)
