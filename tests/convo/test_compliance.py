"""Compliance views: who may use them, the search filters, the records, the audit of every
view and export, and evidence bundles that verify and fail when tampered with."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from convo.compliance import nav_context
from convo.models import Contact, Conversation, ConversationStatus, Decision, Turn
from convo.services import conversation_close, conversation_start, message_receive
from governance.audit import audit_checkpoint_create, checkpoint_key, event_hash
from governance.evidence import EVIDENCE_FORMAT, bundle_event_hash, bundle_verify
from governance.models import AuditEvent, ModelVersion, PromptVersion
from integrations.models import ActionRun

pytestmark = pytest.mark.django_db

QUESTION = "How long does standard delivery take within Germany?"
REFUND_REQUEST = ("I want my money back for order BW-10003, 40 euros", "The zip broke after a week")
ESCALATE = "I want to talk to a real person please"
ROLES = ["anonymous", "outsider", "agent", "supervisor", "modelowner", "compliance", "admin"]
ALLOWED = {"compliance", "admin"}


def client_for(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def viewed_events():
    return list(AuditEvent.objects.filter(action="compliance.viewed").order_by("seq"))


def exported_events():
    return list(AuditEvent.objects.filter(action="compliance.exported").order_by("seq"))


@pytest.fixture
def people(users, outsider):
    return {"anonymous": None, "outsider": outsider, **users}


@pytest.fixture
def dana(say, customer_conversation):
    """Dana's conversation: an answer with sources, a refund waiting for approval, an escalation."""
    Contact.objects.filter(pk=customer_conversation.contact_id).update(
        name="Dana Whitfield", email="dana.w@example.com", external_id="CUST-481")
    answered = say(QUESTION)
    assert answered.decision == Decision.ANSWER and answered.sources
    say(REFUND_REQUEST[0])
    refund = say(REFUND_REQUEST[1])
    assert refund.decision == Decision.APPROVAL
    assert say(ESCALATE).decision == Decision.ESCALATE
    return Conversation.objects.select_related("contact").get(pk=customer_conversation.pk)


@pytest.fixture
def lee(say, users):
    """Lee's conversation, ten days old, one small-talk turn, closed as resolved."""
    contact = Contact.objects.create(name="Lee Morgan", email="lee@example.org", external_id="CUST-900")
    conversation = conversation_start(contact=contact)
    assert say("Hello", conversation=conversation).decision == Decision.SMALLTALK
    conversation_close(conversation_id=conversation.pk, agent=users["admin"], resolution="resolved")
    ten_days_ago = timezone.now() - timedelta(days=10)
    Conversation.objects.filter(pk=conversation.pk).update(created_at=ten_days_ago)
    return Conversation.objects.get(pk=conversation.pk)


def answer_turn(conversation) -> Turn:
    return Turn.objects.filter(conversation=conversation, decision=Decision.ANSWER).select_related(
        "model_version", "prompt_version").first()


# --- who may use them -----------------------------------------------------------------------------

def _urls(conversation) -> dict:
    turn = answer_turn(conversation)
    today = timezone.localdate().isoformat()
    urls = {
        "search": reverse("office:compliance"),
        "conversation": reverse("office:compliance_conversation", args=[conversation.pk]),
        "turn": reverse("office:compliance_turn", args=[turn.pk]),
    }
    for fmt in ("json", "html", "pdf"):
        urls[f"export_{fmt}"] = reverse("office:compliance_conversation_export", args=[conversation.pk, fmt])
        urls[f"range_{fmt}"] = f"{reverse('office:compliance_export', args=[fmt])}?from={today}&to={today}"
    return urls


ENDPOINTS = ["search", "conversation", "turn", "export_json", "export_html", "export_pdf", "range_json",
             "range_html", "range_pdf"]
