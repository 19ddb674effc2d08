"""Send again what the transactional outbox holds undispatched or unfinished (config/outbox.py).

With Celery, beat runs ``config.outbox_relay`` every 10 s; the embedded default (``make run``)
has no beat and runs this command in a loop beside the server instead."""

import time

from django.core.management.base import BaseCommand

from config.outbox import outbox_relay


class Command(BaseCommand):
    help = "Re-send outbox messages that were never dispatched or never finished, once or every N seconds."

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=0,
                            help="Repeat every this many seconds (0: run once and exit)")

    def handle(self, *args, every: float = 0, **options):
        while True:
            sent = outbox_relay()
            if sent or not every:
                self.stdout.write(f"sent {sent} outbox message(s) again")
            if not every:
                return
            time.sleep(every)
