"""Evaluation runs: starting them, recording their progress and results, and reading them.

A run compares a *candidate* model + prompt version pair with a *baseline*: the live primary
deployment's pair (dataset runs, recorded on the run when it starts), what the assistant really
did (replays of recorded conversations), or the live turn (shadow runs, which collect while a
shadow deployment serves; ``governance.lifecycle.deployment_shadow_start`` creates them).

Governance is the lowest layer, so the work itself (running turns) is done by the
conversation app: ``evaluation_run_create`` queues the task ``convo.evaluation_run`` by name
through the transactional outbox, and the runner records what it did through the services
below (``evaluation_run_begin``, ``evaluation_results_append``, ``evaluation_run_finish``,
``evaluation_run_fail``). Results are appended in batches with ``done`` and the summary
(``governance.metrics.summary_build``) in the same transaction, so the pages show progress as it
happens. Positions are allocated under the run's row lock, so concurrent shadow turns never
collide. Shadow disagreements are reviewed through the queue of the app that opens them; it
plugs into the result page with ``register_disagreement_review``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from django.db import transaction
from django.db.models import QuerySet
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from config.outbox import outbox_enqueue
from governance.exceptions import GovernanceError
from governance.metrics import summary_build
from governance.models import (
    Deployment,
    DeploymentRole,
    EvaluationResult,
    EvaluationRun,
    ModelVersion,
    PromptVersion,
    RunKind,
    RunStatus,
)
from governance.permissions import can_own_models, can_read_governance
from governance.routing import DEFAULT_ASSISTANT
from governance.services import audit_event_record

TASK_NAME = "convo.evaluation_run"
STARTABLE_KINDS = (RunKind.DATASET, RunKind.REPLAY)
# (name, default, lowest, highest) of each kind's parameters.
PARAMS: dict[str, tuple[tuple[str, int, int, int], ...]] = {
    RunKind.DATASET: (("intent_cases", 60, 0, 500),),
    RunKind.REPLAY: (("conversations", 20, 1, 200),),
}
# A shadow run's summary is rebuilt with every result up to this many, then every SHADOW_SUMMARY_EVERY.
SHADOW_SUMMARY_ALWAYS_UP_TO = 200
SHADOW_SUMMARY_EVERY = 20
SIDE_FIELDS = ("decision", "action", "grounded", "met", "latency_ms", "cost", "tokens")


class EvaluationRefused(GovernanceError):
    """A run that cannot be started or a verdict that cannot be recorded; the message says why."""

    def __init__(self, message: str, *, code: str = "refused", field: str = ""):
        super().__init__(message)
        self.code = code
        self.field = field


# --- starting a run -----------------------------------------------------------------------------

def evaluation_params_clean(kind: str, params: dict | None) -> dict:
    """The run's parameters with defaults, or ``EvaluationRefused`` naming the bad one."""
    if kind not in STARTABLE_KINDS:
        raise EvaluationRefused("Choose a dataset run or a replay; shadow runs start with a shadow deployment.",
                                code="invalid", field="kind")
    params = dict(params or {})
    spec = {name: (default, low, high) for name, default, low, high in PARAMS[kind]}
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise EvaluationRefused(f"Unknown parameter {', '.join(unknown)} for this kind of run.", code="invalid",
                                field=unknown[0])
    clean = {}
    for name, (default, low, high) in spec.items():
        value = params.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise EvaluationRefused(f"{name.replace('_', ' ').capitalize()} must be a whole number from {low} to "
                                    f"{high}.", code="invalid", field=name)
        clean[name] = value
    return clean


def live_primary(assistant_name: str = DEFAULT_ASSISTANT) -> Deployment | None:
    return (Deployment.objects.filter(assistant__name=assistant_name, role=DeploymentRole.PRIMARY,
                                      ended_at__isnull=True)
            .select_related("model_version", "prompt_version").first())


