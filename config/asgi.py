"""ASGI entry point: HTTP through Django, WebSockets through Channels (origin-checked)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
django_asgi_app = get_asgi_application()

# Imported after Django is set up: routing pulls in consumers and models.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from config.routing import websocket_urlpatterns  # noqa: E402
from convo.dispatch import remember_server_loop  # noqa: E402
from knowledge.embeddings import warm_up_in_background  # noqa: E402

warm_up_in_background()

router = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)


async def application(scope, receive, send):
    # In the embedded default, turns run on this server's loop in a worker thread.
    remember_server_loop()
    return await router(scope, receive, send)
