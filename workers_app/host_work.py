"""Per-host work: what must happen on the worker host where a task's files
are (its workspace), not wherever a guardian or a web request runs.

Each Celery worker node also consumes a queue of its own, ``host.<node
name>`` (added in ``workers_app.slots`` when the worker sets up; nothing to
add to ``-Q``). A job for a host is a :class:`HostCleanup` row, written in the
transaction that asks for it, and a doorbell on that host's queue after
commit. The row is the truth, as everywhere here: a host that is down or cut
off when it is asked (its doorbell may be lost with a Redis restart, or wait
in the broker) drains all its pending rows when its worker is ready again.
"""

import logging
from datetime import timedelta
from types import SimpleNamespace

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, Value
from django.db.models.functions import Concat
from django.utils import timezone

from agentvine import events
from agentvine.celery import app
from workers_app.models import HostCleanup, Worker, WorkerStatus
from workers_app.workspaces import workspace_remove

logger = logging.getLogger(__name__)

HOST_QUEUE_PREFIX = "host."
DRAIN_TASK = "workers_app.host_cleanups_drain"
EVENT_CLEANUPS_EXPIRED = "host.cleanups_expired"


def host_queue(host):
    return f"{HOST_QUEUE_PREFIX}{host}"


def host_of(worker):
    """The Celery node a slot ``worker`` lives on (its name is ``<node>:<index>``),
    or None for a worker that is no Celery slot (a remote pull worker)."""
    if worker is None or ":" not in worker.name or "@" not in worker.name:
        return None
    return worker.name.rsplit(":", 1)[0]


def host_cleanup_request(*, host, task):
    """Ask ``host`` to remove ``task``'s workspace (in the caller's transaction)."""
    HostCleanup.objects.create(host=host, task_id=task.pk, repository_url=task.repository_url or "")
    transaction.on_commit(lambda: host_cleanups_ring(host=host))


def host_cleanups_ring(*, host):
    """The doorbell: the host's own queue, so one of its slots drains its rows."""
    try:
        app.send_task(DRAIN_TASK, kwargs={"host": host}, queue=host_queue(host))
    except Exception:
        # The row stays pending: the host drains it when its worker starts.
        logger.warning("could not ring host %s for its cleanups", host, exc_info=True)


def host_cleanups_drain(*, host):
    """Do ``host``'s pending cleanups here (this process runs on ``host``). Returns how many."""
    done = 0
    for cleanup in HostCleanup.objects.filter(host=host, done_at__isnull=True).order_by("id")[:500]:
        workspace_remove(task=SimpleNamespace(id=cleanup.task_id, repository_url=cleanup.repository_url))
        HostCleanup.objects.filter(pk=cleanup.pk, done_at__isnull=True).update(done_at=timezone.now())
        done += 1
    return done


def host_cleanups_expire(*, now=None, batch=500):
    """Give up on the cleanups of hosts that never came back: pending rows
    older than AGENTVINE_HOST_CLEANUP_EXPIRE_SECONDS of a node with no slot
    alive now (a host that is up drains its own rows). They are deleted, and
    the event log keeps which workspaces were left behind on which host, for
    an operator who rebuilds that machine. Returns how many expired."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.AGENTVINE_HOST_CLEANUP_EXPIRE_SECONDS)
    live_slot = Worker.objects.filter(name__startswith=OuterRef("host_prefix")).exclude(status=WorkerStatus.OFFLINE)
    with transaction.atomic():
        rows = list(
            HostCleanup.objects.select_for_update(skip_locked=True)
            .filter(Q(done_at__isnull=True), created_at__lt=cutoff)
            .alias(host_prefix=_node_prefix())
            .exclude(Exists(live_slot))
            .order_by("id")[:batch]
        )
        if not rows:
            return 0
        HostCleanup.objects.filter(pk__in=[row.pk for row in rows]).delete()
        by_host = {}
        for row in rows:
            by_host.setdefault(row.host, []).append(str(row.task_id))
        events.publish_many(
            [
                (
                    EVENT_CLEANUPS_EXPIRED,
                    {"host": host, "task_ids": task_ids, "count": len(task_ids)},
                    [],
                )
                for host, task_ids in by_host.items()
            ]
        )
    for host, task_ids in by_host.items():
        logger.warning("host %s never came back: %d workspace cleanups expired", host, len(task_ids))
    return len(rows)


def _node_prefix():
    # A slot of node ``n`` is called ``n:<index>``.
    return Concat(F("host"), Value(":"))
