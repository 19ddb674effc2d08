"""Evaluation runs: simulated turns of a candidate model + prompt version pair, compared with a
baseline (``governance.evaluation`` records them; ``governance.metrics`` compares them).

``turn_simulate`` runs the turn pipeline *dry* (``convo.pipeline.turn_decide_dry``): intent,
retrieval, the model and the policy run as for a customer, but no action is proposed or
executed (it is validated and its approval rule applied, and one that needs no approval is
taken to succeed), no review item is opened, no message or state is stored and nothing is
streamed. It returns one *side* of a comparison: ``reply``, ``decision``, ``intent``,
``action`` (``{"name", "params"}`` or None), ``cited`` (the cited sources with their texts),
``grounded``, ``latency_ms``, ``cost`` (decimal string, the version's price), ``tokens``.

Kinds of run (``evaluation_run_execute``, the task ``convo.evaluation_run``):

- **dataset**: the intents' example phrases (at most ``intent_cases``, the same number from each
  intent in turn, by name and text: deterministic), every active ``EvaluationCase`` (the
  corrected answers of flagged turns) and the published customer-visible curated answers not
  already covered by a case. Each case runs through the candidate and through the baseline
  (the live primary pair, recorded on the run). An intent case is *met* when the side's intent
  is the expected one; an answer case when the reply holds most of the expected answer's
  content words (``governance.metrics.answer_meets_expected``).
- **replay**: the ``conversations`` most recently active closed or bot conversations with AI
  turns. Each of their customer messages answered by the assistant runs through the candidate
  with the recorded history before it (and the state the candidate itself left in that
  conversation); the baseline is what was recorded (decision, reply, intent, the action run's
  name and parameters, cited sources, latency, cost). Actions are compared, never executed.
- **shadow** (``shadow_turn_run``, the task ``convo.shadow_turn``): after a live turn commits,
  each shadow deployment answers the same input, history and starting state; the result joins
  the shadow's running evaluation run, and a disagreement opens a ``shadow_disagreement``
  review item (low priority, one per turn) that a reviewer resolves with a verdict.

The plan of a run (its cases, in order) is stored when it starts, and results are appended a
batch at a time with the progress, so an interrupted run resumes where it stopped; a session
advisory lock keeps one runner per run. An error marks the run failed with the error shown.

Where it runs: with a broker, the task runs the whole plan in a worker. With Celery eager (the
embedded default) the task runs inside the request that started the run (the outbox sends it on
commit), which must not wait for minutes: there it only plans the run (the cases and their
number, so the report shows "0 of N" at once), and the ``outbox_relay`` loop that ``make run``
starts runs the cases, batch by batch, in slices of at most ``EVALUATION_RELAY_BUDGET_S``
(default 30 s) per loop round shared by all unfinished runs (``evaluation_runs_continue``,
registered in ``convo.handlers``). Without that loop, ``manage.py outbox_relay`` once (or in a
loop) does the same.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from itertools import groupby

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.urls import reverse

from convo.models import Conversation, ConversationStatus, Decision, IntentExample, Message, Role, Turn, TurnStatus
from convo.pipeline import turn_cost, turn_decide_dry
from convo.providers import provider_for_settings
from convo.selectors import conversation_list_for_user
from governance.evaluation import (
    DisagreementReview,
    EvaluationRefused,
    evaluation_result_verdict_record,
    evaluation_results_append,
    evaluation_run_begin,
    evaluation_run_fail,
    evaluation_run_finish,
)
from governance.metrics import answer_meets_expected, groundedness, sides_agree
from governance.models import EvaluationCase, EvaluationResult, EvaluationRun, RunKind, RunStatus
from governance.permissions import can_read_conversations, can_read_governance
from governance.routing import assistant_routing
from integrations.models import ActionRun
from knowledge.curated import curated_answer_text
from knowledge.embeddings import embed_query
from knowledge.models import Audience, Chunk, Document, DocumentKind, DocumentStatus
from review.exceptions import ReviewError
from review.models import ItemKind, ReviewItem
from review.permissions import may_see_item, may_work_item
from review.services import review_item_open, review_item_resolve

logger = logging.getLogger(__name__)

BATCH_SIZE = 10
MAX_QA_CASES = 500
TURN_SUBJECT_TYPE = "convo.turn"
HISTORY_MESSAGES = 8
# How a reviewer closes a shadow disagreement; the queue also accepts "closed" (no verdict), the
# outcome the generic closing of a subject's items uses.
VERDICTS = (("candidate_better", "Shadow better"), ("active_better", "Active better"),
            ("both_acceptable", "Both acceptable"), ("both_wrong", "Both wrong"))
OUTCOMES = (*VERDICTS, ("closed", "Closed without a verdict"))


# --- one simulated turn -------------------------------------------------------------------------

def turn_simulate(*, model_version, prompt_version, text: str, history=(), state: dict | None = None) -> dict:
    """One turn of ``model_version`` + ``prompt_version`` without side effects (see the module
    docstring); ``state`` is the conversation state it starts from, and ``state`` in the result
    is the one it would leave (``None``: unchanged)."""
    started = time.perf_counter()
    outcome = turn_decide_dry(model_version=model_version, prompt_version=prompt_version, text=text,
                              history=list(history), state=state or {})
    latency_ms = (time.perf_counter() - started) * 1000
    cited = [{"n": s["n"], "chunk_id": s.get("chunk_id", ""), "document_id": s.get("document_id", ""),
              "title": s.get("title", ""), "url": s.get("url", ""), "text": s.get("text", "")}
             for s in outcome.cited_sources]
    decision = str(outcome.decision)
    return {
        "reply": outcome.reply,
        "decision": decision,
        "intent": outcome.intent,
        "confidence": outcome.confidence,
        "reason": str(outcome.escalate or outcome.reason),
        "action": outcome.action,
        "cited": cited,
        "grounded": groundedness(outcome.reply, [c["text"] for c in cited]) if decision == Decision.ANSWER else None,
        "latency_ms": round(latency_ms, 1),
        "cost": str(turn_cost(model_version, tokens_in=outcome.tokens_in, tokens_out=outcome.tokens_out)),
        "tokens": outcome.tokens_in + outcome.tokens_out,
        "error": outcome.error,
        "state": outcome.state,
    }


def _stored(side: dict) -> dict:
    """A side as a result keeps it: no conversation state, cited sources without their texts."""
    kept = {k: v for k, v in side.items() if k != "state"}
    kept["cited"] = [{k: v for k, v in c.items() if k != "text"} for c in side.get("cited", [])]
    return kept


def recorded_side(turn: Turn, *, runs: dict, chunk_texts: dict) -> dict:
    """What the assistant did in a recorded turn, as a side of a comparison. ``runs`` maps
    action run ids to runs (action joined), ``chunk_texts`` chunk ids to their current text."""
    reply = turn.reply.text if turn.reply_id and turn.reply else ""
    cited = [{k: s.get(k, "") for k in ("n", "chunk_id", "document_id", "title", "url")}
             for s in ((turn.reply.sources if turn.reply_id and turn.reply else None) or [])]
    run = runs.get(turn.action_run_id) if turn.action_run_id else None
    decision = str(turn.decision)
    texts = [chunk_texts.get(str(c["chunk_id"]), "") for c in cited]
    return {
        "reply": reply, "decision": decision, "intent": turn.intent, "confidence": turn.confidence,
        "reason": turn.reason,
        "action": {"name": run.action.name, "params": run.params} if run else None,
        "cited": cited,
        "grounded": groundedness(reply, texts) if decision == Decision.ANSWER else None,
        "latency_ms": round(turn.latency_ms, 1) if turn.latency_ms is not None else None,
        "cost": str(turn.cost), "tokens": turn.tokens_in + turn.tokens_out, "error": turn.error,
    }


def _recorded_context(turns: list[Turn]) -> tuple[dict, dict]:
    """The action runs and cited chunk texts of recorded turns (two queries)."""
    run_ids = [t.action_run_id for t in turns if t.action_run_id]
    runs = {str(r.pk): r for r in ActionRun.objects.filter(pk__in=run_ids).select_related("action")} if run_ids else {}
    chunk_ids = {str(s["chunk_id"]) for t in turns if t.reply_id and t.reply
                 for s in (t.reply.sources or []) if s.get("chunk_id")}
    texts = dict(Chunk.objects.filter(pk__in=chunk_ids).values_list("pk", "text")) if chunk_ids else {}
    return runs, {str(k): v for k, v in texts.items()}


def _history(messages: list[dict], before_seq: int) -> list[dict]:
    earlier = [m for m in messages if m["seq"] < before_seq and m["role"] != Role.SYSTEM][-HISTORY_MESSAGES:]
    return [{"role": "user" if m["role"] == Role.CUSTOMER else "assistant", "content": m["text"]} for m in earlier]


# --- plans --------------------------------------------------------------------------------------

def dataset_plan(*, intent_cases: int) -> list[dict]:
    """The cases of a dataset run, self-contained (input and expectation), in a stable order."""
    plan: list[dict] = []
    by_intent: dict[str, list] = defaultdict(list)
    for pk, name, kind, action_name, text in (IntentExample.objects.order_by("intent__name", "text")
                                              .values_list("pk", "intent__name", "intent__kind",
                                                           "intent__action_name", "text")):
        by_intent[name].append((pk, kind, action_name, text))
    rank = 0
    while len(plan) < intent_cases and any(rank < len(rows) for rows in by_intent.values()):
        for name in sorted(by_intent):
            rows = by_intent[name]
            if rank < len(rows) and len(plan) < intent_cases:
                pk, kind, action_name, text = rows[rank]
                accepted = [name] + ([f"action:{action_name}"] if action_name else [])
                plan.append({"type": "intent", "ref": str(pk), "text": text,
                             "expected": {"intent": name, "kind": kind, "accepted": accepted}})
        rank += 1
    covered = set()
    for case in EvaluationCase.objects.filter(active=True).order_by("created_at")[:MAX_QA_CASES]:
        plan.append({"type": "qa", "ref": str(case.pk), "text": case.question,
                     "expected": {"answer": case.expected_answer, "category": case.category,
                                  "bad_answer": case.bad_answer}})
        if case.curated_document_id:
            covered.add(case.curated_document_id)
    curated = (Document.objects.filter(kind=DocumentKind.CURATED, published=True, status=DocumentStatus.READY,
                                       collection__audience=Audience.CUSTOMER)
               .exclude(pk__in=[c for c in covered if _is_uuid(c)]).order_by("created_at")
               .values_list("pk", "title", "body")[:MAX_QA_CASES])
    for pk, title, body in curated:
        plan.append({"type": "curated", "ref": str(pk), "text": title,
                     "expected": {"answer": curated_answer_text(body)}})
    return plan


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def replay_plan(*, conversations: int) -> list[dict]:
    """The customer messages the assistant answered in the most recently active closed or bot
    conversations, conversation by conversation, each in order."""
    answered = Turn.objects.filter(conversation=OuterRef("pk"), status__in=[TurnStatus.DONE, TurnStatus.FAILED]) \
        .exclude(decision__in=["", Decision.SKIPPED])
    ids = list(Conversation.objects.filter(status__in=[ConversationStatus.CLOSED, ConversationStatus.BOT])
               .filter(Exists(answered)).order_by("-updated_at").values_list("pk", flat=True)[:conversations])
    rank = {pk: i for i, pk in enumerate(ids)}
    rows = (Turn.objects.filter(conversation_id__in=ids, status__in=[TurnStatus.DONE, TurnStatus.FAILED])
            .exclude(decision__in=["", Decision.SKIPPED]).values_list("conversation_id", "message_id", "message__seq"))
    ordered = sorted(rows, key=lambda r: (rank[r[0]], r[2]))
    return [{"type": "replay", "ref": str(message_id), "conversation": str(conversation_id)}
            for conversation_id, message_id, _ in ordered]


# --- running a run ------------------------------------------------------------------------------

def _lock(run_id) -> bool:
    """A session advisory lock: one runner per run; a dead worker's lock goes with its connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [f"governance.evaluation:{run_id}"])
        return bool(cursor.fetchone()[0])