# What each endpoint writes to the audit chain when it is allowed.
AUDITED = {"conversation": "compliance.viewed", "turn": "compliance.viewed", **{
    e: "compliance.exported" for e in ENDPOINTS if e.startswith(("export_", "range_"))}}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_role_matrix(dana, people, endpoint, role):
    url = _urls(dana)[endpoint]
    before = AuditEvent.objects.count()
    response = client_for(people[role]).get(url)
    if role == "anonymous":
        assert response.status_code == 302
        assert response["Location"].startswith(f"{reverse('login')}?next=")
    elif role in ALLOWED:
        assert response.status_code == 200, response.content[:300]
    else:
        assert response.status_code == 403
    if role in ALLOWED and endpoint in AUDITED:
        new = list(AuditEvent.objects.filter(seq__gt=before))
        assert [e.action for e in new] == [AUDITED[endpoint]]
        assert new[0].actor_id == str(people[role].pk)
    else:
        assert AuditEvent.objects.count() == before  # refused, or a plain search: nothing recorded


def test_posting_is_not_allowed(dana, users):
    client = client_for(users["compliance"])
    for endpoint, url in _urls(dana).items():
        assert client.post(url).status_code == 405, endpoint


@pytest.mark.parametrize("name", ["compliance_conversation", "compliance_turn"])
def test_unknown_ids_are_404_and_record_nothing(demo, users, name):
    before = AuditEvent.objects.count()
    response = client_for(users["compliance"]).get(reverse(f"office:{name}", args=[uuid.uuid4()]))
    assert response.status_code == 404
    assert AuditEvent.objects.count() == before


@pytest.mark.parametrize("fmt", ["json", "html", "pdf"])
def test_exporting_an_unknown_conversation_is_404(demo, users, fmt):
    before = AuditEvent.objects.count()
    url = reverse("office:compliance_conversation_export", args=[uuid.uuid4(), fmt])
    assert client_for(users["compliance"]).get(url).status_code == 404
    assert AuditEvent.objects.count() == before


def test_unknown_export_format_is_404(dana, users):
    client = client_for(users["compliance"])
    assert client.get(reverse("office:compliance_conversation_export", args=[dana.pk, "xml"])).status_code == 404
    assert client.get(reverse("office:compliance_export", args=["csv"]) + "?from=2025-01-01&to=2025-01-02"
                      ).status_code == 404
    assert exported_events() == []


# --- the search -----------------------------------------------------------------------------------

def search(client, **params) -> list:
    response = client.get(reverse("office:compliance"), params)
    assert response.status_code == 200, response.content[:500]
    return [c.pk for c in response.context["page"].object_list]


@pytest.fixture
def officer(users) -> Client:
    return client_for(users["compliance"])


def test_search_lists_every_conversation_newest_first(dana, lee, officer):
    found = search(officer)
    assert found.index(dana.pk) < found.index(lee.pk)
    assert set(found) == set(Conversation.objects.values_list("pk", flat=True))


@pytest.mark.parametrize("customer", ["dana", "WHITFIELD", "dana.w@EXAMPLE", "cust-481"])
def test_customer_filter_matches_name_email_and_id_case_insensitively(dana, lee, officer, customer):
    assert search(officer, customer=customer) == [dana.pk]


def test_date_filters(dana, lee, officer):
    today = timezone.localdate()
    lee_day = timezone.localdate(lee.created_at)
    assert search(officer, **{"from": today.isoformat()}) == [dana.pk]
    assert search(officer, to=lee_day.isoformat()) == [lee.pk]
    assert search(officer, **{"from": lee_day.isoformat(), "to": lee_day.isoformat()}) == [lee.pk]
    assert search(officer, **{"from": (lee_day - timedelta(days=1)).isoformat(), "to": today.isoformat()}
                  ) == [dana.pk, lee.pk]


def test_intent_filter(dana, lee, officer):
    intents = set(Turn.objects.filter(conversation=dana).exclude(intent="").values_list("intent", flat=True))
    assert "human_handoff" in intents
    assert search(officer, intent="human_handoff") == [dana.pk]
    assert search(officer, intent="greeting") == [lee.pk]
    assert search(officer, intent="no_such_intent") == []


