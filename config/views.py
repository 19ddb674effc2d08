"""Plumbing views: the landing redirect and the health check."""

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Staff to where their role works (model owners to governance), everyone else to the chat."""
    from governance.permissions import can_read_conversations, can_read_governance

    user = request.user
    if user.is_authenticated and can_read_conversations(user):
        return redirect("office:inbox")
    if user.is_authenticated and can_read_governance(user):
        return redirect("governance:versions_overview")
    return redirect("convo:chat")


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"ok": True})
