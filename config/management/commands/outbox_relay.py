"""Send again what the transactional outbox holds undispatched or unfinished (config/outbox.py).

With Celery, beat runs ``config.outbox_relay`` every 10 s; the embedded default (``make run``)
has no beat and runs this command in a loop beside the server instead. The loop also runs the
periodic jobs apps registered with ``config.periodic.relay_job_register`` (e.g. the sweep of
stuck action runs), each at most every its own interval; once (no ``--every``) runs them all."""

import logging
import time

from django.core.management.base import BaseCommand

from config.outbox import outbox_relay
from config.periodic import relay_jobs

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Re-send outbox messages that were never dispatched or never finished, once or every N seconds."

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=0,
                            help="Repeat every this many seconds (0: run once and exit)")

    def handle(self, *args, every: float = 0, **options):
        last_run: dict[str, float] = {}
        while True:
            sent = outbox_relay()
            if sent or not every:
                self.stdout.write(f"sent {sent} outbox message(s) again")
            now = time.monotonic()
            for name, (job, job_every) in relay_jobs().items():
                if every and now - last_run.get(name, float("-inf")) < job_every:
                    continue
                last_run[name] = now
                try:
                    result = job()
                except Exception:  # noqa: BLE001 - a failing job must not stop the relay
                    logger.exception("periodic job %s failed", name)
                    continue
                if result or not every:
                    self.stdout.write(f"{name}: {result}")
            if not every:
                return
            time.sleep(every)