def _unlock(run_id) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [f"governance.evaluation:{run_id}"])


def _run_get(run_id) -> EvaluationRun | None:
    return (EvaluationRun.objects.select_related("candidate_model", "candidate_prompt", "baseline_model",
                                                 "baseline_prompt").filter(pk=run_id).first())


def evaluation_run_execute(*, run_id, budget_s: float | None = None,
                           max_batches: int | None = None) -> EvaluationRun | None:
    """Run (or resume) a dataset or replay run. ``budget_s`` stops it after the batch that used
    the time up, ``max_batches`` after that many batches (0: plan only); the rest is left for the
    next call. Idempotent: a finished or failed run, or one another runner holds, is returned as
    it is."""
    run = _run_get(run_id)
    if run is None or run.kind not in (RunKind.DATASET, RunKind.REPLAY) or run.status in (RunStatus.DONE,
                                                                                           RunStatus.FAILED):
        return run
    if not _lock(run.pk):
        logger.info("evaluation run %s is already running elsewhere", run.pk)
        return run
    started, batches = time.monotonic(), 0
    try:
        run = _run_get(run.pk)
        if run.status in (RunStatus.DONE, RunStatus.FAILED):
            return run
        if run.status == RunStatus.QUEUED:
            _begin(run)
            run = _run_get(run.pk)
        plan = run.params.get("plan") or []
        if not plan:
            return evaluation_run_fail(run_id=run.pk, error=EMPTY_PLAN[run.kind])
        while run.done < len(plan):
            if max_batches is not None and batches >= max_batches:
                return run
            if budget_s is not None and batches and time.monotonic() - started >= budget_s:
                return run
            if not batches:
                # A process's first embedding loads the model (seconds): not a latency of the first case.
                embed_query("evaluation warm-up")
            evaluation_results_append(run_id=run.pk, results=_process(run, _next_batch(run, plan)))
            batches += 1
            run.refresh_from_db(fields=["done", "status"])
            if run.status != RunStatus.RUNNING:
                return run
        return evaluation_run_finish(run_id=run.pk)
    except SoftTimeLimitExceeded:
        raise  # the task continues the run in a fresh task
    except Exception as exc:  # noqa: BLE001 - any failure ends the run with its reason shown
        logger.exception("evaluation run %s failed", run.pk)
        return evaluation_run_fail(run_id=run.pk, error=f"{exc.__class__.__name__}: {exc}")
    finally:
        _unlock(run.pk)


