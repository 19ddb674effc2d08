from django.apps import AppConfig


class ConvoConfig(AppConfig):
    """Channels (web chat, REST) and the orchestration of customer turns."""

    name = "convo"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from convo import handlers, retention

        handlers.register()
        retention.register()
