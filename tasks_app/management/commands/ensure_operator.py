import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the first operator login (a superuser) if none exists, and print it."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="operator")

    def handle(self, *args, username, **options):
        user_model = get_user_model()
        password_file = Path(settings.VAR_DIR) / "operator-password.txt"
        if user_model.objects.filter(username=username).exists():
            hint = f" (password in {password_file})" if password_file.exists() else ""
            self.stdout.write(f"operator login: {username}{hint}")
            return
        password = secrets.token_urlsafe(12)
        user_model.objects.create_superuser(username=username, email="", password=password)
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        self.stdout.write(f"operator login: {username} / {password} (saved in {password_file})")
