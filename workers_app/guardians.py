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

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from kombu.exceptions import ChannelError

from agentvine import events
from agentvine.celery import app
from queue_app import dispatch, fairness, lifecycle
from queue_app.models import (
    ACTIVE_STATUSES,
    QUEUE_FOR_PRIORITY,
    Execution,
    ExecutionStatus,
    WorkOrder,
    WorkOrderStatus,
)
from queue_app.preemption import preemption_request
from workers_app.models import AgentSession, SessionStatus, Worker, WorkerStatus
from workers_app.services import agent_session_terminate, worker_mark_offline

logger = logging.getLogger(__name__)

ERR_WORKER_STALLED = "worker {name} stopped heartbeating while running this work order"
ERR_WORKER_MOVED_ON = "worker {name} is no longer running this work order"
ERR_LEASE_EXPIRED = "the run on worker {name} stopped renewing its lease"
ERR_RUN_ABANDONED = "its runner was gone when its work order moved on"
REASON_WORKER_STALLED = "no heartbeat for {seconds:.0f}s"
REASON_SESSION_IDLE = "idle for more than {minutes:g} minutes"
REASON_SESSION_TOO_OLD = "older than {minutes:g} minutes"


def _batch(batch):
    return settings.AGENTVINE_GUARDIAN_BATCH if batch is None else batch


def _live_cutoff(now):
    return now - timedelta(seconds=settings.AGENTVINE_STALLED_WORKER_SECONDS)


# --- stalled workers --------------------------------------------------------------