EMPTY_PLAN = {
    RunKind.DATASET: "The dataset is empty: no intent phrase was asked for, and there is no active evaluation case "
                     "and no published curated answer yet.",
    RunKind.REPLAY: "Nothing to replay: no closed or assistant-only conversation with answers from the assistant yet.",
}


def _begin(run: EvaluationRun) -> None:
    baseline = {}
    if run.kind == RunKind.DATASET:
        plan = dataset_plan(intent_cases=int(run.params.get("intent_cases", 60)))
        if run.baseline_model_id is None:
            # No live primary when the run was queued: the configured runtime is (registered now).
            primary = assistant_routing(runtime=provider_for_settings()).primary
            baseline = {"baseline_model_id": primary.model_version_id, "baseline_prompt_id": primary.prompt_version_id}
    else:
        plan = replay_plan(conversations=int(run.params.get("conversations", 20)))
    evaluation_run_begin(run_id=run.pk, plan=plan, **baseline)


def _next_batch(run: EvaluationRun, plan: list[dict]) -> list[dict]:
    rest = plan[run.done:]
    if run.kind == RunKind.REPLAY:
        # A whole conversation at a time: the candidate's state carries from turn to turn.
        return list(next(groupby(rest, key=lambda entry: entry["conversation"]))[1])
    return rest[:BATCH_SIZE]


