"""Run the review queue's periodic work: release lapsed claims and escalate SLA breaches.

With Celery, beat runs these as tasks; the embedded default (``make run``) has no beat and
runs this command in a loop beside the server instead."""

import time

from django.core.management.base import BaseCommand

from review.services import review_claims_release_expired, review_sla_breaches_escalate


class Command(BaseCommand):
    help = "Release expired review claims and escalate SLA breaches, once or every N seconds."

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=0,
                            help="Repeat every this many seconds (0: run once and exit)")

    def handle(self, *args, every: float = 0, **options):
        while True:
            released = review_claims_release_expired()
            breached = review_sla_breaches_escalate()
            if released or breached or not every:
                self.stdout.write(f"released {released} expired claim(s), escalated {breached} SLA breach(es)")
            if not every:
                return
            time.sleep(every)
