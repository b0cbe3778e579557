import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

# Earlier versions kept the password here in plain text.
OLD_PASSWORD_FILE = "operator-password.txt"


class Command(BaseCommand):
    help = "Create the first operator login (a superuser) if none exists, and print its password once."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="operator")

    def handle(self, *args, username, **options):
        user_model = get_user_model()
        old_file = Path(settings.VAR_DIR) / OLD_PASSWORD_FILE
        if old_file.exists():
            self.stderr.write(f"{old_file} holds a password in plain text; delete it (AgentVine no longer reads it)")
        if user_model.objects.filter(username=username).exists():
            self.stdout.write(
                f"operator login: {username} (its password was printed when it was created; "
                f"set a new one with: python manage.py changepassword {username})"
            )
            return
        password = secrets.token_urlsafe(12)
        user_model.objects.create_superuser(username=username, email="", password=password)
        # Printed once and stored nowhere but as Django's password hash.
        self.stdout.write(f"operator login: {username} / {password} (shown only now: keep it somewhere safe)")
