from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    """Connectors, the action catalogue and idempotent action runs."""

    name = "integrations"
    default_auto_field = "django.db.models.BigAutoField"
