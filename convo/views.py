"""Server-rendered pages: the customer chat and the agent back office ("office")."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from convo import selectors, services
from convo.exceptions import ConvoError
from convo.models import Conversation, ConversationStatus, Message
from convo.views_queue import queue_context
from governance.permissions import can_read_conversations, can_work_conversations
from integrations.exceptions import IntegrationError
from integrations.models import ActionRun, RunStatus
from integrations.services import action_run_approve, action_run_reject
from knowledge.curated import (
    ANSWER_CHARS,
    QUESTION_CHARS,
    CuratedAnswerInvalid,
    curated_answer_list,
    curated_answer_save,
    curated_answer_text,
    curated_collections_for,
)
from knowledge.models import Audience, Document, DocumentKind
from knowledge.permissions import document_get_for_user
from review.exceptions import ReviewError
from review.models import ItemKind, ReviewItem
from review.services import review_item_claim, review_items_resolve_for_subject

SESSION_KEY = "tandem_conversation_id"


# --- customer ---------------------------------------------------------------------------

@require_GET
def chat(request: HttpRequest) -> HttpResponse:
    """The customer chat page; one conversation per browser session until it is closed."""
    conversation = None
    conversation_id = request.session.get(SESSION_KEY)
    if conversation_id:
        # A closed conversation stays on screen while its rating survey waits for an answer.
        conversation = Conversation.objects.filter(pk=conversation_id).filter(
            ~Q(status=ConversationStatus.CLOSED) | Q(csat_requested_at__isnull=False, csat_submitted_at__isnull=True)
        ).first()
    if conversation is None:
        conversation = services.conversation_start()
        request.session[SESSION_KEY] = str(conversation.pk)
    return render(request, "convo/chat.html", {
        "conversation": conversation,
        "token": services.conversation_token(conversation),
        "messages_json": selectors.messages_after(conversation_id=conversation.pk),
        "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
    })


@require_POST
def chat_new(request: HttpRequest) -> HttpResponse:
    request.session.pop(SESSION_KEY, None)
    return redirect("convo:chat")


# --- office -----------------------------------------------------------------------------

def _office_user(request: HttpRequest):
    if not can_read_conversations(request.user):
        raise PermissionDenied("The back office is for Tandem staff.")
    return request.user


def _get_conversation(request, conversation_id) -> Conversation:
    try:
        return selectors.conversation_get_for_user(user=request.user, conversation_id=conversation_id)
    except (Conversation.DoesNotExist, ValidationError):
        raise Http404("No such conversation, or it is not in your teams.") from None


@login_required
@require_GET
def inbox(request: HttpRequest) -> HttpResponse:
    """The workspace with nothing open yet: the queue, the live chats, and the day's figures."""
    user = _office_user(request)
    from review.permissions import sees_every_queue
    from review.selectors import escalation_accuracy

    return render(request, "office/inbox.html", {
        **queue_context(request),
        "live": list(selectors.conversation_inbox(user=user)[:50]),
        "can_work": can_work_conversations(user),
        "sees_all": sees_every_queue(user),
        "accuracy": escalation_accuracy(user=user, since=timezone.now() - timedelta(days=30)),
        "claim_minutes": settings.REVIEW_CLAIM_TTL_MINUTES,
    })


@login_required
@require_GET
def conversation_detail(request: HttpRequest, conversation_id) -> HttpResponse:
    _office_user(request)
    conversation = _get_conversation(request, conversation_id)
    return render(request, "office/conversation.html", _conversation_context(request, conversation))