def evaluation_run_create(*, actor, kind: str, model_version: ModelVersion, prompt_version: PromptVersion,
                          params: dict | None = None) -> EvaluationRun:
    """Queue a dataset run or a replay of the pair (drafts too: approval counts only finished runs).

    Model owners and administrators only. A dataset run's baseline is the live primary pair
    (the runner registers the configured one if there is none yet); a replay's is what was
    recorded. The task is sent through the outbox when this transaction commits."""
    if not can_own_models(actor):
        raise EvaluationRefused("Only model owners and administrators start evaluation runs.",
                                code="not_model_owner")
    clean = evaluation_params_clean(kind, params)
    with transaction.atomic(durable=True):
        primary = live_primary() if kind == RunKind.DATASET else None
        run = EvaluationRun.objects.create(
            kind=kind, status=RunStatus.QUEUED, candidate_model=model_version, candidate_prompt=prompt_version,
            baseline_model=primary.model_version if primary else None,
            baseline_prompt=primary.prompt_version if primary else None,
            params=clean, created_by=actor,
        )
        audit_event_record(actor=actor, action="evaluation.run_started", target=run,
                           data={"kind": kind, "model_version": str(model_version.pk),
                                 "prompt_version": str(prompt_version.pk), "params": clean,
                                 "baseline_model": str(run.baseline_model_id or ""),
                                 "baseline_prompt": str(run.baseline_prompt_id or "")})
        outbox_enqueue(TASK_NAME, [str(run.pk)])
    return run


# --- the runner's records -----------------------------------------------------------------------

def evaluation_run_begin(*, run_id, plan: list, baseline_model_id=None, baseline_prompt_id=None) -> EvaluationRun:
    """Mark a queued run running with its plan (the cases, as references, in order) and total.

    A run already begun keeps the plan it started with (a resumed run continues it)."""
    with transaction.atomic():
        run = EvaluationRun.objects.select_for_update().get(pk=run_id)
        if run.status != RunStatus.QUEUED:
            return run
        run.status, run.started_at, run.total = RunStatus.RUNNING, timezone.now(), len(plan)
        run.params = {**run.params, "plan": plan}
        if baseline_model_id and not run.baseline_model_id:
            run.baseline_model_id, run.baseline_prompt_id = baseline_model_id, baseline_prompt_id
        run.save(update_fields=["status", "started_at", "total", "params", "baseline_model", "baseline_prompt",
                                "updated_at"])
    return run


def evaluation_results_append(*, run_id, results: list[dict], unique_refs: bool = False) -> list[EvaluationResult]:
    """Append results (``case_type``, ``case_ref``, ``input_text``, ``expected``, ``baseline``,
    ``candidate``, ``agree``) at the next positions, with ``done`` and the summary.

    Runs in the caller's transaction when there is one. Nothing is added to a run that is no
    longer running (e.g. a shadow that ended). With ``unique_refs``, a result whose
    ``case_ref`` the run already holds is left out (a shadow task delivered twice)."""
    with transaction.atomic():
        run = EvaluationRun.objects.select_for_update().get(pk=run_id)
        if run.status != RunStatus.RUNNING:
            return []
        if unique_refs:
            refs = {r["case_ref"] for r in results if r.get("case_ref")}
            taken = set(EvaluationResult.objects.filter(run=run, case_ref__in=refs).values_list("case_ref", flat=True))
            results = [r for r in results if r.get("case_ref") not in taken]
        if not results:
            return []
        rows = EvaluationResult.objects.bulk_create([
            EvaluationResult(run=run, position=run.done + i, case_type=r["case_type"], case_ref=r.get("case_ref", ""),
                             input_text=r["input_text"], expected=r.get("expected") or {},
                             baseline=r.get("baseline") or {}, candidate=r.get("candidate") or {},
                             agree=bool(r["agree"]))
            for i, r in enumerate(results)
        ])
        run.done += len(rows)
        fields = ["done", "updated_at"]
        if (run.kind != RunKind.SHADOW or run.done <= SHADOW_SUMMARY_ALWAYS_UP_TO
                or run.done % SHADOW_SUMMARY_EVERY == 0):
            run.summary = run_summary(run)
            fields.append("summary")
        run.save(update_fields=fields)
    return rows


def evaluation_run_finish(*, run_id) -> EvaluationRun:
    """A dataset run or replay went through its plan: done, with its final summary."""
    with transaction.atomic():
        run = EvaluationRun.objects.select_for_update().get(pk=run_id)
        if run.status != RunStatus.RUNNING:
            return run
        run.status, run.finished_at = RunStatus.DONE, timezone.now()
        run.summary = run_summary(run)
        run.save(update_fields=["status", "finished_at", "summary", "updated_at"])
        audit_event_record(action="evaluation.run_finished", target=run,
                           data={"kind": run.kind, "cases": run.summary.get("cases"),
                                 "agreement": run.summary.get("agreement")})
    return run


