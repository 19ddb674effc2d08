"""Load the demo company (idempotent) and print the demo logins."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from convo.demo.loader import DEMO_USERS, load_demo


class Command(BaseCommand):
    help = "Load Brightwater Outfitters' demo knowledge, actions, intents and one login per role."

    def add_arguments(self, parser):
        parser.add_argument("--quiet", action="store_true")
        parser.add_argument("--print-logins", action="store_true", help="Only print the demo logins")

    def handle(self, *args, **options):
        if settings.SETTINGS_MODULE.endswith("production"):
            raise CommandError("load_demo creates users with known passwords; it refuses to run in production.")
        if options["print_logins"]:
            self._print_logins(DEMO_USERS)
            return
        result = load_demo(stdout=None if options["quiet"] else self.stdout)
        if options["quiet"]:
            return
        self.stdout.write(self.style.SUCCESS(f"demo loaded ({result['documents_changed']} documents changed)"))
        self._print_logins(result["users"])

    def _print_logins(self, users):
        self.stdout.write("  Demo logins (user / password):")
        for user in users:
            self.stdout.write(f"    {user.role:<20} {user.username} / {user.password}")
