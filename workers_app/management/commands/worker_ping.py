"""Liveness probe of a Celery worker node, for docker compose and Kubernetes.

Exits 0 when the node answers a ping over the broker (what ``celery inspect
ping`` does), 1 otherwise. ``--heartbeats`` also asks PostgreSQL whether every
slot of the node heartbeats: the node's main process answers pings even while
a pool process hangs.
"""

import socket
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

ERR_NO_PONG = "{node} did not answer a ping within {timeout:g}s"
ERR_NO_BROKER = "the broker did not answer ({error})"
ERR_STALE_SLOTS = "{node}: no heartbeat for {stale} of its slots in {seconds:g}s: {names}"


class Command(BaseCommand):
    help = "Exit 0 when the Celery worker node answers a ping (a liveness probe)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--node", default=None, help="node name as given to -n (default: celery@<this host's name>)"
        )
        parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")
        parser.add_argument(
            "--heartbeats", action="store_true", help="also require a recent heartbeat from each of the node's slots"
        )

    def handle(self, *args, node=None, timeout=5.0, heartbeats=False, **options):
        from agentvine.celery import app

        node = node or f"celery@{socket.gethostname()}"
        try:
            with app.connection_for_write() as connection:
                # One try within the timeout: a probe must answer, not retry for a minute.
                connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
                replies = app.control.ping(destination=[node], timeout=timeout, connection=connection)
        except (OSError, KombuOperationalError) as exc:
            raise CommandError(ERR_NO_BROKER.format(error=type(exc).__name__)) from exc
        if not any(node in reply for reply in replies):
            raise CommandError(ERR_NO_PONG.format(node=node, timeout=timeout))
        if heartbeats:
            self._check_heartbeats(node)
        self.stdout.write(f"{node}: pong")

    def _check_heartbeats(self, node):
        from workers_app.models import Worker, WorkerStatus

        seconds = settings.AGENTVINE_STALLED_WORKER_SECONDS
        since = timezone.now() - timedelta(seconds=seconds)
        stale = list(
            Worker.objects.filter(name__startswith=f"{node}:")
            .exclude(status=WorkerStatus.OFFLINE)
            .exclude(last_heartbeat_at__gte=since)
            .values_list("name", flat=True)
        )
        if stale:
            raise CommandError(
                ERR_STALE_SLOTS.format(node=node, stale=len(stale), seconds=seconds, names=", ".join(sorted(stale)))
            )
