"""One customer turn: guards → NLU → retrieval → reasoning → policy → reply and record.

Runs in a Celery task (``convo.tasks.run_turn``). Streamed tokens go out as they come; the
reply, the turn record and its audit event are written in one transaction at the end, and
the reply is announced after that commit. Shadow deployments then answer the same input,
recorded only (``convo.tasks.shadow_turn``).

``_decide`` also runs *dry* (``turn_decide_dry``, used by ``convo.evaluation``): any model +
prompt version pair on a given text, history and state, with nothing proposed, executed,
opened, stored or streamed; an action is only validated and its approval rule applied."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable

from django.conf import settings
from django.db import transaction

from convo.broadcast import chat_group, group_send_now
from convo.guards import GuardVerdict, screen
from convo.models import Conversation, ConversationStatus, Decision, Intent, IntentKind, Message, Role, Turn, TurnStatus
from convo.nlu import extract_params, intent_classify, missing_params
from convo.providers import ProviderError, provider_for_settings, provider_for_version
from convo.providers.base import AnswerRequest, ToolCall
from convo.providers.offline import extractive_summary
from convo.providers.openai_provider import format_sources
from convo.services import SUBJECT_TYPE, conversation_escalate, message_append
from governance.routing import assistant_routing
from governance.services import audit_event_record
from integrations.exceptions import InvalidParameters
from integrations.models import ActionDefinition, ActionRun, RunStatus
from integrations.services import (
    action_params_validate,
    action_run_execute,
    action_run_propose,
    approvals_required_for,
)
from knowledge.curated import curated_answer_texts
from knowledge.embeddings import embed_query
from knowledge.selectors import SearchHit, chunk_search
from review.models import EscalationReason, ItemKind
from review.services import review_item_open

logger = logging.getLogger(__name__)
COMPANY = "Brightwater Outfitters"
RUN_SUBJECT_TYPE = "integrations.actionrun"

REPLY_ESCALATED = ("I'm bringing in a person from our team. They'll see our conversation so far, "
                   "so you won't need to repeat yourself.")
REPLY_FALLBACK = ("I couldn't find that in our help centre. Could you put it another way? "
                  "You can also ask for a person at any time.")
REPLY_ERROR = ("Sorry, I'm having trouble answering right now. Please try again in a moment, "
               "or ask for a person.")
REPLY_INJECTION = ("I can only help with questions about Brightwater orders, deliveries, returns and "
                   "your account.")


class _SafeDict(dict):
    def __missing__(self, key):
        return ""


@dataclass
class Outcome:
    decision: str
    reply: str = ""
    reply_role: str = Role.ASSISTANT
    reply_kind: str = "text"
    intent: str = ""
    confidence: float | None = None
    reason: str = ""
    sources: list[dict] = field(default_factory=list)
    cited_sources: list[dict] = field(default_factory=list)
    escalate: str = ""  # an EscalationReason value
    state: dict | None = None
    tool_call: dict = field(default_factory=dict)
    action_run_id: str = ""
    action: dict | None = None  # the action proposed (or, dry, that would be): {"name", "params"}
    tokens_in: int = 0
    tokens_out: int = 0
    model_ms: float | None = None
    ttft_ms: float | None = None
    error: str = ""


@dataclass
class TurnInput:
    """What a turn decides on. A live turn reads it from its conversation; a simulated one
    (``turn_decide_dry``) is given it and has ``dry`` set: then nothing is proposed, executed,
    opened or stored."""

    text: str
    guards: GuardVerdict
    state: dict
    history: Callable[[bool], list[dict]]  # redact? -> [{"role": "user"|"assistant", "content"}], oldest first
    turn_id: str = ""  # live: actions are proposed with the idempotency key turn:<id>
    conversation_id: str = ""
    dry: bool = False


def _no_stream(token: str) -> None:
    """Where a dry turn's tokens go: nowhere."""