def _process(run: EvaluationRun, batch: list[dict]) -> list[dict]:
    if run.kind == RunKind.REPLAY:
        return _replay_conversation(run, batch)
    return [_dataset_case(run, entry, run.done + i) for i, entry in enumerate(batch)]


class CaseFailed(Exception):
    """A case could not be run; the message names it."""


def _dataset_case(run: EvaluationRun, entry: dict, position: int) -> dict:
    """Both sides on one case. The question is embedded first (both sides share that work and the
    embedding cache would otherwise give it to whichever side runs first), and the sides take
    turns at going first, so neither gets the other's warm caches every time."""
    sides = [("candidate", run.candidate_model, run.candidate_prompt),
             ("baseline", run.baseline_model, run.baseline_prompt)]
    try:
        embed_query(entry["text"])
        out = {name: turn_simulate(model_version=model, prompt_version=prompt, text=entry["text"])
               for name, model, prompt in (sides if position % 2 == 0 else sides[::-1])}
        candidate, baseline = out["candidate"], out["baseline"]
    except Exception as exc:
        raise CaseFailed(f"{exc.__class__.__name__} on the {entry['type']} case “{entry['text'][:80]}”: {exc}") \
            from exc
    for side in (candidate, baseline):
        side["met"] = _met(entry, side)
    return {"case_type": entry["type"], "case_ref": entry["ref"], "input_text": entry["text"],
            "expected": entry["expected"], "baseline": _stored(baseline), "candidate": _stored(candidate),
            "agree": sides_agree(baseline, candidate)}


