"""Canned responses for the agent workspace: a JSON list, rendered for one conversation, that
the composer inserts from."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from convo import selectors, services
from convo.models import Conversation
from governance.permissions import can_work_conversations


@login_required
@require_GET
def canned_response_list(request: HttpRequest) -> JsonResponse:
    """GET ?conversation=<uuid> → {"responses": [{"id", "title", "shortcut", "text"}]}, with
    the placeholders filled in for that conversation and the requesting agent."""
    if not can_work_conversations(request.user):
        raise PermissionDenied("Only people who work conversations use canned responses.")
    conversation_id = request.GET.get("conversation", "")
    if not conversation_id:
        return JsonResponse({"error": "Pass the conversation id as ?conversation=<uuid>."}, status=400)
    try:
        # Never by raw id: an unknown id and one outside the user's teams look the same.
        conversation = selectors.conversation_get_for_user(user=request.user, conversation_id=conversation_id)
    except (Conversation.DoesNotExist, ValidationError):
        raise Http404("No such conversation, or it is not in your teams.") from None
    responses = selectors.canned_responses_for_user(user=request.user).only("id", "title", "shortcut", "text")
    return JsonResponse({"responses": [
        {"id": str(response.pk), "title": response.title, "shortcut": response.shortcut,
         "text": services.canned_response_render(response=response, conversation=conversation, agent=request.user)}
        for response in responses
    ]})