def test_outcome_filters(dana, lee, officer):
    assert search(officer, decision=Decision.APPROVAL) == [dana.pk]
    assert search(officer, decision=Decision.SMALLTALK) == [lee.pk]
    assert search(officer, status=ConversationStatus.HANDOFF) == [dana.pk]
    assert search(officer, status=ConversationStatus.CLOSED) == [lee.pk]
    assert search(officer, resolution="RESOLVED") == [lee.pk]
    assert search(officer, resolution="spam") == []


def test_version_filters(dana, lee, officer, users):
    runtime_model = answer_turn(dana).model_version
    runtime_prompt = answer_turn(dana).prompt_version
    other_model = ModelVersion.objects.create(name="Other model", provider="openai", model_name="other-1")
    other_prompt = PromptVersion.objects.create(name="customer-assistant", version=99, template="x")
    Turn.objects.filter(conversation=lee).update(model_version=other_model, prompt_version=other_prompt)
    assert search(officer, model_version=str(runtime_model.pk)) == [dana.pk]
    assert search(officer, model_version=str(other_model.pk)) == [lee.pk]
    assert search(officer, prompt_version=str(other_prompt.pk)) == [lee.pk]
    assert search(officer, prompt_version=str(runtime_prompt.pk)) == [dana.pk]
    # The turn filters hold for one and the same turn.
    assert search(officer, model_version=str(other_model.pk), decision=Decision.ANSWER) == []
    assert search(officer, model_version=str(other_model.pk), decision=Decision.SMALLTALK) == [lee.pk]


def test_filters_combine(dana, lee, officer):
    assert search(officer, customer="example", decision=Decision.SMALLTALK) == [lee.pk]
    assert search(officer, customer="lee", status=ConversationStatus.HANDOFF) == []


@pytest.mark.parametrize(("params", "message"), [
    ({"from": "2025-13-45"}, "Enter a date as YYYY-MM-DD."),
    ({"to": "yesterday"}, "Enter a date as YYYY-MM-DD."),
    ({"from": "2025-03-10", "to": "2025-03-01"}, "The end date is before the start date."),
    ({"model_version": str(uuid.uuid4())}, "Unknown version: choose one from the list."),
    ({"prompt_version": "not-an-id"}, "Unknown version: choose one from the list."),
    ({"decision": "maybe"}, "Select a valid choice."),
])
def test_bad_filters_are_a_clear_error_not_a_500(dana, officer, params, message):
    response = officer.get(reverse("office:compliance"), params)
    assert response.status_code == 400
    content = response.content.decode()
    assert "Check the filters" in content and message.split(".")[0] in content
    assert response.context["page"] is None


def test_pages_of_fifty(demo, officer):
    with transaction.atomic():
        contact = Contact.objects.create(name="Bulk")
    for _ in range(51):
        conversation_start(contact=contact)
    first = officer.get(reverse("office:compliance"), {"customer": "bulk"})
    assert len(first.context["page"].object_list) == 50
    assert first.context["page"].paginator.count == 51
    second = officer.get(reverse("office:compliance"), {"customer": "bulk", "page": 2})
    assert len(second.context["page"].object_list) == 1
    assert "customer=bulk&amp;page=1" in second.content.decode()
    assert officer.get(reverse("office:compliance"), {"page": "nonsense"}).status_code == 200


def _conversations_with_turns(count: int, django_capture_on_commit_callbacks) -> None:
    """``count`` conversations with one recorded turn each (cheap: no pipeline run)."""
    for n in range(count):
        conversation = conversation_start(contact=Contact.objects.create(name=f"Customer {n}"))
        with django_capture_on_commit_callbacks(execute=False):
            message, _ = message_receive(conversation_id=conversation.pk, text=f"Question {n}")
        Turn.objects.filter(message=message).update(intent="greeting", decision=Decision.SMALLTALK)


# The session, the user, their roles; the intents, model and prompt versions offered by the
# filters; the count and the page of conversations (contact, turn count, intents and decisions
# in the same query).
SEARCH_QUERIES = 8