class TokenStreamer:
    """Batches streamed tokens (every STREAM_BATCH_MS) before sending them to the chat group."""

    def __init__(self, conversation_id, turn_id) -> None:
        self.group = chat_group(conversation_id)
        self.turn_id = str(turn_id)
        self.buffer: list[str] = []
        self.last_flush = time.perf_counter()
        self.sent_any = False

    def __call__(self, token: str) -> None:
        self.buffer.append(token)
        if (time.perf_counter() - self.last_flush) * 1000 >= settings.STREAM_BATCH_MS:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        text, self.buffer = "".join(self.buffer), []
        self.last_flush = time.perf_counter()
        self.sent_any = True
        group_send_now(self.group, {"type": "assistant.delta", "turn_id": self.turn_id, "text": text})


def turn_run(*, turn_id) -> Turn:
    """Run a pending turn once; a turn already done is returned unchanged (idempotent)."""
    turn = Turn.objects.select_related("conversation", "message").get(pk=turn_id)
    if turn.status != TurnStatus.PENDING:
        return turn
    conversation = turn.conversation
    started = time.perf_counter()
    # The assistant's live deployments, read afresh: an activation applies from the next turn.
    routing = assistant_routing(runtime=provider_for_settings())
    deployment = routing.for_conversation(conversation.pk)
    model_version, prompt_version = deployment.model_version, deployment.prompt_version
    provider = provider_for_version(model_version)
    guards = screen(turn.message.text)
    state_before = dict(conversation.state or {})  # what shadows start from
    if conversation.status != ConversationStatus.BOT:
        outcome = Outcome(decision=Decision.SKIPPED)
    else:
        group_send_now(chat_group(conversation.pk), {"type": "assistant.typing", "turn_id": str(turn.pk)})
        streamer = TokenStreamer(conversation.pk, turn.pk)
        turn_input = TurnInput(
            text=turn.message.text, guards=guards, state=dict(conversation.state or {}),
            history=lambda redact: _history(conversation, before_seq=turn.message.seq, redact=redact),
            turn_id=str(turn.pk), conversation_id=str(conversation.pk))
        try:
            outcome = _decide(turn_input, provider=provider, prompt_version=prompt_version, on_token=streamer)
        except ProviderError as exc:
            logger.warning("turn %s: provider failed (%s): %s", turn.pk, exc.kind, exc)
            outcome = Outcome(decision=Decision.ERROR, reply=REPLY_ERROR, reply_role=Role.SYSTEM, reply_kind="error",
                              error=f"{exc.kind}: {exc}")
        except Exception as exc:  # a bug must not leave the customer without an answer
            logger.exception("turn %s failed", turn.pk)
            outcome = Outcome(decision=Decision.ERROR, reply=REPLY_ERROR, reply_role=Role.SYSTEM, reply_kind="error",
                              error=f"internal: {exc.__class__.__name__}")
        streamer.flush()
    latency_ms = (time.perf_counter() - started) * 1000
    recorded = _record(turn_id=turn.pk, outcome=outcome, guards=guards.as_dict(), redacted=guards.redacted,
                       provider=provider, model_version=model_version, prompt_version=prompt_version,
                       latency_ms=latency_ms)
    if routing.shadows and recorded.decision != Decision.SKIPPED:
        _shadows_dispatch(turn_id=recorded.pk, deployments=routing.shadows, state=state_before)
    return recorded


def _shadows_dispatch(*, turn_id, deployments, state: dict) -> None:
    """Step 10: each shadow deployment answers the same input afterwards, recorded only. The
    turn is committed; a shadow that fails (or a broker that refuses the task) is logged and
    never reaches the customer."""
    from convo.tasks import shadow_turn

    for deployment in deployments:
        try:
            shadow_turn.delay(str(turn_id), str(deployment.pk), state)
        except Exception:  # noqa: BLE001 - the live turn is done; a shadow is best effort
            logger.exception("turn %s: shadow %s failed", turn_id, deployment.pk)


