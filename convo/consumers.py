"""WebSocket consumers. They authenticate, join groups and call services; nothing slow runs here."""

from __future__ import annotations

import logging
import uuid
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer

from convo import selectors, services
from convo.broadcast import EVENT_VERSION, OFFICE_GROUP, chat_group, office_team_group
from convo.dispatch import remember_server_loop
from convo.exceptions import ConvoError
from governance.permissions import can_read_conversations, can_work_conversations

logger = logging.getLogger(__name__)
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


class _EventsMixin:
    async def tandem_event(self, message):
        await self.send_json(message["event"])

    async def send_event(self, event: dict) -> None:
        await self.send_json({"v": EVENT_VERSION, **event})

    async def send_error(self, code: str, text: str, **extra) -> None:
        await self.send_event({"type": "error", "code": code, "message": text, **extra})


class ChatConsumer(_EventsMixin, AsyncJsonWebsocketConsumer):
    """One conversation's live channel, for the customer (token) or a staff member (session)."""

    async def connect(self):
        remember_server_loop()
        self.conversation_id = str(self.scope["url_route"]["kwargs"]["conversation_id"])
        self.is_customer = False
        self.user = self.scope.get("user")
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("token") or [""])[0]
        if token:
            if services.conversation_id_from_token(token) != self.conversation_id:
                await self.close(code=CLOSE_FORBIDDEN)
                return
            self.is_customer = True
        elif not (self.user and await database_sync_to_async(can_read_conversations)(self.user)):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        if self.is_customer:
            found = await database_sync_to_async(selectors.conversation_exists)(conversation_id=self.conversation_id)
        else:
            # Staff see only the conversations their role and teams allow.
            found = await database_sync_to_async(selectors.conversation_visible_to)(
                user=self.user, conversation_id=self.conversation_id)
        if not found:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.group = chat_group(self.conversation_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict):
            await self.send_error("bad_request", "Send a JSON object with a type.")
            return
        kind = content.get("type")
        try:
            if kind == "message.send":
                await self._message_send(content)
            elif kind == "typing":
                await self.channel_layer.group_send(self.group, {"type": "tandem.event", "event": {
                    "v": EVENT_VERSION, "type": "typing", "role": "customer" if self.is_customer else "agent",
                    "sender": self.channel_name}})
            elif kind == "csat.submit":
                await self._csat_submit(content)
            elif kind == "sync":
                messages = await database_sync_to_async(selectors.messages_after)(
                    conversation_id=self.conversation_id, after_seq=int(content.get("after_seq") or 0))
                await self.send_event({"type": "sync", "messages": messages})
            else:
                await self.send_error("unknown_type", f"Unknown message type {kind!r}.")
        except ConvoError as exc:
            await self.send_error(exc.code, str(exc), client_id=content.get("client_id"))
        except (TypeError, ValueError):
            await self.send_error("bad_request", "That request is malformed.")

    async def _message_send(self, content: dict) -> None:
        client_id = str(content.get("client_id") or uuid.uuid4())
        if self.is_customer:
            message, created = await database_sync_to_async(services.message_receive)(
                conversation_id=self.conversation_id, text=content.get("text"), client_id=client_id)
        else:
            message = await database_sync_to_async(services.agent_reply)(
                conversation_id=self.conversation_id, agent=self.user, text=content.get("text"))
            created = True
        await self.send_event({"type": "message.ack", "client_id": client_id, "duplicate": not created,
                               "message": await database_sync_to_async(services.message_payload)(message)})

    async def _csat_submit(self, content: dict) -> None:
        """The customer's survey answer; accepted on a closed conversation (the survey is
        posted on close), refused to staff, who must not answer for the customer."""
        if not self.is_customer:
            await self.send_error("forbidden", "Only the customer can answer the satisfaction survey.")
            return
        conversation = await database_sync_to_async(services.csat_submit)(
            conversation_id=self.conversation_id, score=content.get("score"), comment=content.get("comment"))
        await self.send_event({"type": "csat.ack", "score": conversation.csat_score})

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if bytes_data is not None or text_data is None:
            await self.send_error("not_text", "Only text messages are supported.")
            return
        if len(text_data) > 64_000:
            await self.send_error("too_long", "That message is far too long.")
            return
        try:
            content = await self.decode_json(text_data)
        except ValueError:
            await self.send_error("bad_json", "Messages must be JSON.")
            return
        await self.receive_json(content)


class OfficeConsumer(_EventsMixin, AsyncJsonWebsocketConsumer):
    """Live updates for agent workspaces: new review items, status changes, new messages."""

    async def connect(self):
        remember_server_loop()
        user = self.scope.get("user")
        if not (user and await database_sync_to_async(can_read_conversations)(user)):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.can_work = await database_sync_to_async(can_work_conversations)(user)
        self.groups_joined = await database_sync_to_async(_office_groups)(user)
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        await self.send_error("read_only", "This channel only sends updates.")


def _office_groups(user) -> list[str]:
    """Compliance officers and administrators hear of every queue; others of their teams'."""
    from review.permissions import sees_every_queue, team_ids_for

    if sees_every_queue(user):
        return [OFFICE_GROUP]
    return [office_team_group(team_id) for team_id in team_ids_for(user)]


class EchoConsumer(AsyncWebsocketConsumer):
    """The benchmark floor: the same server and stack, no Tandem work."""

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        await self.send(text_data=text_data, bytes_data=bytes_data)


__all__ = ["ChatConsumer", "OfficeConsumer", "EchoConsumer"]
