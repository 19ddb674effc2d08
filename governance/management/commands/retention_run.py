"""Run the retention policies now (what beat does daily), or preview them with --dry-run."""

from django.core.management.base import BaseCommand, CommandError

from governance.models import RetentionPolicy, RetentionRunStatus
from governance.retention import retention_run
from governance.retention_registry import data_kind, data_kinds


class Command(BaseCommand):
    help = ("Run every enabled retention policy (or only --kind's) and print what each matched, purged and "
            "held back; --dry-run counts without changing anything.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="count only: nothing is deleted or anonymised")
        parser.add_argument("--kind", metavar="K", help="only this kind of data (e.g. messages, turns, "
                                                        "uploaded_files, audit_payloads)")

    def handle(self, *args, **options):
        kind, dry_run = options["kind"], options["dry_run"]
        if kind:
            if data_kind(kind) is None:
                raise CommandError(f"unknown kind {kind!r} (known: {', '.join(data_kinds())})")
            policy = RetentionPolicy.objects.filter(data_kind=kind).first()
            if policy is None:
                raise CommandError(f"no retention policy for {kind}: set one on the retention page first")
            if not policy.enabled and not dry_run:
                raise CommandError(f"the {kind} policy is disabled: enable it first, or preview it with --dry-run")
            policies = [policy]
        else:
            policies = [p for p in RetentionPolicy.objects.filter(enabled=True).order_by("data_kind")
                        if data_kind(p.data_kind) is not None]
        if not policies:
            self.stdout.write("no enabled retention policy")
            return
        failed = []
        for policy in policies:
            try:
                run = retention_run(policy=policy, dry_run=dry_run)
            except Exception as exc:  # noqa: BLE001 (recorded as a failed run; reported, then the others run)
                failed.append(policy.data_kind)
                self.stderr.write(f"{policy.data_kind}: failed ({type(exc).__name__}: {exc})")
                continue
            verb = "would purge" if dry_run else "purged"
            line = (f"{policy.data_kind}: {policy.get_action_display().lower()} after {policy.after_days} days"
                    f"{' (preview)' if dry_run else ''}: matched {run.matched}, held back {run.held_back}, ")
            line += f"{verb} {run.matched - run.held_back if dry_run else run.purged}"
            if run.remaining:
                line += f", {run.remaining} left for the next run"
            if run.audit_seq:
                line += f" (audit #{run.audit_seq})"
            self.stdout.write(line if run.status == RetentionRunStatus.DONE else f"{line} [{run.status}]")
        if failed:
            raise CommandError(f"retention failed for {', '.join(failed)}")