def turn_decide_dry(*, model_version, prompt_version, text: str, history: list[dict], state: dict | None = None,
                    on_token: Callable[[str], None] = _no_stream) -> Outcome:
    """Decide one turn with any model + prompt version pair without side effects: nothing is
    proposed or executed, no review item is opened, no message or state is stored, nothing is
    streamed. ``history`` holds the earlier messages, oldest first (``{"role": "user"|"assistant",
    "content"}``). A provider failure gives the live turn's error outcome."""
    provider = provider_for_version(model_version)
    guards = screen(text)
    given = [{"role": "user" if m.get("role") in ("user", "customer") else "assistant",
              "content": m.get("content", m.get("text", ""))} for m in history if m.get("role") != "system"][-8:]
    turn_input = TurnInput(
        text=text, guards=guards, state=dict(state or {}), dry=True,
        history=lambda redact: [{**m, "content": screen(m["content"]).redacted} if redact else m for m in given])
    try:
        outcome = _decide(turn_input, provider=provider, prompt_version=prompt_version, on_token=on_token)
    except ProviderError as exc:
        outcome = Outcome(decision=Decision.ERROR, reply=REPLY_ERROR, reply_role=Role.SYSTEM, reply_kind="error",
                          error=f"{exc.kind}: {exc}")
    return outcome


def _decide(turn_input: TurnInput, *, provider, prompt_version, on_token) -> Outcome:
    text, guards = turn_input.text, turn_input.guards
    if guards.injection:
        return Outcome(decision=Decision.FALLBACK, reply=REPLY_INJECTION, reason="injection_screen")
    vector = embed_query(text)
    match = intent_classify(vector=vector)
    threshold = settings.TURN_INTENT_MIN_CONFIDENCE
    intent_name = match.name if match else ""
    confidence = match.confidence if match else None
    state = dict(turn_input.state)
    pending = state.get("pending_action")

    def with_intent(outcome: Outcome) -> Outcome:
        outcome.intent = outcome.intent or intent_name
        outcome.confidence = confidence if outcome.confidence is None else outcome.confidence
        return outcome

    if match and match.kind == IntentKind.HANDOFF and match.confidence >= settings.TURN_HANDOFF_MIN_CONFIDENCE:
        return with_intent(Outcome(decision=Decision.ESCALATE, reply=REPLY_ESCALATED,
                                   escalate=EscalationReason.CUSTOMER_REQUEST, state={}))
    if pending and not (match and match.kind == IntentKind.ACTION and match.action_name != pending["action"]
                        and match.confidence >= settings.TURN_ACTION_MIN_CONFIDENCE):
        action = ActionDefinition.objects.filter(name=pending["action"], enabled=True).first()
        if action:
            found = extract_params(schema=action.parameters_schema, text=text, asked=pending.get("asked", ""))
            if found:
                params = {**pending.get("params", {}), **found}
                return with_intent(_action_flow(turn_input, action=action, params=params,
                                                intent=f"action:{action.name}", confidence=confidence))
        # The customer moved on to something else: drop the half-filled request.
        state.pop("pending_action", None)
    if match and match.kind == IntentKind.SMALLTALK and match.confidence >= max(threshold, 0.7) \
            and len(text.split()) <= 8:
        reply = Intent.objects.filter(name=match.name).values_list("reply", flat=True).first() or ""
        if reply:
            return with_intent(Outcome(decision=Decision.SMALLTALK, reply=reply, state=state))
    if provider.name == "offline" and match and match.kind == IntentKind.ACTION and match.confidence >= threshold:
        action = ActionDefinition.objects.filter(name=match.action_name, enabled=True).first()
        if action:
            params = extract_params(schema=action.parameters_schema, text=text)
            # A policy question ("can I return a jacket?") resembles a request; act only on a
            # close match, or a looser one that carries the request's details (an order number).
            if match.confidence >= settings.TURN_ACTION_MIN_CONFIDENCE or params:
                return with_intent(_action_flow(turn_input, action=action, params=params,
                                                intent=match.name, confidence=confidence))

    hits = chunk_search(query=text, query_vector=vector, k=4)
    sources = [{**h.as_source(n), "text": h.text} for n, h in enumerate(hits, start=1)]
    curated = _curated_answer(hits, sources)
    top = hits[0].similarity if hits else 0.0
    tools = _tool_specs(prompt_version.tools) if provider.name != "offline" else []
    if top < settings.TURN_ANSWER_MIN_SCORE and not tools:
        return with_intent(_fallback(state, sources))
    history = turn_input.history(provider.name != "offline")
    question = guards.redacted if provider.name != "offline" else text
    system_prompt = prompt_version.template.replace("{company}", COMPANY).replace(
        "{sources}", format_sources(sources if top >= settings.TURN_ANSWER_MIN_SCORE else [], curated=curated))
    result = provider.answer(AnswerRequest(question=question, history=history, sources=sources,
                                           system_prompt=system_prompt, tools=tools, question_vector=vector,
                                           curated_source=curated),
                             on_token=on_token)
    usage = {"tokens_in": result.tokens_in, "tokens_out": result.tokens_out, "model_ms": result.model_ms,
             "ttft_ms": result.ttft_ms}
    if result.tool_call:
        outcome = _tool_flow(turn_input, call=result.tool_call, confidence=confidence)
        outcome.tool_call = {"name": result.tool_call.name, "arguments": result.tool_call.arguments}
        for key, value in usage.items():
            setattr(outcome, key, value)
        outcome.sources = sources
        return with_intent(outcome)
    if not result.text or top < settings.TURN_ANSWER_MIN_SCORE and not result.cited:
        outcome = _fallback(state, sources)
        outcome.reply = result.text or outcome.reply
        for key, value in usage.items():
            setattr(outcome, key, value)
        return with_intent(outcome)
    cited = [s for s in sources if s["n"] in result.cited]
    return with_intent(Outcome(decision=Decision.ANSWER, reply=result.text, sources=sources, cited_sources=cited,
                               reason="curated_answer" if curated in result.cited else "",
                               state={k: v for k, v in state.items() if k != "strikes"}, **usage))