def _met(entry: dict, side: dict) -> bool:
    expected = entry["expected"]
    if entry["type"] == "intent":
        return side.get("intent") in expected["accepted"]
    return answer_meets_expected(side.get("reply", ""), expected["answer"])


def _replay_conversation(run: EvaluationRun, batch: list[dict]) -> list[dict]:
    conversation_id = batch[0]["conversation"]
    messages = list(Message.objects.filter(conversation_id=conversation_id).order_by("seq")
                    .values("id", "seq", "role", "text"))
    by_id = {str(m["id"]): m for m in messages}
    turns = {str(t.message_id): t for t in Turn.objects.filter(conversation_id=conversation_id,
                                                                 message_id__in=[e["ref"] for e in batch])
             .select_related("reply")}
    missing = [e["ref"] for e in batch if e["ref"] not in by_id or e["ref"] not in turns]
    if missing:
        raise CaseFailed(f"Conversation {conversation_id} no longer holds {len(missing)} of the recorded turns "
                         f"planned for this replay (deleted by retention?).")
    runs, chunk_texts = _recorded_context(list(turns.values()))
    state: dict = {}
    results = []
    for entry in batch:
        message, turn = by_id[entry["ref"]], turns[entry["ref"]]
        try:
            candidate = turn_simulate(model_version=run.candidate_model, prompt_version=run.candidate_prompt,
                                      text=message["text"], history=_history(messages, message["seq"]), state=state)
        except Exception as exc:
            raise CaseFailed(f"{exc.__class__.__name__} replaying “{message['text'][:80]}”: {exc}") from exc
        if candidate["state"] is not None:
            state = candidate["state"]
        baseline = recorded_side(turn, runs=runs, chunk_texts=chunk_texts)
        results.append({"case_type": "replay", "case_ref": entry["ref"], "input_text": message["text"],
                        "expected": {"conversation_id": conversation_id, "seq": message["seq"],
                                     "turn_id": str(turn.pk)},
                        "baseline": baseline, "candidate": _stored(candidate),
                        "agree": sides_agree(baseline, candidate)})
    return results