def _conversation_context(request, conversation: Conversation, *, curated_post: dict | None = None,
                          curated_errors: dict | None = None) -> dict:
    runs = selectors.action_runs_for_conversation(conversation=conversation)
    approval_items = {
        i.subject_id: i for i in ReviewItem.objects.filter(
            kind=ItemKind.ACTION_APPROVAL, subject_type="integrations.actionrun",
            subject_id__in=[str(r.pk) for r in runs], status__in=["open", "claimed"])
    }
    transcript = selectors.conversation_transcript(conversation=conversation)
    can_work = can_work_conversations(request.user)
    escalation = _escalation_item(conversation)
    from convo.flagging import FLAG_CATEGORIES
    from review.permissions import may_work_item, sees_every_queue

    collections = list(curated_collections_for(request.user)) if can_work else []
    return {
        **queue_context(request, current_conversation_id=conversation.pk),
        "flag_categories": FLAG_CATEGORIES,
        "flag_collections": collections,
        "sees_all": sees_every_queue(request.user),
        "conversation": conversation,
        "transcript": transcript,
        # Pairs, not dicts: a template's ``x.items`` would look up a key named "items" first.
        "runs": [{"run": r, "item": approval_items.get(str(r.pk)), "params": list(r.params.items()),
                  "result": list((r.result or {}).items()),
                  "params_json": json.dumps(r.params, indent=2, ensure_ascii=False)} for r in runs],
        "escalation": escalation,
        "resolutions": RESOLUTIONS,
        "proposable": _proposable(conversation) if can_work and conversation.status != "closed" else [],
        "propose_token": uuid.uuid4().hex,
        "may_work_escalation": bool(escalation and can_work and may_work_item(request.user, escalation)),
        "can_work": can_work,
        "is_mine": conversation.assigned_agent_id == request.user.pk,
        "now": timezone.now(),
        "curated": _curated_panel(request.user, conversation, transcript, collections, post=curated_post,
                                  errors=curated_errors) if can_work else None,
    }


def _proposable(conversation: Conversation) -> list[dict]:
    """The actions an agent may propose here, each with a parameters template to fill in."""
    from convo.agent_actions import proposable_actions

    return [{"action": a, "template": json.dumps({name: "" for name in a.parameters_schema.get("properties", {})},
                                                 indent=2)}
            for a in proposable_actions()]


def _escalation_item(conversation: Conversation) -> ReviewItem | None:
    return ReviewItem.objects.select_related("claimed_by").filter(kind=ItemKind.ESCALATION, subject_type=services.SUBJECT_TYPE,
                                     subject_id=str(conversation.pk)).order_by("-created_at").first()


# --- curated answers --------------------------------------------------------------------------

def _curated_panel(user, conversation: Conversation, transcript: list[dict], collections: list, *,
                   post: dict | None, errors: dict | None) -> dict | None:
    """The "Save as curated answer" form, for whoever may add answers to a collection: the
    customer's latest message as the question, the latest agent reply as the answer; and the
    answers already saved from this conversation (each editable where the user may)."""
    if not collections:
        return None
    post, errors = post or {}, errors or {}
    form_for = post.get("document", "")  # "" is the new answer's form, else the edited answer's id
    saved, placed = [], not form_for
    for document in curated_answer_list(user=user, conversation_id=str(conversation.pk)):
        may_change = document.may_edit and (document.may_publish or not document.published)
        editing = may_change and form_for == str(document.pk)
        placed = placed or editing
        saved.append({
            "document": document,
            "may_change": may_change,
            "question": post["question"] if editing else document.title,
            "answer": post["answer"] if editing else curated_answer_text(document.body),
            "errors": errors if editing else {},
        })
    # Prefill with the latest customer message and agent reply, unless they are saved already.
    taken = {e["document"].title for e in saved} | {curated_answer_text(e["document"].body) for e in saved}
    latest = {}
    for entry in reversed(transcript):
        latest.setdefault(entry["message"].role, entry["message"].text.strip())
    new = {"question": "", "answer": "", "collection": str(collections[0].pk), "errors": {}}
    for field, role in (("question", "customer"), ("answer", "agent")):
        if latest.get(role) and latest[role] not in taken and " ".join(latest[role].split()) not in taken:
            new[field] = latest[role]
    if not form_for and post:
        new.update(question=post["question"], answer=post["answer"], collection=post["collection"], errors=errors)
    selected = next((c for c in collections if str(c.pk) == new["collection"]), collections[0])
    # Errors about the edited answer itself, or of an answer with no edit form to show them in.
    general = [errors["document"]] if placed and "document" in errors else [] if placed else list(errors.values())
    return {"collections": collections, "selected": selected, "new": new, "saved": saved, "errors": general,
            "question_chars": QUESTION_CHARS, "answer_chars": (ANSWER_CHARS[0], f"{ANSWER_CHARS[1]:,}")}


