"""Sign the audit chain head and print it as one JSON line to ship outside the database."""

from django.core.management.base import BaseCommand, CommandError

from governance.audit import AuditChainBroken, audit_checkpoint_create, checkpoint_json


class Command(BaseCommand):
    help = ("Store a signed checkpoint of the audit chain head (verifying the events since the previous "
            "one) and print it as a JSON line; `audit_verify --checkpoints FILE` checks such lines later.")

    def handle(self, *args, **options):
        try:
            checkpoint = audit_checkpoint_create()
        except AuditChainBroken as exc:
            raise CommandError(f"not signed: {exc}") from exc
        if checkpoint is None:
            self.stderr.write("the audit chain is empty: nothing to sign")
            return
        self.stdout.write(checkpoint_json(checkpoint))