def _curated_answer(hits: list[SearchHit], sources: list[dict]) -> int | None:
    """The number of the source that is a curated answer to this question, if the top hit is
    one (retrieval puts the closest such answer first); its text becomes the whole answer."""
    if not hits or not hits[0].curated_match:
        return None
    answer = curated_answer_texts(document_ids=[hits[0].document_id]).get(hits[0].document_id)
    if not answer:
        return None
    sources[0]["text"] = answer
    return sources[0]["n"]


def _fallback(state: dict, sources: list[dict]) -> Outcome:
    strikes = int(state.get("strikes", 0)) + 1
    if strikes >= settings.TURN_LOW_CONFIDENCE_STRIKES:
        return Outcome(decision=Decision.ESCALATE, reply=REPLY_ESCALATED, escalate=EscalationReason.MISSING_KNOWLEDGE,
                       sources=sources, state={})
    return Outcome(decision=Decision.FALLBACK, reply=REPLY_FALLBACK, sources=sources, state={**state, "strikes": strikes},
                   reason="low_retrieval_score")


def _tool_specs(offered: list[str] | None) -> list[dict]:
    """The enabled actions the prompt version offers (``None``: every enabled action)."""
    actions = ActionDefinition.objects.filter(enabled=True).order_by("name")
    if offered is not None:
        if not offered:
            return []
        actions = actions.filter(name__in=offered)
    return [
        {"type": "function", "function": {"name": a.name, "description": a.description,
                                          "parameters": a.parameters_schema}}
        for a in actions
    ]


def _tool_flow(turn_input: TurnInput, *, call: ToolCall, confidence) -> Outcome:
    action = ActionDefinition.objects.filter(name=call.name, enabled=True).first()
    if action is None:
        return Outcome(decision=Decision.ESCALATE, reply=REPLY_ESCALATED, escalate=EscalationReason.UNSUPPORTED_REQUEST,
                       error=f"model proposed unknown action {call.name!r}", state={})
    # The model's arguments are only a proposal; anything it did not supply is read from
    # the customer's words the same way as the offline path.
    params = {**extract_params(schema=action.parameters_schema, text=turn_input.text), **call.arguments}
    return _action_flow(turn_input, action=action, params=params, intent=f"action:{action.name}",
                        confidence=confidence)


