"""What the workspace's context pane tells an agent about a conversation: the customer as the
connected backends know them, and suggested next steps.

Both are read on demand (the pane loads them after the page), because they call the backends
and the knowledge search; nothing here writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from convo.models import Conversation, Message, Role
from integrations.lookups import read_action_lookup
from integrations.models import ActionRun, RunStatus
from review.models import EscalationReason, ItemStatus, ReviewItem

ORDER_ID = re.compile(r"\bBW-\d{5}\b", re.IGNORECASE)
EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
MAX_ORDERS = 3

# What to do first, by why the assistant asked for a person.
REASON_STEPS: dict[str, str] = {
    EscalationReason.CUSTOMER_REQUEST: "The customer asked for a person: greet them by name and ask what they need.",
    EscalationReason.MISSING_KNOWLEDGE: ("The assistant found nothing to answer from: answer the customer, then save "
                                         "your answer as a curated answer so it knows next time."),
    EscalationReason.UNSUPPORTED_REQUEST: ("The assistant cannot do what was asked: check whether an action or a "
                                           "colleague can, and tell the customer what happens next."),
    EscalationReason.POLICY_RESTRICTION: "A proposed action needs a decision: check it against policy, then approve or reject it.",
    EscalationReason.ACTION_FAILURE: ("An approved action failed in the backend: read the error under Actions, "
                                      "then retry it by hand or tell the customer what you will do instead."),
    EscalationReason.LOW_CONFIDENCE: ("The assistant was unsure several times in a row: read the last few messages "
                                      "and answer the customer's actual question."),
    EscalationReason.SAFETY_FLAG: ("A safety check stopped the assistant: read the flagged message carefully before "
                                   "replying, and involve a supervisor if in doubt."),
}


@dataclass
class CustomerDetails:
    name: str = ""
    email: str = ""
    account: dict | None = None
    orders: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    looked_for: list[str] = field(default_factory=list)


def _mentioned(conversation: Conversation, runs: list[ActionRun]) -> tuple[list[str], str]:
    """Order ids and an e-mail the customer gave, from the actions and the messages (newest first)."""
    orders: list[str] = []
    email = conversation.contact.email or ""
    for run in runs:
        order = str(run.params.get("order_id") or "").upper()
        if order and order not in orders:
            orders.append(order)
        email = email or str(run.params.get("email") or "")
    texts = Message.objects.filter(conversation=conversation, role=Role.CUSTOMER).order_by("-seq").values_list(
        "text", flat=True)[:50]
    for text in texts:
        for found in ORDER_ID.findall(text):
            if found.upper() not in orders:
                orders.append(found.upper())
        if not email:
            match = EMAIL.search(text)
            email = match.group(0) if match else ""
    return orders[:MAX_ORDERS], email


def customer_details(*, conversation: Conversation, runs: list[ActionRun]) -> CustomerDetails:
    """The customer as the backends know them: their account (by e-mail) and the orders they
    mentioned, through the read actions of the action catalogue."""
    order_ids, email = _mentioned(conversation, runs)
    details = CustomerDetails(name=conversation.contact.name, email=email, looked_for=order_ids)
    if email:
        found = read_action_lookup(action_name="account_lookup", params={"email": email})
        if found.ok:
            details.account = found.data
            details.name = details.name or found.data.get("name", "")
        else:
            details.errors.append(f"Account for {email}: {found.error}")
    for order_id in order_ids:
        found = read_action_lookup(action_name="order_status", params={"order_id": order_id})
        if found.ok:
            details.orders.append(found.data)
            if not details.email and found.data.get("email"):
                details.email = found.data["email"]
        else:
            details.errors.append(f"Order {order_id}: {found.error}")
    if not details.account and details.email and not email:
        found = read_action_lookup(action_name="account_lookup", params={"email": details.email})
        if found.ok:
            details.account = found.data
            details.name = details.name or found.data.get("name", "")
    return details


@dataclass(frozen=True)
class Step:
    text: str
    link: str = ""
    link_label: str = ""


def suggested_next_steps(*, user, conversation: Conversation, escalation: ReviewItem | None,
                         runs: list[ActionRun], details: CustomerDetails) -> list[Step]:
    """A short list: why a person is here, what waits for a decision, and what the internal
    playbooks say about the customer's latest question."""
    steps: list[Step] = []
    if escalation and escalation.status in (ItemStatus.OPEN, ItemStatus.CLAIMED) and escalation.reason in REASON_STEPS:
        steps.append(Step(REASON_STEPS[escalation.reason]))
    for run in runs:
        if run.status == RunStatus.AWAITING_APPROVAL:
            steps.append(Step(f"Decide “{run.action.title}” ({_params_line(run.params)}): approve, edit or reject it "
                              "under Actions."))
        elif run.status == RunStatus.FAILED:
            steps.append(Step(f"“{run.action.title}” failed: {run.error or 'see Actions'}."))
    for order in details.orders:
        if order.get("status_label"):
            steps.append(Step(f"Order {order.get('order_id')}: {order['status_label']}. {order.get('eta_sentence', '')}".strip()))
    question = (Message.objects.filter(conversation=conversation, role=Role.CUSTOMER).order_by("-seq")
                .values_list("text", flat=True).first())
    if question:
        for hit in playbook_passages(user=user, query=question, k=2):
            steps.append(Step(f"Playbook: {hit.section or hit.title}", link=hit.url or "", link_label=hit.title))
    return steps


def _params_line(params: dict) -> str:
    def show(value) -> str:  # amounts read as money: 150.0 → 150.00
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    return ", ".join(f"{k} {show(v)}" for k, v in list(params.items())[:4])


def playbook_passages(*, user, query: str, k: int = 2):
    """The best passages of the internal collections ``user`` may read, for ``query``."""
    from knowledge.embeddings import embed_query
    from knowledge.models import Audience
    from knowledge.permissions import Action, collections_for
    from knowledge.selectors import chunk_search

    collection_ids = [str(pk) for pk in collections_for(user, Action.READ).filter(
        audience=Audience.INTERNAL).values_list("pk", flat=True)]
    if not collection_ids:
        return []
    query = query[:500]
    hits = chunk_search(query=query, k=k, audiences=(Audience.INTERNAL,), query_vector=embed_query(query),
                        collection_ids=collection_ids)
    return [h for h in hits if (h.similarity or 0) >= 0.3]