def _curated_saved_message(document: Document, *, created: bool, changed: bool) -> str:
    if not changed and created:
        return f"This question and answer are already saved in “{document.collection.name}”."
    if not changed:
        return "Nothing changed: the answer is the same as its current version."
    what = "Curated answer saved" if created else f"Curated answer saved as version {document.version}"
    internal = document.collection.audience == Audience.INTERNAL
    if document.published and internal:
        return f"{what}. It is live in knowledge search for agents; customers never get internal answers."
    if document.published:
        return f"{what}. It is live: the assistant answers this question with it."
    return (f"{what}. It waits for someone who may publish in “{document.collection.name}”; until then "
            f"{'it is not used' if internal else 'the assistant does not use it'}.")


@login_required
@require_POST
def conversation_curated_answer(request, conversation_id):
    """Save a new curated answer from this conversation, or (with ``document``) edit one.

    Bad input re-renders the page with the form's errors (status 400); success redirects back
    with a message."""
    user = _office_user(request)
    if not can_work_conversations(user):
        raise PermissionDenied("Only agents can do this.")
    collections = {str(c.pk): c for c in curated_collections_for(user)}
    if not collections:
        raise PermissionDenied("You may not add answers to any knowledge collection.")
    conversation = _get_conversation(request, conversation_id)
    post = {name: request.POST.get(name, "") for name in ("question", "answer", "collection", "document")}
    errors: dict[str, str] = {}
    document = None
    if post["document"]:
        try:
            document = document_get_for_user(user=user, document_id=post["document"], action="edit")
        except Document.DoesNotExist:
            errors["document"] = "That answer does not exist, or you may not read it."
        except PermissionDenied as exc:
            errors["document"] = str(exc)
        else:
            if document.kind != DocumentKind.CURATED:
                errors["document"] = "Only curated answers can be edited here."
        collection = document.collection if document is not None else None
    else:
        collection = collections.get(post["collection"])
        if collection is None:
            errors["collection"] = "Choose a collection you may add answers to."
    if not errors:
        try:
            document, changed = curated_answer_save(
                collection=collection, question=post["question"], answer=post["answer"], actor=user,
                document=document, source_review_item=None if document else _escalation_item(conversation),
                conversation_id=str(conversation.pk))
        except CuratedAnswerInvalid as exc:
            errors.update(exc.errors)
        except PermissionDenied as exc:
            errors["document" if post["document"] else "collection"] = str(exc)
    if errors:
        context = _conversation_context(request, conversation, curated_post=post, curated_errors=errors)
        return render(request, "office/conversation.html", context, status=400)
    flash.success(request, _curated_saved_message(document, created=not post["document"], changed=changed))
    return redirect("office:conversation", conversation_id=conversation.pk)


# --- flagging an AI answer --------------------------------------------------------------------