@pytest.mark.parametrize("conversations", [1, 12])
def test_search_query_count_does_not_grow_with_the_results(demo, officer, conversations,
                                                           django_capture_on_commit_callbacks,
                                                           django_assert_num_queries):
    _conversations_with_turns(conversations, django_capture_on_commit_callbacks)
    with django_assert_num_queries(SEARCH_QUERIES):
        response = officer.get(reverse("office:compliance"), {"intent": "greeting", "customer": "customer"})
    assert response.status_code == 200
    rows = list(response.context["page"].object_list)
    assert len(rows) == conversations
    assert all(r.turn_count == 1 and r.intents == ["greeting"] and r.decisions == ["smalltalk"] for r in rows)


# --- records --------------------------------------------------------------------------------------

def test_conversation_record_shows_every_turn_and_logs_the_view(dana, users, officer):
    response = officer.get(reverse("office:compliance_conversation", args=[dana.pk]))
    assert response.status_code == 200
    record = response.context["record"]
    assert len(record.turns) == Turn.objects.filter(conversation=dana).count() == 4
    assert record.chain_ok and all(e.chain["verified"] for e in record.events)
    assert {"conversation.started", "ai.turn", "action_run.proposed", "review.opened"} <= {
        e.action for e in record.events}
    content = response.content.decode()
    for turn in Turn.objects.filter(conversation=dana):
        assert reverse("office:compliance_turn", args=[turn.pk]) in content
    [event] = viewed_events()
    assert (event.actor_id, event.target_type, event.target_id) == (str(users["compliance"].pk), "convo.conversation",
                                                                    str(dana.pk))
    assert event.data == {"view": "conversation_record", "conversation": str(dana.pk)}


def test_decision_record_of_an_answer(dana, users, officer):
    turn = answer_turn(dana)
    response = officer.get(reverse("office:compliance_turn", args=[turn.pk]))
    assert response.status_code == 200
    content = response.content.decode()
    for source in turn.sources:
        assert source["title"] in content
        assert f"{source['similarity']:.3f}" in content
    assert turn.model_version.name in content and str(turn.model_version.pk) in content
    assert f"{turn.prompt_version.name} v{turn.prompt_version.version}" in content
    assert str(turn.prompt_version.pk) in content and turn.provider in content
    assert "✓ Chain verified" in content
    record = response.context["r"]
    [ai_turn] = [e for e in record.events if e.action == "ai.turn"]
    assert ai_turn.chain == {"hash_ok": True, "link_ok": True, "verified": True}
    assert ai_turn.hash in content
    [event] = viewed_events()
    assert (event.target_type, event.target_id) == ("convo.turn", str(turn.pk))
    assert event.data["conversation"] == str(dana.pk)


def test_decision_record_of_an_action_shows_the_run_its_approval_item_and_redacted_input(
        say, customer_conversation, officer):
    say("My card is 4111 1111 1111 1111, " + REFUND_REQUEST[0])
    turn = say(REFUND_REQUEST[1])
    first = Turn.objects.filter(conversation=customer_conversation).order_by("created_at").first()
    run = ActionRun.objects.get(pk=turn.action_run_id)
    response = officer.get(reverse("office:compliance_turn", args=[turn.pk]))
    record = response.context["r"]
    assert record.run == run
    assert [i.kind for i in record.review_items] == ["action_approval"]
    assert {"action_run.proposed", "action_run.awaiting_approval", "review.opened", "ai.turn"} <= {
        e.action for e in record.events}
    content = response.content.decode()
    assert run.action.title in content and "Action approval" in content
    # The earlier turn's input is shown as stored after redaction, never the card number.
    first_page = officer.get(reverse("office:compliance_turn", args=[first.pk])).content.decode()
    assert "4111 1111 1111 1111" not in first_page and "[CARD]" in first_page
    assert "Personal data redacted" in first_page


