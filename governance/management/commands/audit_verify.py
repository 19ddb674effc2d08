"""Verify the whole audit chain against its signed checkpoints and report the first broken link."""

import json

from django.core.management.base import BaseCommand, CommandError

from governance.audit import chain_verify


class Command(BaseCommand):
    help = ("Check every audit event's hash and link, and every signed checkpoint (stored, and exported "
            "ones given with --checkpoints); exit 1 at the first problem.")

    def add_arguments(self, parser):
        parser.add_argument("--checkpoints", metavar="FILE",
                            help="JSON lines printed by audit_checkpoint and kept outside the database")

    def handle(self, *args, **options):
        external = []
        if options["checkpoints"]:
            with open(options["checkpoints"], encoding="utf-8") as lines:
                try:
                    external = [json.loads(line) for line in lines if line.strip()]
                except json.JSONDecodeError as exc:
                    raise CommandError(f"{options['checkpoints']}: not JSON lines ({exc})") from exc
        report = chain_verify(external=external)
        if not report.ok:
            raise CommandError(f"audit chain broken at seq {report.first_broken_seq}: {report.reason} "
                               f"({report.checked} events verified before it)")
        self.stdout.write(self.style.SUCCESS(
            f"audit chain intact: {report.checked} events, {report.checkpoints} signed checkpoints"))
