"""Print a new personal API token for an operator (for `agentvine login`)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from workers_app.services import api_token_create

ERR_NO_SUCH_OPERATOR = "no active staff user named {username}"


class Command(BaseCommand):
    help = "Create a personal API token for an operator and print it (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="what the token is for")

    def handle(self, *args, username, name, **options):
        user = get_user_model().objects.filter(username=username, is_active=True, is_staff=True).first()
        if user is None:
            raise CommandError(ERR_NO_SUCH_OPERATOR.format(username=username))
        _, key = api_token_create(user=user, name=name)
        self.stdout.write(key)
