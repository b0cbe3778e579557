"""Guardians: periodic services that keep the fleet honest.

Scheduled by django-celery-beat (workers_app/migrations creates the rows, the
admin edits them) through the thin tasks in workers_app/tasks.py. Each one is
idempotent, handles a bounded batch per run (the next run takes the rest),
and is safe when two beats run at once: rows are taken with
``select_for_update(skip_locked=True)``, so a second guardian skips what the
first one is handling instead of doing it twice or waiting for it.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from kombu.exceptions import ChannelError

from agentvine import events
from agentvine.celery import app
from queue_app import dispatch, lifecycle
from queue_app.models import ACTIVE_STATUSES, QUEUE_FOR_PRIORITY, WorkOrder, WorkOrderStatus
from queue_app.preemption import preemption_request
from workers_app.models import AgentSession, SessionStatus, Worker, WorkerStatus
from workers_app.services import agent_session_terminate, worker_mark_offline

logger = logging.getLogger(__name__)

ERR_WORKER_STALLED = "worker {name} stopped heartbeating while running this work order"
REASON_WORKER_STALLED = "no heartbeat for {seconds:.0f}s"
REASON_SESSION_IDLE = "idle for more than {minutes:g} minutes"
REASON_SESSION_TOO_OLD = "older than {minutes:g} minutes"


def _batch(batch):
    return settings.AGENTVINE_GUARDIAN_BATCH if batch is None else batch


def _live_cutoff(now):
    return now - timedelta(seconds=settings.AGENTVINE_STALLED_WORKER_SECONDS)


# --- stalled workers --------------------------------------------------------------


def guard_stalled_workers(*, batch=None):
    """Mark silent slots offline and requeue the work they held.

    A requeue spends a retry: work whose process dies every time (a poison
    work order) ends ``dead`` instead of taking the fleet down forever.
    Returns ``(workers marked offline, work orders requeued or dead)``.
    """
    now = timezone.now()
    cutoff = _live_cutoff(now)
    limit = _batch(batch)
    offline = []
    with transaction.atomic():
        stalled = list(
            Worker.objects.select_for_update(skip_locked=True)
            .exclude(status=WorkerStatus.OFFLINE)
            .filter(Q(last_heartbeat_at__lt=cutoff) | Q(last_heartbeat_at__isnull=True))
            .order_by("last_heartbeat_at")[:limit]
        )
        for worker in stalled:
            silent = (now - worker.last_heartbeat_at).total_seconds() if worker.last_heartbeat_at else 0
            reason = REASON_WORKER_STALLED.format(seconds=silent)
            worker_mark_offline(worker=worker, reason=reason)
            events.publish(
                "worker.stalled",
                {"id": str(worker.id), "name": worker.name, "reason": reason},
                groups=[events.worker_group(worker.id)],
            )
            offline.append(worker)
    # Work held by a slot that is offline (just now, or it shut down with work
    # still assigned) or silent: its process is gone or cannot report back.
    orphaned = (
        WorkOrder.objects.filter(status__in=ACTIVE_STATUSES)
        .filter(
            Q(worker__isnull=True) | Q(worker__status=WorkerStatus.OFFLINE) | Q(worker__last_heartbeat_at__lt=cutoff)
        )
        .order_by("started_at")
        .values_list("pk", flat=True)[:limit]
    )
    requeued = [work_order for pk in list(orphaned) if (work_order := _requeue_orphan(pk))]
    return offline, requeued


def _requeue_orphan(work_order_id):
    with transaction.atomic():
        work_order = (
            WorkOrder.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("worker")
            .filter(pk=work_order_id, status__in=ACTIVE_STATUSES)
            .first()
        )
        if work_order is None:
            return None  # finished meanwhile, or another guardian has it
        name = work_order.worker.name if work_order.worker else "unknown"
        return lifecycle.work_order_requeue(
            work_order=work_order, reason=ERR_WORKER_STALLED.format(name=name), lost=True
        )


# --- idle sessions ----------------------------------------------------------------


def guard_idle_sessions(*, batch=None):
    """Terminate sessions idle too long or too old (the keep-alive policy).

    A session whose task has active work (claimed, running, or waiting for a
    human answer) is in use, however quiet it looks, and is left alone.
    """
    now = timezone.now()
    idle_seconds = settings.AGENTVINE_SESSION_IDLE_SECONDS
    max_age_seconds = settings.AGENTVINE_SESSION_MAX_AGE_SECONDS
    in_use = WorkOrder.objects.filter(task_id=OuterRef("task_id"), status__in=ACTIVE_STATUSES)
    terminated = []
    with transaction.atomic():
        sessions = list(
            AgentSession.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("task")
            .exclude(status=SessionStatus.TERMINATED)
            .filter(
                Q(last_activity_at__lt=now - timedelta(seconds=idle_seconds))
                | Q(created_at__lt=now - timedelta(seconds=max_age_seconds))
            )
            .exclude(Exists(in_use))
            .order_by("last_activity_at")[: _batch(batch)]
        )
        for session in sessions:
            if session.created_at < now - timedelta(seconds=max_age_seconds):
                reason = REASON_SESSION_TOO_OLD.format(minutes=max_age_seconds / 60)
            else:
                reason = REASON_SESSION_IDLE.format(minutes=idle_seconds / 60)
            terminated.append(agent_session_terminate(session=session, reason=reason))
    return terminated


# --- lost dispatches --------------------------------------------------------------


def _broker_queue_sizes(queue_names):
    """Doorbells waiting in each broker queue; None when the broker can't say."""
    sizes = {}
    try:
        with app.connection_for_read() as conn:
            channel = conn.default_channel
            for name in queue_names:
                try:
                    sizes[name] = channel.queue_declare(name, passive=True).message_count
                except ChannelError:
                    sizes[name] = 0  # the queue is gone: flushed or never used
    except Exception:
        logger.warning("could not read broker queue sizes", exc_info=True)
        return None
    return sizes


