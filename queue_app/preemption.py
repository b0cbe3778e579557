"""Priority preemption: the policy that makes room for urgent work.

It runs right after high-priority work is enqueued (:func:`preempt_on_commit`,
from ``queue_app.lifecycle``) and periodically from the preemption guardian
(``workers_app.guardians``), which catches up when the first run failed.
The runner of the asked work order notices (a wake-up, or its poll), stops
its agent cooperatively and requeues the work without spending a retry.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agentvine import events
from agentvine.wakeups import work_order_wake
from queue_app.models import WorkOrder, WorkOrderStatus
from tasks_app.models import Priority
from workers_app.models import Worker, WorkerStatus

logger = logging.getLogger(__name__)


def preempt_on_commit(work_order):
    """High work arriving on a full fleet makes room at once, not at the next guardian run."""
    if work_order.priority != Priority.HIGH:
        return

    def preempt():
        try:
            preemption_request()
        except Exception:
            # The preemption guardian's periodic run catches up.
            logger.exception("preemption check after enqueueing %s failed", work_order.id)

    transaction.on_commit(preempt)


def preemption_request(*, batch=None):
    """Make room for high-priority work waiting on a fleet full of lower work.

    For each ready high-priority work order not covered by an idle slot or a
    preemption already under way, the lowest-priority, most recently started
    running work order is asked to give way: its agent is interrupted
    cooperatively, keeps its partial output, and its work order goes back to
    the queue without spending a retry (workers_app.runner). The most recent
    start loses the least work. A work order gives way at most
    AGENTVINE_PREEMPT_MAX times, so low work cannot starve.
    Returns the work orders asked to give way.
    """
    if not settings.AGENTVINE_PREEMPTION_ENABLED:
        return []
    now = timezone.now()
    waiting = (
        WorkOrder.objects.filter(status=WorkOrderStatus.QUEUED, priority=Priority.HIGH)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .count()
    )
    if not waiting:
        return []
    live = Worker.objects.exclude(status=WorkerStatus.OFFLINE).filter(
        last_heartbeat_at__gte=now - timedelta(seconds=settings.AGENTVINE_STALLED_WORKER_SECONDS)
    )
    idle = live.filter(status=WorkerStatus.IDLE).count()
    # A request not acted on within the grace period is not counted: its
    # runner is stuck or gone, and the stalled-worker guardian handles that.
    recent = now - timedelta(seconds=settings.AGENTVINE_INTERRUPT_GRACE_SECONDS + 5)
    pending = WorkOrder.objects.filter(status=WorkOrderStatus.RUNNING, preempt_requested_at__gte=recent).count()
    needed = min(waiting - idle - pending, settings.AGENTVINE_GUARDIAN_BATCH if batch is None else batch)
    if needed <= 0:
        return []
    with transaction.atomic():
        victims = list(
            WorkOrder.objects.select_for_update(skip_locked=True)
            .filter(
                status=WorkOrderStatus.RUNNING,
                preempt_requested_at__isnull=True,
                preempt_count__lt=settings.AGENTVINE_PREEMPT_MAX,
                worker_id__in=live.values("pk"),
            )
            .exclude(priority=Priority.HIGH)
            .order_by("-priority_rank", "-started_at")[:needed]
        )
        for victim in victims:
            if not WorkOrder.objects.filter(
                pk=victim.pk, status=WorkOrderStatus.RUNNING, preempt_requested_at__isnull=True
            ).update(preempt_requested_at=now):
                continue
            events.publish(
                "work_order.preempting",
                {"id": str(victim.id), "task_id": str(victim.task_id), "preempt_count": victim.preempt_count},
                groups=[events.task_group(victim.task_id)],
            )
            transaction.on_commit(lambda pk=victim.pk: work_order_wake(work_order_id=pk))
    return victims
