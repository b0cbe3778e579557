"""Writes for workers (execution slots) and agent sessions."""

from django.db import transaction
from django.utils import timezone

from agentvine import events
from workers_app.models import Worker, WorkerStatus


def _publish(worker):
    payload = {
        "id": str(worker.id),
        "name": worker.name,
        "status": worker.status,
        "hostname": worker.hostname,
        "current_work_order_id": str(worker.current_work_order_id) if worker.current_work_order_id else None,
    }
    events.publish("worker.updated", payload, groups=[events.worker_group(worker.id)])


def worker_register(*, name, hostname="", pid=None):
    """Register (or re-register after a restart) the slot called ``name``."""
    now = timezone.now()
    with transaction.atomic():
        worker, _ = Worker.objects.update_or_create(
            name=name,
            defaults={
                "hostname": hostname,
                "pid": pid,
                "status": WorkerStatus.IDLE,
                "last_heartbeat_at": now,
                "current_work_order": None,
            },
        )
        _publish(worker)
    return worker


def worker_heartbeat(*, worker):
    """Returns False when the row is gone (deregistered): the caller re-registers."""
    return Worker.objects.filter(pk=worker.pk).update(last_heartbeat_at=timezone.now()) == 1


def worker_mark_offline(*, worker, reason=""):
    with transaction.atomic():
        Worker.objects.filter(pk=worker.pk).update(
            status=WorkerStatus.OFFLINE, current_work_order=None, updated_at=timezone.now()
        )
        worker.refresh_from_db()
        _publish(worker)
    return worker