def _ask_for(action: ActionDefinition, name: str) -> str:
    return (action.ask or {}).get(name) or f"Could you tell me the {name.replace('_', ' ')}?"


def _action_flow(turn_input: TurnInput, *, action: ActionDefinition, params: dict, intent: str,
                 confidence) -> Outcome:
    schema = action.parameters_schema
    params = {k: v for k, v in params.items() if k in schema.get("properties", {})}
    missing = missing_params(schema=schema, params=params)
    if missing:
        asked = missing[0]
        return Outcome(decision=Decision.CLARIFY, reply=_ask_for(action, asked), intent=intent, confidence=confidence,
                       state={"pending_action": {"action": action.name, "params": params, "asked": asked}})
    if turn_input.dry:
        return _action_flow_dry(action=action, params=params, intent=intent, confidence=confidence)
    try:
        with transaction.atomic():
            run = action_run_propose(action=action, params=params, idempotency_key=f"turn:{turn_input.turn_id}",
                                     subject_type=SUBJECT_TYPE, subject_id=turn_input.conversation_id)
            if run.status == RunStatus.AWAITING_APPROVAL:
                review_item_open(
                    kind=ItemKind.ACTION_APPROVAL, subject_type=RUN_SUBJECT_TYPE, subject_id=str(run.pk),
                    title=f"{action.title}: {_describe(params, schema)}",
                    summary=f"The assistant proposes “{action.title}” with {_describe(params, schema)}.",
                    reason=EscalationReason.POLICY_RESTRICTION, priority=2,
                    sla_minutes=settings.ESCALATION_SLA_MINUTES,
                    data={"conversation_id": turn_input.conversation_id, "action": action.name, "params": params},
                )
    except InvalidParameters as exc:
        return _invalid_params(exc, action=action, params=params, intent=intent, confidence=confidence)
    if run.status == RunStatus.AWAITING_APPROVAL:
        return _approval_outcome(action=action, params=params, intent=intent, confidence=confidence,
                                 run_id=str(run.pk))
    run = action_run_execute(run_id=run.pk, final_attempt=True)
    outcome = _action_result_outcome(run=run, action=action, intent=intent, confidence=confidence)
    outcome.action = {"name": action.name, "params": run.params}
    return outcome


def _action_flow_dry(*, action: ActionDefinition, params: dict, intent: str, confidence) -> Outcome:
    """What the live flow would decide, without proposing or executing: the same parameter
    check and approval rule; an action that needs no approval is taken to succeed."""
    try:
        action_params_validate(action=action, params=params)
    except InvalidParameters as exc:
        return _invalid_params(exc, action=action, params=params, intent=intent, confidence=confidence)
    if approvals_required_for(action=action, params=params) > 0:
        return _approval_outcome(action=action, params=params, intent=intent, confidence=confidence, run_id="")
    return Outcome(decision=Decision.ACTION, intent=intent, confidence=confidence, reply_kind="action_done",
                   reply=f"(Not run: evaluation) {action.title}: {_describe(params, action.parameters_schema)}.",
                   action={"name": action.name, "params": params}, state={})


def _invalid_params(exc: InvalidParameters, *, action: ActionDefinition, params: dict, intent: str,
                    confidence) -> Outcome:
    schema = action.parameters_schema
    bad = next((name for name in schema.get("properties", {}) if str(exc).startswith(name)), "")
    if bad:
        params.pop(bad, None)
        return Outcome(decision=Decision.CLARIFY, intent=intent, confidence=confidence,
                       reply=f"That doesn't look right ({exc}). {_ask_for(action, bad)}",
                       state={"pending_action": {"action": action.name, "params": params, "asked": bad}})
    return Outcome(decision=Decision.FALLBACK, reply=f"I can't do that: {exc}", intent=intent,
                   confidence=confidence, state={})


