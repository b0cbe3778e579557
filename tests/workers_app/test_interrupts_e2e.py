"""Cancellation, priority preemption and warm shutdown of running agents,
with real Celery worker processes, PostgreSQL and Redis."""

import signal
import time

import pytest

from queue_app.models import Execution, ExecutionStatus, WorkOrder, WorkOrderStatus
from tasks_app.models import Priority, Task, TaskStatus
from tasks_app.selectors import execution_output
from tasks_app.services import task_cancel, task_create
from tests.conftest import wait_for
from tests.workers_app.conftest import FAST_GUARD_ENV
from workers_app.models import Worker, WorkerStatus

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _running_execution(task):
    return Execution.objects.filter(task=task, status=ExecutionStatus.RUNNING, output_chars__gt=0).first()


@pytest.mark.parametrize("title", ["ticker 30", "ticker 30 stubborn"])
def test_cancelling_a_running_agent_stops_it_within_5_seconds(celery_worker_factory, operator, title):
    celery_worker_factory(concurrency=1, extra_env=FAST_GUARD_ENV)
    task = task_create(title=title, executor="ticker", created_by=operator)
    execution = wait_for(lambda: _running_execution(task), timeout=15, message="the agent's first output")

    task_cancel(task=task)
    cancelled_at = time.monotonic()
    wait_for(
        lambda: Execution.objects.get(pk=execution.pk).status != ExecutionStatus.RUNNING,
        timeout=5,
        interval=0.05,
        message="the agent to stop",
    )
    stopped_after = time.monotonic() - cancelled_at

    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.INTERRUPTED
    assert execution.error == "work order became cancelled"
    assert "tick 1\n" in execution_output(execution=execution)  # partial output kept
    assert Task.objects.get(pk=task.pk).status == TaskStatus.CANCELLED
    assert stopped_after < 5
    wait_for(lambda: Worker.objects.filter(status=WorkerStatus.IDLE).count() == 1, timeout=5, message="a free slot")


def test_high_work_preempts_low_work_on_a_full_fleet(celery_worker_factory, operator, settings):
    settings.AGENTVINE_PREEMPT_MAX = 1
    celery_worker_factory(concurrency=2, extra_env=FAST_GUARD_ENV)
    lows = [task_create(title="ticker 5", executor="ticker", priority=Priority.LOW) for _ in range(2)]
    for low in lows:
        wait_for(lambda low=low: _running_execution(low), timeout=15, message="low work running")

    high = task_create(title="ticker 0.5", executor="ticker", priority=Priority.HIGH, created_by=operator)
    enqueued = high.work_orders.get().enqueued_at
    high_order = wait_for(
        lambda: WorkOrder.objects.filter(task=high, started_at__isnull=False).first(),
        timeout=10,
        interval=0.05,
        message="high work to start",
    )
    assert (high_order.started_at - enqueued).total_seconds() < 1.5

    preempted = WorkOrder.objects.get(task__in=lows, preempt_count=1)
    first_attempt = preempted.executions.get(attempt=1)
    assert first_attempt.status == ExecutionStatus.INTERRUPTED
    assert first_attempt.error == "preempted by higher-priority work"
    assert "tick 1\n" in execution_output(execution=first_attempt)
    assert preempted.retry_count == 0

    # Two more high orders while both slots run low work again: only the low
    # work never preempted may give way; the limit protects the other one.
    wait_for(
        lambda: WorkOrder.objects.filter(task__in=lows, status=WorkOrderStatus.RUNNING).count() == 2,
        timeout=15,
        message="both low orders running",
    )
    more = [task_create(title="ticker 0.2", executor="ticker", priority=Priority.HIGH) for _ in range(2)]
    wait_for(
        lambda: (
            Task.objects.filter(pk__in=[t.pk for t in [*lows, high, *more]], status=TaskStatus.COMPLETED).count() == 5
        ),
        timeout=40,
        message="all work to complete",
    )
    counts = sorted(WorkOrder.objects.filter(task__in=lows).values_list("preempt_count", flat=True))
    assert counts == [1, 1]
    for order in WorkOrder.objects.filter(task__in=lows):
        assert list(order.executions.order_by("attempt").values_list("status", flat=True)) == [
            ExecutionStatus.INTERRUPTED,
            ExecutionStatus.COMPLETED,
        ]


def test_warm_shutdown_requeues_running_work_and_goes_offline(celery_worker_factory, operator):
    env = {**FAST_GUARD_ENV, "AGENTVINE_SHUTDOWN_GRACE_SECONDS": "1"}
    leaving = celery_worker_factory(concurrency=1, extra_env=env)
    task = task_create(title="ticker 30", executor="ticker", created_by=operator)
    wait_for(lambda: _running_execution(task), timeout=15, message="the run to start")

    leaving.process.send_signal(signal.SIGTERM)
    stopping_at = time.monotonic()
    leaving.process.wait(timeout=15)
    assert time.monotonic() - stopping_at < 10

    work_order = task.work_orders.get()
    assert (work_order.status, work_order.retry_count) == (WorkOrderStatus.QUEUED, 0)
    assert work_order.last_error == "worker shutting down"
    assert work_order.executions.get().status == ExecutionStatus.INTERRUPTED
    assert set(Worker.objects.filter(name__startswith=f"{leaving.name}@").values_list("status", flat=True)) == {
        WorkerStatus.OFFLINE
    }
    # Another worker picks the requeued work up.
    celery_worker_factory(concurrency=1, extra_env=env, wait=False)
    wait_for(lambda: work_order.executions.count() == 2, timeout=30, message="the work running elsewhere")