def evaluation_runs_continue(*, budget_s: float | None = None) -> int:
    """The embedded default's relay loop: run unfinished dataset and replay runs, oldest first,
    within one time slice for all of them (``EVALUATION_RELAY_BUDGET_S``, default 30 s), so the
    loop's other work is never held up for long. With a broker, workers run them and this does
    nothing. Returns how many runs it worked on."""
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        return 0
    budget = float(getattr(settings, "EVALUATION_RELAY_BUDGET_S", 30.0)) if budget_s is None else budget_s
    deadline = time.monotonic() + budget
    ids = list(EvaluationRun.objects.filter(kind__in=[RunKind.DATASET, RunKind.REPLAY],
                                            status__in=[RunStatus.QUEUED, RunStatus.RUNNING])
               .order_by("created_at").values_list("pk", flat=True)[:20])
    worked = 0
    for run_id in ids:
        left = deadline - time.monotonic()
        if worked and left <= 0:
            break
        evaluation_run_execute(run_id=run_id, budget_s=max(left, 0))  # at least a batch of the oldest
        worked += 1
    return worked


# --- shadow traffic -----------------------------------------------------------------------------

def shadow_turn_run(*, turn_id, deployment_id, state: dict | None = None) -> EvaluationResult | None:
    """The shadow deployment answers a committed live turn's input; the result joins the
    shadow's running run, and a disagreement opens one low-priority review item for the turn.
    Idempotent: a turn already compared, or a shadow no longer running, adds nothing."""
    run = (EvaluationRun.objects.select_related("candidate_model", "candidate_prompt", "baseline_model")
           .filter(deployment_id=deployment_id, kind=RunKind.SHADOW, status=RunStatus.RUNNING).first())
    if run is None or EvaluationResult.objects.filter(run=run, case_ref=str(turn_id)).exists():
        return None
    turn = Turn.objects.select_related("message", "reply", "model_version").filter(pk=turn_id).first()
    if turn is None or turn.decision in ("", Decision.SKIPPED):
        return None
    messages = list(Message.objects.filter(conversation_id=turn.conversation_id, seq__lt=turn.message.seq)
                    .exclude(role=Role.SYSTEM).order_by("-seq").values("seq", "role", "text")[:HISTORY_MESSAGES])
    candidate = turn_simulate(model_version=run.candidate_model, prompt_version=run.candidate_prompt,
                              text=turn.message.text, history=_history(messages[::-1], turn.message.seq),
                              state=state)
    runs, chunk_texts = _recorded_context([turn])
    live = recorded_side(turn, runs=runs, chunk_texts=chunk_texts)
    agree = sides_agree(live, candidate)
    result = {"case_type": "shadow", "case_ref": str(turn.pk), "input_text": turn.message.text,
              "expected": {"conversation_id": str(turn.conversation_id), "turn_id": str(turn.pk),
                           "deployment_id": str(deployment_id),
                           "live_versions": f"{turn.model_version.label}" if turn.model_version_id else ""},
              "baseline": live, "candidate": _stored(candidate), "agree": agree}
    with transaction.atomic(durable=True):
        rows = evaluation_results_append(run_id=run.pk, results=[result], unique_refs=True)
        if rows and not agree:
            _disagreement_open(run=run, turn=turn, result=rows[0], live=live, shadow=candidate)
    return rows[0] if rows else None


def _short(text: str, limit: int = 280) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else f"{text[:limit - 1]}…"


def _side_line(side: dict) -> str:
    action = side.get("action")
    what = f"{side['decision']}" + (f" · {action['name']}" if action else "")
    return f"{what}: {_short(side.get('reply') or '(no reply)')}"