def _approval_outcome(*, action: ActionDefinition, params: dict, intent: str, confidence, run_id: str) -> Outcome:
    return Outcome(decision=Decision.APPROVAL, intent=intent, confidence=confidence, action_run_id=run_id,
                   reply=(f"I've sent this to our team for approval: {action.title.lower()} "
                          f"({_describe(params, action.parameters_schema)}). You'll see the result here as soon "
                          f"as it's decided."),
                   reply_kind="action_pending", state={}, action={"name": action.name, "params": params})


def _describe(params: dict, schema: dict | None = None) -> str:
    def show(value):
        if isinstance(value, float):
            return f"{value:.2f}"
        return f"\u201c{value}\u201d" if isinstance(value, str) and " " in value else str(value)

    order = list((schema or {}).get("properties", {}))
    keys = sorted(params, key=lambda k: order.index(k) if k in order else len(order))
    return ", ".join(f"{k.replace('_', ' ')} {show(params[k])}" for k in keys)


def action_result_text(run: ActionRun) -> str:
    """What the customer is told about a settled run: never more than what happened."""
    action = run.action
    if run.status == RunStatus.SUCCEEDED:
        values = _SafeDict({**run.params, **(run.result or {})})
        try:
            return action.result_template.format_map(values).strip() or f"Done: {action.title.lower()}."
        except (ValueError, IndexError):
            return f"Done: {action.title.lower()}."
    if run.status == RunStatus.REJECTED:
        return f"Our team could not approve this request ({action.title.lower()}): {run.error}"
    if run.status == RunStatus.EXPIRED:
        return (f"Our team could not review your request in time ({action.title.lower()}), so nothing was done. "
                f"Ask again or ask for a person.")
    if run.http_status and 400 <= run.http_status < 500:
        return f"I couldn't do that: {run.error}. Please check the details and try again."
    return (f"I couldn't complete this ({action.title.lower()}) because our system didn't respond. "
            f"Nothing was changed. I've asked a person from our team to follow up.")


def _action_result_outcome(*, run: ActionRun, action, intent, confidence) -> Outcome:
    text = action_result_text(run)
    if run.status == RunStatus.SUCCEEDED:
        return Outcome(decision=Decision.ACTION, reply=text, intent=intent, confidence=confidence,
                       action_run_id=str(run.pk), reply_kind="action_done", state={})
    retryable_failure = not (run.http_status and 400 <= run.http_status < 500)
    return Outcome(decision=Decision.ESCALATE if retryable_failure else Decision.ACTION, reply=text, intent=intent,
                   confidence=confidence, action_run_id=str(run.pk), reply_kind="action_failed", state={},
                   escalate=EscalationReason.ACTION_FAILURE if retryable_failure else "", error=run.error)


def _history(conversation, *, before_seq: int, redact: bool) -> list[dict]:
    rows = list(
        Message.objects.filter(conversation=conversation, seq__lt=before_seq)
        .exclude(role=Role.SYSTEM).order_by("-seq").values("role", "text", "redacted_text")[:8]
    )
    history = []
    for row in reversed(rows):
        content = (row["redacted_text"] or screen(row["text"]).redacted) if redact else row["text"]
        history.append({"role": "user" if row["role"] == Role.CUSTOMER else "assistant", "content": content})
    return history


def turn_cost(model_version, *, tokens_in: int, tokens_out: int) -> Decimal:
    """The version's price per 1,000 tokens (or the configured one, for versions without a price)."""
    price_in, price_out = model_version.cost_per_1k_input, model_version.cost_per_1k_output
    if not price_in and not price_out:
        price_in = Decimal(str(settings.LLM_COST_PER_1K_INPUT))
        price_out = Decimal(str(settings.LLM_COST_PER_1K_OUTPUT))
    return (Decimal(tokens_in) * Decimal(price_in) + Decimal(tokens_out) * Decimal(price_out)) / 1000


