from django.apps import AppConfig
from django.db.models.signals import post_migrate


class GovernanceConfig(AppConfig):
    """Model/prompt versions, the append-only audit chain and roles."""

    name = "governance"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from governance.audit import checkpoint_key_check
        from governance.roles import ensure_role_groups

        checks.register(checkpoint_key_check, checks.Tags.security)

        from config.periodic import relay_job_register

        def audit_checkpoint():
            from governance.audit import audit_checkpoint_create

            return audit_checkpoint_create()

        # No beat in the embedded default: `manage.py outbox_relay --every N` signs the chain head.
        relay_job_register("audit-checkpoint", audit_checkpoint, every_s=600)

        from django.conf import settings

        from governance.retention import audit_payloads_register, retention_run_due

        # Retention policies, daily (beat: CELERY_BEAT_SCHEDULE). The audit payloads kind is
        # governance's own; the other kinds register from their apps.
        audit_payloads_register()
        relay_job_register("retention-run-due", retention_run_due,
                           every_s=getattr(settings, "RETENTION_RUN_EVERY_S", 86_400))

        # The data migration creates the role groups; this puts them back after a database
        # flush (which deletes every row but does not re-run migrations).
        # Connected for every app: permissions of apps migrated after governance exist only later.
        post_migrate.connect(ensure_role_groups, dispatch_uid="governance.ensure_role_groups")