def test_a_tampered_event_shows_as_not_verified(dana, officer):
    """The record pages recompute each hash: a row changed behind the chain's back is shown."""
    from django.db import connection

    turn = answer_turn(dana)
    event = AuditEvent.objects.get(action="ai.turn", target_id=str(turn.pk))
    with connection.cursor() as cursor:  # the trigger refuses UPDATE; bypass it as an attacker would
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("UPDATE governance_auditevent SET data = data || '{\"intent\": \"forged\"}' WHERE id = %s",
                       [event.pk])
        cursor.execute("SET LOCAL session_replication_role = origin")
    response = officer.get(reverse("office:compliance_turn", args=[turn.pk]))
    [shown] = [e for e in response.context["r"].events if e.pk == event.pk]
    assert shown.chain == {"hash_ok": False, "link_ok": True, "verified": False}
    assert "Content changed" in response.content.decode()


# The session, the user, their roles; the conversation; its messages, turns (with versions),
# action runs (with approvals and history), review items (with history), audit events and the
# hashes before them; the audit lock, the chain head and the new event.
RECORD_QUERIES = 18


@pytest.mark.parametrize("extra_turns", [0, 2])
def test_record_query_count_does_not_grow_with_turns(say, customer_conversation, officer, extra_turns,
                                                     django_assert_num_queries):
    for question in [QUESTION, "Where is my order BW-10002?", "Can I pay with a gift card?"][:1 + extra_turns]:
        say(question)
    say(REFUND_REQUEST[0])
    say(REFUND_REQUEST[1])
    say(ESCALATE)
    with django_assert_num_queries(RECORD_QUERIES):
        response = officer.get(reverse("office:compliance_conversation", args=[customer_conversation.pk]))
    record = response.context["record"]
    assert len(record.turns) == 4 + extra_turns and record.runs and len(record.review_items) == 2


# --- evidence bundles -----------------------------------------------------------------------------

def export_json(client, conversation) -> dict:
    response = client.get(reverse("office:compliance_conversation_export", args=[conversation.pk, "json"]))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert "attachment" in response["Content-Disposition"]
    assert response["Cache-Control"] == "no-store, private"
    return json.loads(response.content)


def test_json_bundle_holds_the_record_and_verifies(dana, users, officer):
    bundle = export_json(officer, dana)
    assert bundle["format"] == EVIDENCE_FORMAT
    assert bundle["generated_by"]["username"] == "compliance"
    assert bundle["scope"] == {"kind": "conversation", "conversation": str(dana.pk)}
    [conversation] = bundle["conversations"]
    assert conversation["contact"]["name"] == "Dana Whitfield"
    assert [t["decision"] for t in conversation["turns"]] == ["answer", "clarify", "approval", "escalate"]
    answer = conversation["turns"][0]
    assert answer["sources"] and answer["model_version"]["provider"] and answer["prompt_version"]["version"] == 1
    assert answer["reply"] and answer["input"] == QUESTION
    assert [r["status"] for r in conversation["action_runs"]] == ["awaiting_approval"]
    assert {i["kind"] for i in conversation["review_items"]} == {"escalation", "action_approval"}
    seqs = [e["seq"] for e in bundle["audit"]]
    assert seqs == sorted(seqs) and bundle["counts"]["audit_events"] == len(seqs)
    actions = {e["action"] for e in bundle["audit"]}
    assert {"conversation.started", "ai.turn", "action_run.proposed", "review.opened",
            "conversation.escalated"} <= actions
    proof = bundle["chain_proof"]
    assert proof["verification"]["ok"] and proof["verification"]["head_seq"] >= max(seqs)
    assert "sort_keys=True" in " ".join(proof["recipe"]["canonical_json"])
    assert bundle_verify(bundle) == []
    # The export is itself an audited act, carried in the bundle.
    [event] = exported_events()
    assert bundle["export_event"]["seq"] == event.seq and bundle["export_event"]["hash"] == event.hash
    assert event.actor_id == str(users["compliance"].pk)
    assert event.data["format"] == "json" and event.data["counts"] == bundle["counts"]
    assert event.data["bundle_sha256"] and event.target_id == str(dana.pk)


