from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    """Connectors, the action catalogue and idempotent action runs."""

    name = "integrations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from config.periodic import relay_job_register

        def reconcile_stuck_runs():
            from integrations.services import action_runs_reconcile_stuck

            return action_runs_reconcile_stuck()

        def webhook_deliveries_sweep():
            from integrations.webhooks import webhook_deliveries_sweep

            return webhook_deliveries_sweep()

        def expire_action_runs():
            from integrations.services import action_runs_expire

            return action_runs_expire()

        # No beat in the embedded default: `manage.py outbox_relay --every N` runs them (beat does with Celery).
        relay_job_register("reconcile-stuck-action-runs", reconcile_stuck_runs, every_s=60)
        relay_job_register("webhook-deliveries-sweep", webhook_deliveries_sweep, every_s=30)
        relay_job_register("expire-action-runs", expire_action_runs, every_s=300)