@login_required
@require_POST
def message_flag(request, message_id):
    """Flag an assistant answer as wrong: the correct answer becomes a curated answer and an
    evaluation case. Bad input re-renders the page with the form's errors (status 400)."""
    from convo.flagging import FlagError, FlagInvalid, ai_answer_flag, message_get_for_user

    user = _office_user(request)
    if not can_work_conversations(user):
        raise PermissionDenied("Only agents can flag answers.")
    try:
        message = message_get_for_user(user=user, message_id=message_id)
    except (Message.DoesNotExist, ValidationError, ValueError):
        raise Http404("No such message, or it is not in your teams.") from None
    conversation = _get_conversation(request, message.conversation_id)
    post = {name: request.POST.get(name, "") for name in ("category", "correct_answer", "question", "note",
                                                          "collection")}
    collections = {str(c.pk): c for c in curated_collections_for(user)}
    errors: dict[str, str] = {}
    collection = collections.get(post["collection"]) or (next(iter(collections.values())) if collections
                                                         and not post["collection"] else None)
    if collection is None:
        errors["collection"] = "Choose a collection you may add answers to."
    else:
        try:
            result = ai_answer_flag(message_id=message.pk, actor=user, category=post["category"],
                                    correct_answer=post["correct_answer"], collection=collection,
                                    note=post["note"], question=post["question"] or None)
        except FlagInvalid as exc:
            errors.update(exc.errors)
        except FlagError as exc:
            errors["flag"] = str(exc)
        except PermissionDenied as exc:
            errors["collection"] = str(exc)
    if errors:
        context = _conversation_context(request, conversation)
        for entry in context["transcript"]:
            if entry["message"].pk == message.pk:
                entry["flag_form"] = {"post": post, "errors": errors}
        return render(request, "office/conversation.html", context, status=400)
    live = ("It is live: the assistant answers this question with it from now on." if result.published
            else "It waits for someone who may publish in that collection.")
    flash.success(request, f"Flagged. Your answer is saved as a curated answer and as an evaluation case. {live}")
    return redirect(f"{reverse('office:conversation', args=[conversation.pk])}#m-{message.pk}")


def _act(request, conversation_id, fn, success: str) -> HttpResponse:
    if not can_work_conversations(request.user):
        raise PermissionDenied("Only agents can do this.")
    conversation = _get_conversation(request, conversation_id)
    try:
        fn(conversation)
        if success:
            flash.success(request, success)
    except (ConvoError, ReviewError, IntegrationError) as exc:
        flash.error(request, str(exc))
    return redirect("office:conversation", conversation_id=conversation.pk)


@login_required
@require_POST
def conversation_takeover(request, conversation_id):
    def do(conversation):
        services.conversation_takeover(conversation_id=conversation.pk, agent=request.user)
        item = ReviewItem.objects.filter(kind=ItemKind.ESCALATION, subject_type=services.SUBJECT_TYPE,
                                         subject_id=str(conversation.pk), status__in=["open", "claimed"]).first()
        if item and item.claimed_by_id != request.user.pk:
            review_item_claim(item_id=item.pk, actor=request.user)
    return _act(request, conversation_id, do, "You are now in the chat. The assistant is paused.")


@login_required
@require_POST
def conversation_reply(request, conversation_id):
    return _act(request, conversation_id,
                lambda c: services.agent_reply(conversation_id=c.pk, agent=request.user, text=request.POST.get("text", "")),
                "")


@login_required
@require_POST
def conversation_hand_back(request, conversation_id):
    needed = request.POST.get("needed_human", "")
    return _act(request, conversation_id,
                lambda c: services.conversation_hand_back(
                    conversation_id=c.pk, agent=request.user,
                    needed_human={"yes": True, "no": False}.get(needed)),
                "Handed back to the assistant.")


RESOLUTIONS = [
    ("resolved", "Resolved"),
    ("answered", "Answered the question"),
    ("action_done", "Action taken"),
    ("no_response", "Customer stopped replying"),
    ("duplicate", "Duplicate"),
    ("spam", "Spam or abuse"),
]


