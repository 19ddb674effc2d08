"""WebSocket routes of every app."""

from django.conf import settings
from django.urls import path

from convo import consumers

websocket_urlpatterns = [
    path("ws/chat/<uuid:conversation_id>/", consumers.ChatConsumer.as_asgi()),
    path("ws/office/", consumers.OfficeConsumer.as_asgi()),
]
if settings.TANDEM_BENCH_ECHO:
    # The floor for bench/turn_latency.py: same server, no Tandem work.
    websocket_urlpatterns.append(path("ws/echo/", consumers.EchoConsumer.as_asgi()))
