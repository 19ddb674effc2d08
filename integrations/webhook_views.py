"""The inbound webhook endpoint: asynchronous results posted by a connector's backend.

A plain Django view: no session, no CSRF (the HMAC signature is the authentication); all checks
and effects are in ``integrations.webhooks.webhook_inbound_handle``."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from integrations.webhooks import webhook_inbound_handle


@csrf_exempt
@require_POST
def inbound_webhook(request: HttpRequest, connector_name: str) -> JsonResponse:
    result = webhook_inbound_handle(connector_name=connector_name, headers=request.headers, body=request.body)
    return JsonResponse(result.body, status=result.status)
