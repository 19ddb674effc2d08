"""The customer REST API: start a conversation, send messages, read them back.

The customer side authenticates with the conversation token returned at creation
(``Authorization: Bearer <token>`` or ``X-Conversation-Token``)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from rest_framework import status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from convo import selectors, services
from convo.api.serializers import MessageCreateSerializer
from convo.exceptions import ConversationClosed, ConvoError, RateLimited
from convo.models import Channel, Conversation


class ConversationStartThrottle(AnonRateThrottle):
    scope = "chat"


def _token(request) -> str:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:].strip()
    return request.headers.get("X-Conversation-Token", "")


def _conversation_for_token(request, conversation_id) -> Conversation:
    # The token is checked first, so the API does not tell strangers which ids exist.
    if services.conversation_id_from_token(_token(request)) != str(conversation_id):
        raise PermissionDenied("Missing or invalid conversation token.")
    try:
        return Conversation.objects.get(pk=conversation_id)
    except (Conversation.DoesNotExist, ValidationError):
        raise NotFound("No conversation with that id.") from None


class ConversationCreateView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [ConversationStartThrottle]

    def post(self, request):
        conversation = services.conversation_start(channel=Channel.API)
        token = services.conversation_token(conversation)
        return Response(
            {"id": str(conversation.pk), "token": token, "status": conversation.status,
             "ws_url": f"/ws/chat/{conversation.pk}/?token={token}",
             "messages": selectors.messages_after(conversation_id=conversation.pk)},
            status=status.HTTP_201_CREATED,
        )


class MessageListCreateView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    def get(self, request, conversation_id):
        conversation = _conversation_for_token(request, conversation_id)
        try:
            after = int(request.query_params.get("after", 0))
        except ValueError:
            return Response({"detail": "after must be a message sequence number."}, status=400)
        return Response({"status": conversation.status,
                         "messages": selectors.messages_after(conversation_id=conversation.pk, after_seq=after)})

    def post(self, request, conversation_id):
        conversation = _conversation_for_token(request, conversation_id)
        serializer = MessageCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            message, created = services.message_receive(conversation_id=conversation.pk,
                                                        text=serializer.validated_data["text"],
                                                        client_id=serializer.validated_data.get("client_id", ""))
        except ConversationClosed as exc:
            return Response({"code": exc.code, "detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except RateLimited as exc:
            return Response({"code": exc.code, "detail": str(exc)}, status=status.HTTP_429_TOO_MANY_REQUESTS)
        except ConvoError as exc:
            return Response({"code": exc.code, "detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response({"message": services.message_payload(message), "duplicate": not created},
                        status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK)
