"""Liveness probe of Celery beat, for docker compose and Kubernetes.

Beat has no remote control to ping; it is alive while it keeps sending the
guardians' ticks (every few seconds). Exits 0 when it sent one within
``--max-age`` seconds (noted in Redis by agentvine/health.py), 1 otherwise.
"""

from django.core.management.base import BaseCommand, CommandError
from redis.exceptions import RedisError

ERR_NO_REDIS = "Redis did not answer ({error})"
ERR_NEVER_SENT = "beat has sent nothing (not started, or not for a day)"
ERR_SILENT = "beat sent nothing for {age:.0f}s (more than {max_age:g}s)"


class Command(BaseCommand):
    help = "Exit 0 when Celery beat sent a task recently (a liveness probe)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--max-age", type=float, default=60.0, help="seconds without a send after which beat counts as dead"
        )

    def handle(self, *args, max_age=60.0, **options):
        from agentvine.health import beat_last_sent_age

        try:
            age = beat_last_sent_age()
        except RedisError as exc:
            raise CommandError(ERR_NO_REDIS.format(error=type(exc).__name__)) from exc
        if age is None:
            raise CommandError(ERR_NEVER_SENT)
        if age > max_age:
            raise CommandError(ERR_SILENT.format(age=age, max_age=max_age))
        self.stdout.write(f"beat: last send {age:.1f}s ago")