def evaluation_run_fail(*, run_id, error: str) -> EvaluationRun:
    """The run stopped on an error: failed, with the error shown on its page (results so far stay)."""
    with transaction.atomic():
        run = EvaluationRun.objects.select_for_update().get(pk=run_id)
        if run.status in (RunStatus.DONE, RunStatus.FAILED):
            return run
        run.status, run.finished_at, run.error = RunStatus.FAILED, timezone.now(), error[:2000]
        if run.done:
            run.summary = run_summary(run)
        run.save(update_fields=["status", "finished_at", "error", "summary", "updated_at"])
        audit_event_record(action="evaluation.run_failed", target=run, data={"kind": run.kind, "error": run.error,
                                                                               "done": run.done})
    return run


def run_summary(run: EvaluationRun) -> dict:
    """The run's summary from its results (one query reading only the compared fields)."""
    annotations = {f"{prefix}_{name}": KeyTransform(name, side) for prefix, side in (("b", "baseline"),
                                                                                       ("c", "candidate"))
                   for name in SIDE_FIELDS}
    rows = EvaluationResult.objects.filter(run_id=run.pk).values("agree", **annotations)
    return summary_build(
        {"agree": row["agree"],
         "baseline": {name: row[f"b_{name}"] for name in SIDE_FIELDS},
         "candidate": {name: row[f"c_{name}"] for name in SIDE_FIELDS}}
        for row in rows)


def evaluation_result_verdict_record(*, result: EvaluationResult, outcome: str, label: str, actor,
                                     note: str = "") -> EvaluationResult:
    """A reviewer's verdict on a disagreement, kept with the result for the report. Runs in the
    transaction that resolves the review item."""
    with transaction.atomic():
        result = EvaluationResult.objects.select_for_update().get(pk=result.pk)
        who = actor.get_username() if getattr(actor, "is_authenticated", False) else "system"
        result.expected = {**result.expected, "review": {"outcome": outcome, "label": label, "by": who,
                                                         "at": timezone.now().isoformat(), "note": note[:1000]}}
        result.save(update_fields=["expected", "updated_at"])
        audit_event_record(actor=actor, action="evaluation.result_reviewed", target=result,
                           data={"run": str(result.run_id), "outcome": outcome})
    return result


# --- reads --------------------------------------------------------------------------------------

def evaluation_run_list(*, user) -> QuerySet[EvaluationRun]:
    """Every run, newest first, with what the list shows joined (one query); empty for users
    who may not read governance. The plan in ``params`` is left in the database."""
    if not can_read_governance(user):
        return EvaluationRun.objects.none()
    return (EvaluationRun.objects.select_related("candidate_model", "candidate_prompt", "baseline_model",
                                                 "baseline_prompt", "created_by")
            .defer("params", "summary")
            .annotate(p_conversations=KeyTransform("conversations", "params"),
                      p_intent_cases=KeyTransform("intent_cases", "params"),
                      agreement=KeyTransform("agreement", "summary"))
            .order_by("-created_at"))


def evaluation_run_get_for_user(*, user, run_id) -> EvaluationRun:
    """One run for a governance reader; ``EvaluationRun.DoesNotExist`` for anyone else or an unknown id."""
    return evaluation_run_list(user=user).defer(None).get(pk=run_id)


def evaluation_results_for_run(*, run: EvaluationRun, differing_only: bool = True) -> QuerySet[EvaluationResult]:
    results = EvaluationResult.objects.filter(run=run)
    if differing_only:
        results = results.filter(agree=False)
    return results.order_by("position")


# --- reviewing shadow disagreements ---------------------------------------------------------------

@dataclass(frozen=True)
class DisagreementReview:
    """How the app that opens review items for shadow disagreements lets the result page show
    and decide them (governance cannot import the review queue).

    ``item_for(user=, result=)`` returns ``None`` when ``user`` may not see the result's item, else
    ``{"id", "status", "status_label", "outcome", "outcome_label", "version", "claimed_by", "team",
    "conversation_url" (empty unless the user may read the conversation), "may_decide",
    "outcomes": [(value, label)]}``; ``decide(actor=, result=, outcome=, note=,
    expected_version=)`` resolves it or raises ``EvaluationRefused``."""

    item_for: Callable[..., dict | None]
    decide: Callable[..., Any]


_review: list[DisagreementReview] = []


def register_disagreement_review(handler: DisagreementReview) -> None:
    _review[:] = [handler]


def disagreement_review() -> DisagreementReview | None:
    return _review[0] if _review else None