def guard_lost_dispatches(*, batch=None):
    """Ring again for queued work whose doorbell was lost (Redis restart or flush).

    Only queues the broker reports empty are considered: while doorbells are
    still waiting in a queue, a long backlog is not a loss, and re-ringing it
    every run would pile up duplicates. A duplicate doorbell is harmless (the
    claim is a compare-and-set), just not free.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.AGENTVINE_LOST_DISPATCH_SECONDS)
    stale = (
        WorkOrder.objects.filter(status=WorkOrderStatus.QUEUED)
        .filter(Q(not_before__isnull=True) | Q(not_before__lt=cutoff))
        .filter(Q(dispatched_at__lt=cutoff) | Q(dispatched_at__isnull=True, enqueued_at__lt=cutoff))
    )
    priorities = list(stale.values_list("priority", flat=True).distinct())
    if not priorities:
        return []
    sizes = _broker_queue_sizes([QUEUE_FOR_PRIORITY[p] for p in priorities])
    if sizes is None:
        return []  # broker unreachable: ringing would fail too
    empty = [p for p in priorities if sizes[QUEUE_FOR_PRIORITY[p]] == 0]
    with transaction.atomic():
        lost = list(
            stale.filter(priority__in=empty)
            .select_for_update(skip_locked=True)
            .order_by("priority_rank", "enqueued_at")
            .values_list("pk", flat=True)[: _batch(batch)]
        )
        # Stamped inside the lock: a second guardian running now finds these
        # freshly dispatched and leaves them alone.
        WorkOrder.objects.filter(pk__in=lost, status=WorkOrderStatus.QUEUED).update(dispatched_at=now)
        for pk in lost:
            transaction.on_commit(lambda pk=pk: dispatch.work_order_dispatch(work_order_id=pk))
    if lost:
        logger.info("re-dispatched %d work orders whose doorbell was lost", len(lost))
    return lost


# --- priority preemption ----------------------------------------------------------


def guard_priority_preemption(*, batch=None):
    """The preemption policy's periodic run (``queue_app.preemption``): it
    also runs right after high-priority work is enqueued."""
    return preemption_request(batch=_batch(batch))
