"""Evaluation runs through the real pipeline: simulated turns change nothing, dataset runs
measure accuracy, replays compare actions without running them, shadows record live turns
and open one review item per disagreement; the task is idempotent and failures are shown."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse

from config.models import OutboxMessage
from convo.evaluation import (
    BATCH_SIZE,
    disagreement_decide,
    evaluation_run_execute,
    evaluation_runs_continue,
    shadow_turn_run,
    turn_simulate,
)
from convo.models import Conversation, Decision, Message, Turn
from convo.tasks import evaluation_run as evaluation_run_task
from governance import lifecycle
from governance.evaluation import EvaluationRefused, evaluation_run_create
from governance.models import AuditEvent, EvaluationCase, EvaluationResult, EvaluationRun, RunKind, RunStatus
from governance.routing import assistant_routing
from integrations.models import ActionRun
from knowledge.curated import curated_answer_save
from knowledge.models import Collection
from review.models import ItemKind, ItemStatus, ReviewEvent, ReviewItem
from review.registry import item_url, subject_url

pytestmark = pytest.mark.django_db

DELIVERY = "How long does standard delivery take within Germany?"
ORDER = "where is my order BW-10002"
REFUND = ("I want my money back for order BW-10003, 40 euros", "The zip broke after a week")
HANDOFF = "I want to talk to a real person please"


@pytest.fixture
def live(say):
    """The configured runtime, registered as the active pair by a first turn."""
    say("Hello")
    return assistant_routing().primary


@pytest.fixture
def owner(users):
    return users["modelowner"]


@pytest.fixture
def strict_model(owner):
    """An offline model version that answers only above a score no sentence reaches: it falls
    back where the active version answers from the help centre (curated answers excepted)."""
    return lifecycle.model_version_create(actor=owner, name="offline-strict", provider="offline",
                                          model_name="extractive-v1", parameters={"min_score": 2.0})


def world_counts() -> dict:
    return {"runs": ActionRun.objects.count(), "items": ReviewItem.objects.count(),
            "item_events": ReviewEvent.objects.count(), "messages": Message.objects.count(),
            "turns": Turn.objects.count(), "conversations": Conversation.objects.count(),
            "outbox": OutboxMessage.objects.count(), "audit": AuditEvent.objects.count(),
            "states": list(Conversation.objects.order_by("pk").values_list("state", flat=True))}


# --- one simulated turn -----------------------------------------------------------------------------

def test_a_simulated_turn_proposes_runs_opens_stores_and_streams_nothing(live, demo_backend, monkeypatch):
    sent = []
    monkeypatch.setattr("convo.pipeline.group_send_now", lambda group, event: sent.append(event))
    demo_backend.reset()
    before = world_counts()
    pair = {"model_version": live.model_version, "prompt_version": live.prompt_version}

    answer = turn_simulate(**pair, text=DELIVERY)
    status = turn_simulate(**pair, text=ORDER)
    refund = turn_simulate(**pair, text=REFUND[1],
                           history=[{"role": "user", "content": REFUND[0]},
                                    {"role": "assistant", "content": "Could you tell me briefly why?"}],
                           state={"pending_action": {"action": "refund_request", "asked": "reason",
                                                     "params": {"order_id": "BW-10003", "amount": 40.0}}})
    handoff = turn_simulate(**pair, text=HANDOFF)

    assert world_counts() == before
    assert demo_backend.execution_counts == {}
    assert sent == []
    assert set(answer) >= {"reply", "decision", "intent", "action", "cited", "grounded", "latency_ms", "cost",
                           "tokens"}
    assert answer["decision"] == Decision.ANSWER and "2 to 4 working days" in answer["reply"]
    assert answer["cited"][0]["title"] == "Shipping times and costs" and answer["cited"][0]["text"]
    assert answer["grounded"] == 1.0  # an extract of its own sources
    assert answer["tokens"] > 0 and answer["latency_ms"] > 0 and isinstance(answer["cost"], str)
    assert status["decision"] == Decision.ACTION
    assert status["action"] == {"name": "order_status", "params": {"order_id": "BW-10002"}}
    assert "not run" in status["reply"].lower()
    assert refund["decision"] == Decision.APPROVAL
    assert refund["action"] == {"name": "refund_request",
                                "params": {"order_id": "BW-10003", "amount": 40.0, "reason": REFUND[1]}}
    assert refund["state"] == {}
    assert handoff["decision"] == Decision.ESCALATE and handoff["reason"] == "customer_request"


# --- dataset runs -----------------------------------------------------------------------------------

def _case(question: str, answer: str) -> EvaluationCase:
    return EvaluationCase.objects.create(question=question, expected_answer=answer, bad_answer="Not sure.",
                                         category="incomplete", source_type="convo.message",
                                         source_id=str(uuid.uuid4()))


def test_a_dataset_run_measures_accuracy_of_both_versions(live, owner, users, strict_model,
                                                          django_capture_on_commit_callbacks):
    _case("How long do I have to return an item?", "You can return any item within 30 days of delivery.")
    _case("Can I pay with a gift card?", "You can use up to two gift cards on a single order.")
    curated_answer_save(collection=Collection.objects.get(name="Curated answers"),
                        question="Do you deliver to Switzerland?", actor=users["admin"],
                        answer="Yes: delivery to Switzerland takes 5 to 7 working days and duties are paid on arrival.")

    with django_capture_on_commit_callbacks(execute=True):
        run = evaluation_run_create(actor=owner, kind=RunKind.DATASET, model_version=strict_model,
                                    prompt_version=live.prompt_version, params={"intent_cases": 7})
    evaluation_runs_continue()
    run.refresh_from_db()

    assert run.status == RunStatus.DONE, run.error
    assert (run.baseline_model, run.baseline_prompt) == (live.model_version, live.prompt_version)
    assert run.total == run.done == 10
    results = list(run.results.order_by("position"))
    assert [r.case_type for r in results] == ["intent"] * 7 + ["qa"] * 2 + ["curated"]
    # One phrase per intent: every intent is there once.
    assert len({r.expected["intent"] for r in results[:7]}) == 7
    for result in results:
        if result.case_type == "qa":
            # The strict candidate falls back where the active version answers from the help centre.
            assert result.baseline["met"] is True and result.candidate["met"] is False
            assert result.candidate["decision"] == Decision.FALLBACK and not result.agree
        else:
            assert result.baseline["met"] is result.candidate["met"] is True, result.input_text
            assert result.agree, result.input_text
    summary = run.summary
    assert summary["cases"] == 10 and summary["differing"] == 2 and summary["agreement"] == 0.8
    assert summary["baseline"]["accuracy"] == 1.0
    assert summary["candidate"]["accuracy"] == 0.8
    assert summary["escalation"]["both"] == 1  # the hand-off phrase
    assert summary["actions"]["neither"] == 10
    assert summary["baseline"]["groundedness"] == 1.0
    assert summary["candidate"]["latency_p95_ms"] >= summary["candidate"]["latency_p50_ms"] > 0
    # Sent through the outbox by name, and done.
    message = OutboxMessage.objects.get(task_name="convo.evaluation_run")
    assert message.args == [str(run.pk)] and message.done_at is not None
    assert AuditEvent.objects.filter(action="evaluation.run_started", target_id=str(run.pk)).count() == 1
    assert AuditEvent.objects.get(action="evaluation.run_finished", target_id=str(run.pk)).data["agreement"] == 0.8


def test_an_eager_run_is_planned_in_the_request_and_the_relay_loop_runs_it(live, owner,
                                                                           django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = evaluation_run_create(actor=owner, kind=RunKind.DATASET, model_version=live.model_version,
                                    prompt_version=live.prompt_version, params={"intent_cases": 15})
    run.refresh_from_db()
    # The request only planned it: the page can show "0 of 15" at once.
    assert (run.status, run.done, run.total, run.baseline_model) == (RunStatus.RUNNING, 0, 15, live.model_version)
    assert [entry["type"] for entry in run.params["plan"]] == ["intent"] * 15

    assert evaluation_runs_continue(budget_s=0) == 1  # a round with no time left still does one batch
    run.refresh_from_db()
    assert (run.status, run.done) == (RunStatus.RUNNING, BATCH_SIZE)
    assert run.summary["cases"] == BATCH_SIZE  # the report shows the first batch already

    assert evaluation_runs_continue() == 1
    run.refresh_from_db()
    assert (run.status, run.done) == (RunStatus.DONE, 15)
    assert list(run.results.values_list("position", flat=True).order_by("position")) == list(range(15))
    assert run.summary["agreement"] == 1.0  # the active pair against itself
    assert evaluation_runs_continue() == 0


def test_an_empty_run_fails_with_the_reason(db, users):
    from governance.models import ModelVersion, PromptVersion

    model = ModelVersion.objects.create(name="m", provider="offline", model_name="extractive-v1")
    prompt = PromptVersion.objects.create(name="p", template="{sources}")
    run = EvaluationRun.objects.create(kind=RunKind.REPLAY, candidate_model=model, candidate_prompt=prompt,
                                       params={"conversations": 20}, created_by=users["modelowner"])
    evaluation_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.error.startswith("Nothing to replay")


def test_the_task_leaves_a_finished_run_alone(live, owner, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = evaluation_run_create(actor=owner, kind=RunKind.DATASET, model_version=live.model_version,
                                    prompt_version=live.prompt_version, params={"intent_cases": 3})
    evaluation_runs_continue()
    run.refresh_from_db()
    assert run.status == RunStatus.DONE
    finished, summary, audit = run.finished_at, run.summary, AuditEvent.objects.count()

    evaluation_run_task.apply(args=[str(run.pk)])  # delivered again (the outbox is at least once)
    evaluation_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert (run.status, run.done, run.finished_at, run.summary) == (RunStatus.DONE, 3, finished, summary)
    assert EvaluationResult.objects.filter(run=run).count() == 3
    assert AuditEvent.objects.count() == audit


def test_a_failure_marks_the_run_failed_with_the_error(live, owner, monkeypatch, django_capture_on_commit_callbacks):
    def broken(**kwargs):
        raise RuntimeError("the model endpoint is on fire")

    monkeypatch.setattr("convo.evaluation.turn_simulate", broken)
    with django_capture_on_commit_callbacks(execute=True):
        run = evaluation_run_create(actor=owner, kind=RunKind.DATASET, model_version=live.model_version,
                                    prompt_version=live.prompt_version, params={"intent_cases": 3})
    evaluation_runs_continue()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.finished_at is not None
    assert "the model endpoint is on fire" in run.error and "intent case" in run.error
    assert run.done == 0
    assert AuditEvent.objects.filter(action="evaluation.run_failed", target_id=str(run.pk)).exists()
    # A failed run is not taken up again.
    assert evaluation_runs_continue() == 0


def test_only_model_owners_start_runs_and_parameters_are_checked(live, users, owner):
    for role in ("agent", "compliance", "supervisor"):
        with pytest.raises(EvaluationRefused, match="Only model owners"):
            evaluation_run_create(actor=users[role], kind=RunKind.DATASET, model_version=live.model_version,
                                  prompt_version=live.prompt_version)
    bad = [(RunKind.REPLAY, {"conversations": 0}), (RunKind.REPLAY, {"conversations": 201}),
           (RunKind.DATASET, {"intent_cases": "many"}), (RunKind.DATASET, {"conversations": 3}),
           (RunKind.SHADOW, {})]
    for kind, params in bad:
        with pytest.raises(EvaluationRefused):
            evaluation_run_create(actor=owner, kind=kind, model_version=live.model_version,
                                  prompt_version=live.prompt_version, params=params)
    assert not EvaluationRun.objects.exists() and not OutboxMessage.objects.filter(
        task_name="convo.evaluation_run").exists()


# --- replays ------------------------------------------------------------------------------------------

def test_a_replay_compares_recorded_actions_without_running_them(say, live, owner, strict_model, demo_backend):
    answered = say(DELIVERY)
    assert answered.decision == Decision.ANSWER
    assert say(ORDER).decision == Decision.ACTION
    say(REFUND[0])
    assert say(REFUND[1]).decision == Decision.APPROVAL
    executions, before = dict(demo_backend.execution_counts), world_counts()

    same = EvaluationRun.objects.create(kind=RunKind.REPLAY, candidate_model=live.model_version,
                                        candidate_prompt=live.prompt_version, params={"conversations": 5},
                                        created_by=owner)
    strict = EvaluationRun.objects.create(kind=RunKind.REPLAY, candidate_model=strict_model,
                                          candidate_prompt=live.prompt_version, params={"conversations": 5},
                                          created_by=owner)
    for run in (same, strict):
        evaluation_run_execute(run_id=run.pk)
        run.refresh_from_db()
        assert run.status == RunStatus.DONE, run.error

    # Nothing ran at the backend, nothing was proposed, said or opened.
    assert demo_backend.execution_counts == executions
    after = world_counts()
    assert {k: v for k, v in after.items() if k not in ("audit", "outbox")} == {
        k: v for k, v in before.items() if k not in ("audit", "outbox")}
    # The five AI turns of the conversation ("Hello" included), in order.
    results = list(same.results.order_by("position"))
    assert [r.input_text for r in results] == ["Hello", DELIVERY, ORDER, *REFUND]
    assert all(r.agree for r in results), [(r.input_text, r.baseline, r.candidate) for r in results if not r.agree]
    by_text = {r.input_text: r for r in results}
    assert by_text[ORDER].baseline["action"] == by_text[ORDER].candidate["action"] == {
        "name": "order_status", "params": {"order_id": "BW-10002"}}
    assert by_text[REFUND[1]].candidate["action"]["params"]["reason"] == REFUND[1]  # the state carried over
    assert by_text[DELIVERY].baseline["grounded"] == 1.0
    assert same.summary["actions"] == {"same": 2, "differ": 0, "baseline_only": 0, "candidate_only": 0, "neither": 3}
    assert same.summary["agreement"] == 1.0
    assert same.summary["baseline"]["accuracy"] is None  # only dataset runs have expectations

    strict_results = {r.input_text: r for r in strict.results.all()}
    assert not strict_results[DELIVERY].agree and strict_results[DELIVERY].candidate["decision"] == Decision.FALLBACK
    assert strict_results[ORDER].agree
    assert strict.summary["differing"] == 1 and strict.summary["actions"]["same"] == 2


# --- shadow traffic -----------------------------------------------------------------------------------

@pytest.fixture
def shadow(live, owner, strict_model):
    lifecycle.version_submit(actor=owner, version=strict_model)
    deployment = lifecycle.deployment_shadow_start(actor=owner, model_version=strict_model,
                                                   prompt_version=live.prompt_version, reason="Try strict answers")
    return deployment


def test_a_shadow_records_live_turns_and_opens_one_item_per_disagreement(say, shadow, users):
    run = EvaluationRun.objects.get(deployment=shadow)
    differing = say(DELIVERY)  # the live version answers, the strict shadow falls back
    agreeing = say("thanks, bye")

    assert differing.decision == Decision.ANSWER and differing.reply is not None  # the customer got the live answer
    results = list(run.results.order_by("position"))
    assert [(r.case_ref, r.agree) for r in results] == [(str(differing.pk), False), (str(agreeing.pk), True)]
    result = results[0]
    assert result.baseline["decision"] == Decision.ANSWER and result.candidate["decision"] == Decision.FALLBACK
    assert result.baseline["reply"] == differing.reply.text
    item = ReviewItem.objects.get(kind=ItemKind.SHADOW_DISAGREEMENT)
    assert (item.subject_type, item.subject_id, item.priority) == ("convo.turn", str(differing.pk), 3)
    assert DELIVERY in item.summary and "2 to 4 working days" in item.summary and "No answer" not in item.title
    assert item.data["result_id"] == str(result.pk)
    assert item_url(item) == reverse("governance:evaluation_result", args=[run.pk, result.pk])
    assert subject_url("convo.turn", str(differing.pk)) == (
        reverse("office:conversation", args=[differing.conversation_id]) + f"#m-{differing.message_id}")
    run.refresh_from_db()
    assert (run.done, run.summary["cases"], run.summary["differing"]) == (2, 2, 1)

    # Delivered again: nothing more, and still one item for the turn.
    shadow_turn_run(turn_id=differing.pk, deployment_id=shadow.pk)
    assert run.results.count() == 2 and ReviewItem.objects.filter(kind=ItemKind.SHADOW_DISAGREEMENT).count() == 1

    # A reviewer of the Support queue decides; the verdict stays with the result.
    with pytest.raises(EvaluationRefused):
        disagreement_decide(actor=users["agent"], result=result, outcome="maybe")
    disagreement_decide(actor=users["agent"], result=result, outcome="active_better", note="The shadow said nothing")
    item.refresh_from_db()
    result.refresh_from_db()
    assert (item.status, item.outcome) == (ItemStatus.RESOLVED, "active_better")
    assert result.expected["review"]["outcome"] == "active_better" and result.expected["review"]["by"] == "agent"
    assert AuditEvent.objects.filter(action="evaluation.result_reviewed", target_id=str(result.pk)).exists()

    # Once the shadow stops, live turns are no longer compared.
    lifecycle.deployment_end(actor=users["modelowner"], deployment=shadow, reason="Enough")
    say("And how much does express cost?")
    run.refresh_from_db()
    assert run.status == RunStatus.DONE and run.results.count() == 2


def test_a_failing_shadow_never_reaches_the_customer(say, shadow, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("shadow crashed")

    monkeypatch.setattr("convo.evaluation.shadow_turn_run", broken)
    turn = say(DELIVERY)
    assert turn.decision == Decision.ANSWER and "2 to 4 working days" in turn.reply.text
    assert not EvaluationResult.objects.exists()


def test_turns_a_person_handles_are_not_shadowed(say, shadow, customer_conversation, users):
    from convo.services import conversation_takeover

    conversation_takeover(conversation_id=customer_conversation.pk, agent=users["agent"])
    say("is anyone there?")
    assert not EvaluationResult.objects.exists()