def _record(*, turn_id, outcome: Outcome, guards: dict, redacted: str, provider, model_version, prompt_version,
            latency_ms: float) -> Turn:
    """Write the reply, the turn record and its audit event in one transaction."""
    with transaction.atomic(durable=True):
        turn = Turn.objects.select_for_update().select_related("message").get(pk=turn_id)
        if turn.status != TurnStatus.PENDING:
            return turn
        conversation = Conversation.objects.select_for_update().get(pk=turn.conversation_id)
        if conversation.status != ConversationStatus.BOT and outcome.decision != Decision.SKIPPED:
            # A person took over while the model was thinking: record, but do not speak.
            outcome.error = (outcome.error + "; " if outcome.error else "") + "superseded by a person"
            outcome.reply, outcome.escalate, outcome.decision = "", "", Decision.SKIPPED
        if redacted != turn.message.text:
            Message.objects.filter(pk=turn.message_id).update(redacted_text=redacted)
        reply = None
        if outcome.reply:
            reply = message_append(
                conversation=conversation, role=outcome.reply_role, text=outcome.reply,
                sources=[{k: v for k, v in s.items() if k != "text"} for s in outcome.cited_sources],
                data={"turn_id": str(turn.pk), "model_ms": outcome.model_ms, "kind": outcome.reply_kind,
                      "action_run_id": outcome.action_run_id or None},
            )
        if outcome.state is not None:
            conversation.state = outcome.state
            conversation.save(update_fields=["state", "updated_at"])
        if outcome.escalate:
            customer_texts = list(Message.objects.filter(conversation=conversation, role=Role.CUSTOMER)
                                  .order_by("seq").values_list("text", flat=True))
            label = EscalationReason(outcome.escalate).label
            summary = extractive_summary(customer_messages=customer_texts, reason_label=label,
                                         intent=outcome.intent)
            first = customer_texts[0] if customer_texts else ""
            conversation_escalate(
                conversation=conversation, reason=outcome.escalate, summary=summary,
                title=f"{label}: {first[:80]}", priority=1 if outcome.escalate == EscalationReason.ACTION_FAILURE else 2,
                data={"turn_id": str(turn.pk), "intent": outcome.intent, "confidence": outcome.confidence},
            )
        cost = turn_cost(model_version, tokens_in=outcome.tokens_in, tokens_out=outcome.tokens_out)
        turn.reply = reply
        turn.status = TurnStatus.DONE if outcome.decision != Decision.ERROR else TurnStatus.FAILED
        turn.intent, turn.confidence, turn.decision = outcome.intent, outcome.confidence, outcome.decision
        turn.reason = outcome.escalate or outcome.reason
        turn.sources = [{k: v for k, v in s.items() if k != "text"} for s in outcome.sources]
        turn.provider, turn.model_version, turn.prompt_version = provider.name, model_version, prompt_version
        turn.tokens_in, turn.tokens_out, turn.cost = outcome.tokens_in, outcome.tokens_out, cost
        turn.latency_ms, turn.model_ms, turn.ttft_ms = latency_ms, outcome.model_ms, outcome.ttft_ms
        turn.guards, turn.tool_call, turn.action_run_id = guards, outcome.tool_call, outcome.action_run_id
        turn.error = outcome.error
        turn.save()
        audit_event_record(
            action="ai.turn", target=turn,
            data={
                "conversation": str(conversation.pk), "message": str(turn.message_id),
                "reply": str(reply.pk) if reply else None, "intent": turn.intent, "confidence": turn.confidence,
                "decision": turn.decision, "reason": turn.reason, "provider": provider.name,
                "model_version": str(model_version.pk), "prompt_version": str(prompt_version.pk),
                "sources": [{"chunk_id": s["chunk_id"], "score": s["score"]} for s in turn.sources],
                "tool_call": turn.tool_call, "action_run": turn.action_run_id or None, "guards": guards,
                "tokens": [turn.tokens_in, turn.tokens_out], "latency_ms": round(latency_ms, 1),
                "error": turn.error,
            },
        )
    return turn
