from django.apps import AppConfig
from django.db.models.signals import post_migrate


class GovernanceConfig(AppConfig):
    """Model/prompt versions, the append-only audit chain and roles."""

    name = "governance"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from governance.roles import ensure_role_groups

        # The data migration creates the role groups; this puts them back after a database
        # flush (which deletes every row but does not re-run migrations).
        # Connected for every app: permissions of apps migrated after governance exist only later.
        post_migrate.connect(ensure_role_groups, dispatch_uid="governance.ensure_role_groups")