def _disagreement_open(*, run: EvaluationRun, turn: Turn, result: EvaluationResult, live: dict, shadow: dict):
    review_item_open(
        kind=ItemKind.SHADOW_DISAGREEMENT, subject_type=TURN_SUBJECT_TYPE, subject_id=str(turn.pk),
        title=f"Shadow answered differently: “{_short(turn.message.text, 90)}”",
        summary=(f"Customer: “{_short(turn.message.text, 400)}”\n"
                 f"Active — {_side_line(live)}\n"
                 f"Shadow ({run.candidate_model.label} + {run.candidate_prompt.label}) — {_side_line(shadow)}"),
        priority=3, sla_minutes=None,
        data={"conversation_id": str(turn.conversation_id), "turn_id": str(turn.pk), "run_id": str(run.pk),
              "result_id": str(result.pk)},
    )


# --- reviewing a disagreement (plugged into the governance result page) -------------------------------

def _item_for_result(result: EvaluationResult) -> ReviewItem | None:
    if result.case_type != "shadow":
        return None
    return (ReviewItem.objects.select_related("claimed_by", "team")
            .filter(kind=ItemKind.SHADOW_DISAGREEMENT, subject_type=TURN_SUBJECT_TYPE, subject_id=result.case_ref)
            .order_by("-created_at").first())


def disagreement_item_for(*, user, result: EvaluationResult) -> dict | None:
    """The review item of a shadow result as ``user`` may see it (None: none, or not theirs)."""
    item = _item_for_result(result)
    if item is None or not (may_see_item(user, item) or can_read_governance(user)):
        return None
    labels = dict(OUTCOMES)
    conversation_id = (item.data or {}).get("conversation_id")
    readable = bool(conversation_id) and can_read_conversations(user) and conversation_list_for_user(
        user=user).filter(pk=conversation_id).exists()
    return {"id": str(item.pk),
            "conversation_url": reverse("office:conversation", args=[conversation_id]) if readable else "", "status": item.status, "status_label": item.get_status_display(),
            "outcome": item.outcome, "outcome_label": labels.get(item.outcome, item.outcome),
            "version": item.version, "claimed_by": item.claimed_by.get_username() if item.claimed_by else "",
            "team": item.team.name if item.team else "",
            "may_decide": item.status in ("open", "claimed") and may_work_item(user, item),
            "outcomes": list(VERDICTS)}


def disagreement_decide(*, actor, result: EvaluationResult, outcome: str, note: str = "",
                        expected_version=None) -> None:
    """Resolve the result's review item with a verdict (refusals become ``EvaluationRefused``)."""
    if outcome not in dict(VERDICTS):
        raise EvaluationRefused("Choose which answer was better.", code="invalid", field="outcome")
    item = _item_for_result(result)
    if item is None:
        raise EvaluationRefused("This result has no review item.", code="no_item")
    try:
        review_item_resolve(item_id=item.pk, actor=actor, outcome=outcome, note=note[:1000],
                            expected_version=expected_version, check_claim=True)
    except ReviewError as exc:
        raise EvaluationRefused(str(exc), code="refused") from exc


def disagreement_resolved(*, item, actor, outcome: str, note: str = "") -> None:
    """The review queue's hook (inside the resolving transaction): keep the verdict with the result."""
    if outcome not in dict(VERDICTS):
        return
    result = EvaluationResult.objects.filter(pk=(item.data or {}).get("result_id")).first()
    if result is not None:
        evaluation_result_verdict_record(result=result, outcome=outcome, label=dict(VERDICTS).get(outcome, outcome),
                                         actor=actor, note=note)


def disagreement_review() -> DisagreementReview:
    return DisagreementReview(item_for=disagreement_item_for, decide=disagreement_decide)


def turn_url(subject_id: str) -> str:
    """A turn's place in its conversation (the workspace)."""
    row = Turn.objects.filter(pk=subject_id).values_list("conversation_id", "message_id").first()
    return f"{reverse('office:conversation', args=[row[0]])}#m-{row[1]}" if row else ""


def shadow_item_url(item) -> str:
    """A shadow disagreement opens its side-by-side page (ids kept in the item: no query)."""
    data = item.data or {}
    if data.get("run_id") and data.get("result_id"):
        return reverse("governance:evaluation_result", args=[data["run_id"], data["result_id"]])
    return ""