@login_required
@require_POST
def conversation_close(request, conversation_id):
    """Close with a resolution code; an escalation also records whether it needed a person."""
    if not can_work_conversations(request.user):
        raise PermissionDenied("Only agents can do this.")
    resolution = request.POST.get("resolution", "")
    if resolution not in {value for value, _ in RESOLUTIONS}:
        flash.error(request, "Choose a resolution.")
        return redirect("office:conversation", conversation_id=conversation_id)
    conversation = _get_conversation(request, conversation_id)
    escalation = _escalation_item(conversation)
    live_escalation = escalation if escalation and escalation.status in ("open", "claimed") else None
    needed = request.POST.get("needed_human", "")
    if live_escalation and needed not in ("yes", "no"):
        flash.error(request, "Say whether this escalation needed a person: it measures how well the assistant hands over.")
        return redirect("office:conversation", conversation_id=conversation.pk)
    version = request.POST.get("item_version")
    if live_escalation and version and version != str(live_escalation.version):
        flash.error(request, "This conversation changed since you opened it. Look at it again before closing.")
        return redirect("office:conversation", conversation_id=conversation.pk)
    return _act(request, conversation_id,
                lambda c: services.conversation_close(
                    conversation_id=c.pk, agent=request.user, resolution=resolution,
                    needed_human=None if not live_escalation else needed == "yes"),
                "Conversation closed.")


@login_required
@require_GET
def conversation_context(request: HttpRequest, conversation_id) -> HttpResponse:
    """The context pane's slow half, loaded after the page: the customer as the backends know
    them, and suggested next steps."""
    from convo.assist import customer_details, suggested_next_steps

    _office_user(request)
    conversation = _get_conversation(request, conversation_id)
    runs = selectors.action_runs_for_conversation(conversation=conversation)
    details = customer_details(conversation=conversation, runs=runs)
    steps = suggested_next_steps(user=request.user, conversation=conversation,
                                 escalation=_escalation_item(conversation), runs=runs, details=details)
    return render(request, "office/_context.html", {"conversation": conversation, "details": details,
                                                    "steps": steps})


@login_required
@require_POST
def action_propose(request, conversation_id):
    """An agent proposes an action for the customer; a colleague must approve it."""
    from convo.agent_actions import agent_action_propose

    def do(conversation):
        run = agent_action_propose(conversation_id=conversation.pk, agent=request.user,
                                   action_name=request.POST.get("action", ""),
                                   params_text=request.POST.get("params", ""), token=request.POST.get("token", ""))
        if run.status == RunStatus.AWAITING_APPROVAL:
            missing = run.approvals_missing
            flash.success(request, f"Proposed. {missing} approval{'s' if missing != 1 else ''} needed from "
                                   f"colleagues: you cannot approve your own proposal.")
        else:
            flash.success(request, "Proposed and approved by policy. The action is running.")

    return _act(request, conversation_id, do, "")


@login_required
@require_POST
def action_undo(request, conversation_id, run_id):
    """Undo a succeeded action by its compensation action (approved like any other)."""
    from convo.agent_actions import agent_action_undo

    def do(conversation):
        try:
            compensating = agent_action_undo(conversation_id=conversation.pk, agent=request.user, run_id=run_id,
                                             reason=request.POST.get("reason", ""))
        except ActionRun.DoesNotExist:
            raise Http404("No such action in this conversation.") from None
        if compensating.status == RunStatus.AWAITING_APPROVAL:
            flash.success(request, f"Undo proposed: “{compensating.action.title}” waits for a colleague's approval.")
        else:
            flash.success(request, f"Undo started: “{compensating.action.title}” is running.")

    return _act(request, conversation_id, do, "")


