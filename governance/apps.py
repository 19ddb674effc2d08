from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    """Model/prompt versions, the append-only audit chain and roles."""

    name = "governance"
    default_auto_field = "django.db.models.BigAutoField"