def test_each_event_hash_recomputes_from_the_bundle_alone(dana, officer):
    """The recipe in the bundle is the one the chain uses (``governance.audit.event_hash``)."""
    from datetime import datetime

    bundle = export_json(officer, dana)
    for e in bundle["audit"] + [bundle["export_event"]]:
        assert bundle_event_hash(e) == e["hash"] == event_hash(
            seq=e["seq"], prev_hash=e["prev_hash"], occurred_at=datetime.fromisoformat(e["occurred_at"]),
            actor_id=e["actor_id"], actor_label=e["actor_label"], action=e["action"], target_type=e["target_type"],
            target_id=e["target_id"], request_id=e["request_id"], data=e["data"])


def _edits(value):
    """A changed copy of a field's value."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, dict):
        return {**value, "tampered": True}
    return f"{value}x"


def test_editing_any_field_of_any_event_fails_verification(dana, officer):
    bundle = export_json(officer, dana)
    fields = ["seq", "prev_hash", "hash", "occurred_at", "actor_id", "actor_label", "action", "target_type",
              "target_id", "request_id", "data"]
    for index in range(len(bundle["audit"])):
        for name in fields:
            tampered = copy.deepcopy(bundle)
            event = tampered["audit"][index]
            event[name] = _edits(event[name])
            assert bundle_verify(tampered), f"editing {name} of event {event['seq']} went unnoticed"


@pytest.mark.parametrize("edit", ["message", "turn_intent", "turn_source_score", "drop_event", "add_event",
                                  "export_event", "chain_failed", "format"])
def test_editing_the_rest_of_the_bundle_fails_verification(dana, officer, edit):
    bundle = export_json(officer, dana)
    conversation = bundle["conversations"][0]
    if edit == "message":
        conversation["messages"][1]["text"] = "Something the customer never said"
    elif edit == "turn_intent":
        conversation["turns"][0]["intent"] = "refund_request"
    elif edit == "turn_source_score":
        conversation["turns"][0]["sources"][0]["score"] = 1.0
    elif edit == "drop_event":
        bundle["audit"].pop(len(bundle["audit"]) // 2)
    elif edit == "add_event":
        bundle["audit"].append({**bundle["audit"][-1], "seq": 10**9})
    elif edit == "export_event":
        bundle["export_event"]["data"]["format"] = "pdf"
    elif edit == "chain_failed":
        bundle["chain_proof"]["verification"]["ok"] = False
    else:
        bundle["format"] = "something/v0"
    assert bundle_verify(bundle)


def test_a_signed_checkpoint_is_carried_and_checkable_with_the_key(dana, officer):
    checkpoint = audit_checkpoint_create()
    bundle = export_json(officer, dana)
    carried = bundle["chain_proof"]["checkpoint"]
    assert (carried["seq"], carried["hash"], carried["signature"]) == (checkpoint.seq, checkpoint.hash,
                                                                        checkpoint.signature)
    assert "key" not in json.dumps(carried).lower()
    assert bundle["chain_proof"]["verification"]["checkpoints_confirmed"] == 1
    assert bundle_verify(bundle, checkpoint_key=checkpoint_key()) == []
    assert bundle_verify(bundle, checkpoint_key=b"another key") == [
        f"checkpoint at seq {checkpoint.seq} has an invalid signature"]


def test_a_checkpoint_older_than_the_newest_event_is_not_carried(dana, officer):
    audit_checkpoint_create()
    officer.get(reverse("office:compliance_conversation", args=[dana.pk]))  # a newer event of this conversation
    assert export_json(officer, dana)["chain_proof"]["checkpoint"] is None


def test_a_broken_chain_is_reported_in_the_bundle(dana, officer):
    from django.db import connection

    event = AuditEvent.objects.filter(action="conversation.started").first()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("UPDATE governance_auditevent SET actor_label = 'someone else' WHERE id = %s", [event.pk])
        cursor.execute("SET LOCAL session_replication_role = origin")
    bundle = export_json(officer, dana)
    assert bundle["chain_proof"]["verification"]["ok"] is False
    assert bundle["chain_proof"]["verification"]["first_broken_seq"] == event.seq
    problems = bundle_verify(bundle)
    assert any("did not verify when the bundle was made" in p for p in problems)


def test_html_report_is_readable_and_printable(dana, officer):
    turn = answer_turn(dana)
    response = officer.get(reverse("office:compliance_conversation_export", args=[dana.pk, "html"]))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    content = response.content.decode()
    assert "Tandem evidence report" in content and "@media print" in content
    assert "Audit chain verified." in content
    for source in turn.sources:
        assert source["title"] in content
    assert turn.model_version.name in content and str(turn.model_version.pk) in content
    assert f"{turn.prompt_version.name} v{turn.prompt_version.version}" in content
    assert AuditEvent.objects.get(action="ai.turn", target_id=str(turn.pk)).hash in content
    [event] = exported_events()
    assert event.data["format"] == "html" and event.hash in content


def test_pdf_report(dana, officer):
    response = officer.get(reverse("office:compliance_conversation_export", args=[dana.pk, "pdf"]))
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    assert len(response.content) > 5000
    [event] = exported_events()
    assert event.data["format"] == "pdf"


def test_pdf_text_holds_the_sources_and_versions(dana, officer):
    from pypdf import PdfReader

    turn = answer_turn(dana)
    response = officer.get(reverse("office:compliance_conversation_export", args=[dana.pk, "pdf"]))
    import io

    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)
    flat = " ".join(text.split())
    assert turn.model_version.name in flat
    assert turn.sources[0]["title"].split()[0] in flat


# --- date-range exports ---------------------------------------------------------------------------

def range_url(fmt: str, **params) -> str:
    from urllib.parse import urlencode

    return f"{reverse('office:compliance_export', args=[fmt])}?{urlencode(params)}"


def test_range_export_holds_the_conversations_of_the_range(dana, lee, officer):
    today = timezone.localdate()
    response = officer.get(range_url("json", **{"from": (today - timedelta(days=20)).isoformat(),
                                                "to": today.isoformat()}))
    assert response.status_code == 200
    bundle = json.loads(response.content)
    assert [c["id"] for c in bundle["conversations"]] == [str(lee.pk), str(dana.pk)]  # oldest first
    assert bundle["scope"] == {"kind": "date_range"}
    assert bundle["filters"] == {"from": (today - timedelta(days=20)).isoformat(), "to": today.isoformat()}
    assert bundle_verify(bundle) == []
    [event] = exported_events()
    assert event.target_id == "" and event.data["conversations"] == [str(lee.pk), str(dana.pk)]
    assert event.data["scope"] == {"kind": "date_range"} and event.data["counts"]["conversations"] == 2


def test_range_export_applies_the_search_filters(dana, lee, officer):
    today = timezone.localdate().isoformat()
    bundle = json.loads(officer.get(range_url("json", **{"from": "2000-01-01", "to": "2000-01-02"})).content)
    assert bundle["conversations"] == []
    bundle = json.loads(officer.get(range_url("json", **{"from": today, "to": today, "customer": "dana"})).content)
    assert [c["id"] for c in bundle["conversations"]] == [str(dana.pk)]
    assert bundle["filters"]["customer"] == "dana"


@pytest.mark.parametrize(("params", "message"), [
    ({}, "This field is required."),
    ({"from": "2025-01-01"}, "This field is required."),
    ({"from": "2025-01-01", "to": "not-a-date"}, "Enter a date as YYYY-MM-DD."),
    ({"from": "2025-02-01", "to": "2025-01-01"}, "The end date is before the start date."),
    ({"from": "2025-01-01", "to": "2025-02-01"}, "The range covers 32 days; an export covers at most 31 days."),
    ({"from": "2025-01-01", "to": "2025-01-02", "model_version": "nope"}, "Unknown version"),
])
@pytest.mark.parametrize("fmt", ["json", "html", "pdf"])
def test_range_export_refusals_are_clear_and_record_nothing(dana, officer, params, message, fmt):
    before = AuditEvent.objects.count()
    response = officer.get(range_url(fmt, **params))
    assert response.status_code == 400
    if fmt == "json":
        assert message in response.json()["error"]
    else:
        assert message in response.content.decode()
    assert AuditEvent.objects.count() == before


def test_range_export_refuses_too_many_conversations(dana, lee, officer, settings):
    settings.COMPLIANCE_EXPORT_MAX_CONVERSATIONS = 1
    today = timezone.localdate()
    response = officer.get(range_url("json", **{"from": (today - timedelta(days=20)).isoformat(),
                                                "to": today.isoformat()}))
    assert response.status_code == 400
    assert response.json()["error"].startswith("More than 1 conversations match")
    assert exported_events() == []
    settings.COMPLIANCE_EXPORT_MAX_DAYS = 5
    response = officer.get(range_url("json", **{"from": (today - timedelta(days=5)).isoformat(),
                                                "to": today.isoformat()}))
    assert response.json()["error"].startswith("The range covers 6 days")


# The session, the user, their roles; the filter options (3); the savepoint; the matching ids
# and the conversations; their messages, turns, runs, review items, audit events (runs and items
# would add their approvals, history and item history: none here); the chain head, the latest
# checkpoint, the stored checkpoints and the chain walk; the audit lock, the head before the new
# event, the event; the release.
EXPORT_QUERIES = 22


@pytest.mark.parametrize("conversations", [1, 6])
def test_range_export_query_count_does_not_grow(demo, officer, conversations, django_capture_on_commit_callbacks,
                                                django_assert_num_queries):
    _conversations_with_turns(conversations, django_capture_on_commit_callbacks)
    today = timezone.localdate().isoformat()
    with django_assert_num_queries(EXPORT_QUERIES):
        response = officer.get(range_url("json", **{"from": today, "to": today}))
    assert len(json.loads(response.content)["conversations"]) == conversations


# --- navigation -----------------------------------------------------------------------------------

@pytest.fixture
def nav_registered(settings):
    """The context processor as the lead registers it in settings."""
    templates = copy.deepcopy(settings.TEMPLATES)
    processors = templates[0]["OPTIONS"]["context_processors"]
    if "convo.compliance.nav_context" not in processors:
        processors.append("convo.compliance.nav_context")
    settings.TEMPLATES = templates


@pytest.mark.parametrize(("role", "shown"), [("agent", False), ("supervisor", False), ("compliance", True),
                                             ("admin", True)])
def test_navigation_links_compliance_for_those_who_may_use_it(dana, people, nav_registered, role, shown):
    content = client_for(people[role]).get(reverse("office:inbox")).content.decode()
    assert (f'href="{reverse("office:compliance")}"' in content) is shown


def test_the_navigation_entry_costs_no_query(dana, users, settings, django_assert_num_queries):
    client = client_for(users["compliance"])
    client.get(reverse("office:inbox"))
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as without:
        client.get(reverse("office:inbox"))
    templates = copy.deepcopy(settings.TEMPLATES)
    templates[0]["OPTIONS"]["context_processors"].append("convo.compliance.nav_context")
    settings.TEMPLATES = templates
    with django_assert_num_queries(len(without.captured_queries)):
        response = client.get(reverse("office:inbox"))
    assert f'href="{reverse("office:compliance")}"' in response.content.decode()


def test_nav_context_is_lazy(rf):
    request = rf.get("/")

    class Boom:
        is_authenticated = True

        @property
        def is_active(self):
            raise AssertionError("evaluated")

    request.user = Boom()
    context = nav_context(request)  # nothing evaluated until a template asks
    with pytest.raises(AssertionError):
        bool(context["nav_compliance"])