@login_required
@require_POST
def action_decide(request, run_id):
    """Approve (optionally with edited parameters) or reject a proposed action."""
    if not can_work_conversations(request.user):
        raise PermissionDenied("Only agents can decide actions.")
    try:
        run = selectors.action_run_get_for_user(user=request.user, run_id=run_id)
    except (ActionRun.DoesNotExist, Conversation.DoesNotExist, ValidationError):
        raise Http404("No such action.") from None
    decision = request.POST.get("decision")
    try:
        with transaction.atomic():
            if decision == "approve":
                params = None
                if request.POST.get("params"):
                    try:
                        params = json.loads(request.POST["params"])
                    except ValueError:
                        raise IntegrationError("The edited parameters are not valid JSON.") from None
                run = action_run_approve(run_id=run.pk, actor=request.user, params=params,
                                         expected_params_hash=request.POST.get("params_hash", ""))
                if run.status == RunStatus.AWAITING_APPROVAL:
                    outcome = None
                    note = (f"Approved ({run.approval_progress}). A second person must approve it before it runs."
                            if run.approvals_missing else "Approved.")
                else:
                    outcome, note = "approved", "Approved. The action is running."
            elif decision == "reject":
                action_run_reject(run_id=run.pk, actor=request.user, reason=request.POST.get("reason", ""))
                outcome, note = "rejected", "Rejected. The customer has been told."
            else:
                raise IntegrationError("Choose approve or reject.")
            if outcome:
                review_items_resolve_for_subject(subject_type="integrations.actionrun", subject_id=str(run.pk),
                                                 actor=request.user, outcome=outcome)
        flash.success(request, note)
    except (IntegrationError, ReviewError) as exc:
        flash.error(request, str(exc))
    return redirect("office:conversation", conversation_id=run.subject_id)


@login_required
@require_GET
def knowledge_search(request: HttpRequest) -> HttpResponse:
    """Staff search the knowledge base as the assistant does, and see why each passage ranks.

    Only the collections the user may read are searched (and offered as a filter); ``labels``
    narrows the search to documents carrying every given label."""
    from knowledge.api.serializers import LABELS_HELP, labels_parse
    from knowledge.exceptions import UploadRejected
    from knowledge.models import Audience, Document
    from knowledge.permissions import Action, collections_for, is_knowledge_admin
    from knowledge.selectors import SEARCH_MODES, chunk_search

    user = _office_user(request)
    query = request.GET.get("q", "").strip()[:500]
    scope = request.GET.get("scope", "all")
    mode = request.GET.get("mode", "hybrid")
    if mode not in SEARCH_MODES:
        mode = "hybrid"
    audiences = {"customer": (Audience.CUSTOMER,), "internal": (Audience.INTERNAL,)}.get(
        scope, (Audience.CUSTOMER, Audience.INTERNAL))
    readable = {str(c.pk): c for c in
                collections_for(user, Action.READ).only("id", "name", "audience").order_by("name")}
    errors: dict[str, str] = {}
    collection_id = request.GET.get("collection", "").strip()
    if collection_id and collection_id not in readable:
        # An id one may not read is answered like an unknown one.
        errors["collection"] = "That collection does not exist or you may not read it."
    labels_text = request.GET.get("labels", "").strip()[:500]
    try:
        labels = labels_parse(labels_text)
    except UploadRejected as exc:
        labels, errors["labels"] = {}, str(exc)
    hits = []
    if query and not errors and readable:
        from knowledge.embeddings import embed_query

        # Administrators read every collection: no scope, so the search keeps its unscoped plan.
        scope_ids = [collection_id] if collection_id else None if is_knowledge_admin(user) else list(readable)
        hits = chunk_search(query=query, k=10, audiences=audiences, mode=mode, query_vector=embed_query(query),
                            collection_ids=scope_ids, metadata=labels or None)
    collection_of = {}
    if hits:
        collection_of = {str(pk): readable.get(str(cid)) for pk, cid in Document.objects.filter(
            pk__in=[h.document_id for h in hits]).values_list("pk", "collection_id")}
    rows = []
    for rank, hit in enumerate(hits, start=1):
        collection = collection_of.get(hit.document_id)
        rows.append({"hit": hit, "rank": rank, "collection": collection,
                     "internal": collection is not None and collection.audience == Audience.INTERNAL})
    return render(request, "office/search.html", {
        "query": query, "scope": scope, "mode": mode, "modes": SEARCH_MODES, "hits": rows,
        "collections": list(readable.values()), "collection_id": collection_id, "labels": labels_text,
        "labels_help": LABELS_HELP, "errors": errors,
    })