def guard_stalled_workers(*, batch=None):
    """Mark silent slots offline and take back the work whose run is gone.

    Work is orphaned, by what the rows say rather than by silence alone, when
    it is claimed, running or waiting and its slot is offline or silent, or
    (running or waiting) its slot is busy with something else or idle, or its
    run's lease (renewed by the runner, not by the heartbeat thread) expired.
    It is requeued without spending a retry, as a lost attempt (work whose
    runs keep killing their workers ends ``dead``). A run still open after its
    work order moved on (cancelled while its worker was dead) is closed and
    its slot freed. Returns ``(workers marked offline, work orders requeued
    or dead)``.
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
    orphaned = (
        WorkOrder.objects.filter(status__in=ACTIVE_STATUSES)
        .annotate(lease_expired=Exists(_lease_expired(now, work_order=OuterRef("pk"))))
        .filter(_orphan_condition(cutoff))
        .order_by("started_at")
        .values_list("pk", flat=True)[:limit]
    )
    requeued = [work_order for pk in list(orphaned) if (work_order := _requeue_orphan(pk, now=now))]
    _close_abandoned_runs(now=now, cutoff=cutoff, limit=limit)
    return offline, requeued


def _lease_expired(now, **where):
    return Execution.objects.filter(status=ExecutionStatus.RUNNING, lease_expires_at__lt=now, **where)


def _orphan_condition(cutoff):
    in_run = Q(status__in=[WorkOrderStatus.RUNNING, WorkOrderStatus.WAITING])
    return (
        Q(worker__isnull=True)
        | Q(worker__status=WorkerStatus.OFFLINE)
        | Q(worker__last_heartbeat_at__lt=cutoff)
        | (in_run & (Q(worker__current_work_order__isnull=True) | ~Q(worker__current_work_order=F("pk"))))
        | (in_run & Q(lease_expired=True))
    )


def _orphan_reason(work_order, *, now, cutoff):
    worker = work_order.worker
    if worker is None or worker.status == WorkerStatus.OFFLINE or (worker.last_heartbeat_at or now) < cutoff:
        return ERR_WORKER_STALLED.format(name=worker.name if worker else "unknown")
    if worker.current_work_order_id != work_order.pk:
        return ERR_WORKER_MOVED_ON.format(name=worker.name)
    return ERR_LEASE_EXPIRED.format(name=worker.name)


def _requeue_orphan(work_order_id, *, now):
    with transaction.atomic():
        work_order = (
            WorkOrder.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("worker")
            .filter(pk=work_order_id, status__in=ACTIVE_STATUSES)
            .first()
        )
        if work_order is None:
            return None  # finished meanwhile, or another guardian has it
        reason = _orphan_reason(work_order, now=now, cutoff=_live_cutoff(now))
        return lifecycle.work_order_requeue(work_order=work_order, reason=reason, lost=True)


def _close_abandoned_runs(*, now, cutoff, limit):
    """Runs still open after their work order moved on (cancelled, requeued)
    whose runner is gone: its slot is offline or silent, busy with other
    work or idle, or the run's lease expired. A live runner closes its own
    run within a poll and its interrupt grace; these never will."""
    gone = (
        Q(worker__isnull=True)
        | Q(worker__status=WorkerStatus.OFFLINE)
        | Q(worker__last_heartbeat_at__lt=cutoff)
        | Q(worker__current_work_order__isnull=True)
        | ~Q(worker__current_work_order=F("work_order_id"))
        | Q(lease_expires_at__lt=now)
    )
    abandoned = (
        Execution.objects.filter(status=ExecutionStatus.RUNNING)
        .exclude(work_order__status__in=ACTIVE_STATUSES)
        .filter(gone)
        .order_by("started_at")[:limit]
    )
    return [
        closed
        for execution in list(abandoned)
        if (closed := lifecycle.execution_abandon(execution=execution, reason=ERR_RUN_ABANDONED))
    ]


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


# Kept in the broker's Redis with no expiry: missing, the broker came back
# empty (restarted without persistence, or flushed) and every doorbell it held
# is gone.
BROKER_SENTINEL_KEY = "agentvine:broker:sentinel"
_broker_client = {}


def _broker_reset():
    """True, once, when the broker's Redis has come back empty since the last
    look (``SET NX`` of the sentinel: a second guardian sees it set). Always
    False for a broker that is not Redis (RabbitMQ keeps durable queues)."""
    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return False
    client = _broker_client.get(url)
    if client is None:
        client = _broker_client[url] = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        return bool(client.set(BROKER_SENTINEL_KEY, timezone.now().isoformat(), nx=True))
    except redis.RedisError:
        return False  # unreachable: ringing would fail too; the next run looks again


def guard_lost_dispatches(*, batch=None):
    """Ring again for queued work whose doorbell was lost, the last resort
    (:func:`guard_broker_reset` notices a broker that came back empty within
    seconds): work queued for AGENTVINE_LOST_DISPATCH_SECONDS without a
    doorbell in a queue the broker reports empty rings again. While doorbells
    are still waiting in a queue, a long backlog is not a loss, and re-ringing
    it every run would pile up duplicates. A duplicate doorbell is harmless
    (the claim is a compare-and-set), just not free.
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
            .order_by(*fairness.LINE_ORDER)
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


def guard_broker_reset():
    """A broker that came back empty (Redis restarted without persistence, or
    flushed: :func:`_broker_reset`) lost every doorbell it held: every queued
    work order rings again at once, whatever the batch, a backing-off one with
    the rest of its wait as countdown. Returns the work orders rung."""
    if not _broker_reset():
        return []
    return _redispatch_all_queued(timezone.now())


def _redispatch_all_queued(now):
    queued = list(
        WorkOrder.objects.filter(status=WorkOrderStatus.QUEUED)
        .order_by(*fairness.LINE_ORDER)
        .values_list("pk", "not_before")
    )
    for pk, not_before in queued:
        wait = (not_before - now).total_seconds() if not_before else 0
        dispatch.work_order_dispatch(work_order_id=pk, countdown=wait if wait > 0 else None)
    logger.warning("the broker came back empty: rang again for all %d queued work orders", len(queued))
    return [pk for pk, _ in queued]


# --- priority preemption ----------------------------------------------------------


def guard_priority_preemption(*, batch=None):
    """The preemption policy's periodic run (``queue_app.preemption``): it
    also runs right after high-priority work is enqueued. Queued work that
    has waited its turn moves up a priority level first (``queue_app.fairness``)."""
    fairness.queued_work_age()
    return preemption_request(batch=_batch(batch))
