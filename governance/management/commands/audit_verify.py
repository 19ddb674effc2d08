"""Verify the whole audit chain and report the first broken link."""

from django.core.management.base import BaseCommand, CommandError

from governance.selectors import audit_chain_verify


class Command(BaseCommand):
    help = "Check every audit event's hash and link; exit 1 at the first broken one."

    def handle(self, *args, **options):
        report = audit_chain_verify()
        if not report.ok:
            raise CommandError(f"audit chain broken at seq {report.first_broken_seq}: {report.reason} "
                               f"({report.checked} events verified before it)")
        self.stdout.write(self.style.SUCCESS(f"audit chain intact: {report.checked} events"))
