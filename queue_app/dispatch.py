"""Doorbells: the Celery message that tells a slot a work order is ready.

PostgreSQL is the truth and a doorbell carries only a work-order id, so a
lost doorbell is not fatal (the lost-dispatch guardian rings again for work
that stays queued) and a duplicate is harmless (the claim is a
compare-and-set). Doorbells ring only after commit, and by task name: the
engine never imports the Celery task that runs a work order (an entry point,
``queue_app.tasks``), so it sits below the workers that run it.
"""

import logging
import math

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agentvine.brokers import broker_is_amqp
from agentvine.celery import app
from queue_app.models import QUEUE_FOR_PRIORITY, WorkOrder, WorkOrderStatus

logger = logging.getLogger(__name__)

# The name ``queue_app.tasks.execute_work_order`` is registered under.
EXECUTE_WORK_ORDER = "queue_app.execute_work_order"


def ring(work_order_id, *, queue, countdown=None):
    """Send one doorbell now; False (logged) when the broker refused it.

    A countdown longer than a run's time limit (a rate limit's reset hours
    away, a daily budget's midnight) is cut to it: a Redis broker would
    otherwise deliver a doorbell held past its visibility timeout again, to
    another worker, and again. The early doorbell finds the order not yet
    ready and rings once more for the rest of the wait (workers_app.runner)."""
    if countdown:
        countdown = min(countdown, settings.AGENTVINE_MAX_RUN_SECONDS)
    if countdown and broker_is_amqp(app.conf.broker_url):
        # RabbitMQ's delayed delivery counts whole seconds (agentvine/brokers.py);
        # the work order's not_before keeps the exact time.
        countdown = math.ceil(countdown)
    try:
        app.send_task(EXECUTE_WORK_ORDER, args=[str(work_order_id)], queue=queue, countdown=countdown)
    except Exception:
        logger.exception("dispatch of work order %s failed; the guardian will retry", work_order_id)
        return False
    return True


def work_order_dispatch(*, work_order_id, countdown=None):
    """Ring the doorbell for one work order (call only outside a transaction).

    ``dispatched_at`` tells the lost-dispatch guardian when the doorbell last rang.
    """
    work_order = WorkOrder.objects.filter(pk=work_order_id, status=WorkOrderStatus.QUEUED).first()
    if work_order is None:
        return False
    # Stamped before it rings, not after: the doorbell may be taken at once,
    # and a claim (FOR UPDATE SKIP LOCKED) that finds the row locked by this
    # stamp would pass the order over and spend its doorbell for nothing.
    queued = WorkOrder.objects.filter(pk=work_order_id, status=WorkOrderStatus.QUEUED)
    queued.update(dispatched_at=timezone.now())
    if not ring(work_order.id, queue=QUEUE_FOR_PRIORITY[work_order.priority], countdown=countdown):
        # Not rung after all: the lost-dispatch guardian times it as it was.
        queued.update(dispatched_at=work_order.dispatched_at)
        return False
    return True


def dispatch_on_commit(work_order_id, countdown=None):
    """:func:`work_order_dispatch` once the current transaction commits."""
    transaction.on_commit(lambda: work_order_dispatch(work_order_id=work_order_id, countdown=countdown))


def dispatch_new_on_commit(work_order):
    """The first doorbell of a work order created in this transaction.

    Nothing else can have moved a new order on before its first doorbell, so
    the queue comes from the row in hand and nothing is read or stamped: the
    lost-dispatch guardian times a never-stamped order from ``enqueued_at``.
    """
    queue = QUEUE_FOR_PRIORITY[work_order.priority]
    # Work that may not start yet (its key waits for a rate limit's reset)
    # rings when it may.
    wait = (work_order.not_before - timezone.now()).total_seconds() if work_order.not_before else 0
    transaction.on_commit(lambda: ring(work_order.id, queue=queue, countdown=wait if wait > 0 else None))
