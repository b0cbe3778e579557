"""Killed processes, lost doorbells and poison work, with real Celery workers,
a real `celery beat`, PostgreSQL and Redis."""

import os
import signal
import time

import pytest
from django.db import transaction

from queue_app.models import ExecutionStatus, WorkOrder, WorkOrderStatus
from tasks_app.models import Task, TaskStatus
from tasks_app.services import task_create
from tests.conftest import wait_for
from tests.workers_app.conftest import FAST_GUARD_ENV
from workers_app import guardians
from workers_app.models import Worker, WorkerStatus

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _running_order(task):
    return WorkOrder.objects.filter(task=task, status=WorkOrderStatus.RUNNING).select_related("worker").first()


def test_kill_9_of_a_worker_mid_run_requeues_and_completes_once_elsewhere(
    celery_worker_factory, guardian_beat, operator
):
    first = celery_worker_factory(concurrency=1, extra_env=FAST_GUARD_ENV)
    second = celery_worker_factory(concurrency=1, extra_env=FAST_GUARD_ENV)
    guardian_beat(every_seconds=1)
    task = task_create(title="ticker 2", executor="ticker", created_by=operator)
    work_order = wait_for(lambda: _running_order(task), timeout=15, message="the run to start")
    victim, survivor = (first, second) if work_order.worker.name.startswith(f"{first.name}@") else (second, first)
    wait_for(lambda: work_order.executions.filter(output_chars__gt=0).exists(), timeout=5, message="output")

    victim.kill()  # SIGKILL to the whole worker: parent and its pool process
    killed_at = time.monotonic()
    wait_for(lambda: Task.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, timeout=20, message="completion")
    assert time.monotonic() - killed_at < 20

    work_order.refresh_from_db()
    assert work_order.status == WorkOrderStatus.COMPLETED
    # Lost with its worker: counted, but no retry spent.
    assert (work_order.retry_count, work_order.lost_count) == (0, 1)
    assert work_order.worker.name.startswith(f"{survivor.name}@")
    attempts = list(work_order.executions.order_by("attempt"))
    assert [(e.attempt, e.status) for e in attempts] == [(1, ExecutionStatus.FAILED), (2, ExecutionStatus.COMPLETED)]
    assert "stopped heartbeating" in attempts[0].error
    assert attempts[0].worker.name.startswith(f"{victim.name}@")
    assert attempts[0].output_chars > 0
    assert Worker.objects.get(pk=attempts[0].worker_id).status == WorkerStatus.OFFLINE


def test_killed_pool_process_work_is_requeued_by_its_replacement_at_once(celery_worker_factory, operator):
    node = celery_worker_factory(concurrency=1)
    task = task_create(title="ticker 1.5", executor="ticker", created_by=operator)
    wait_for(lambda: _running_order(task), timeout=15, message="the run to start")
    (pool_pid,) = node.pool_pids()

    os.kill(pool_pid, signal.SIGKILL)  # Celery replaces the process; no guardian runs here
    wait_for(lambda: Task.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, timeout=15, message="completion")

    work_order = task.work_orders.get()
    assert (work_order.retry_count, work_order.lost_count) == (0, 1)
    statuses = list(work_order.executions.order_by("attempt").values_list("status", "error"))
    assert statuses[0][0] == ExecutionStatus.FAILED and "died while running" in statuses[0][1]
    assert statuses[1:] == [(ExecutionStatus.COMPLETED, "")]


def test_poison_work_ends_dead_after_its_lost_attempts(celery_worker_factory, operator):
    celery_worker_factory(concurrency=1)
    # Its retries do not matter: the attempts lost with their workers do (3 by default).
    task = task_create(title="Crash the worker", executor="poison", created_by=operator, max_retries=5)

    wait_for(lambda: WorkOrder.objects.get(task=task).status == WorkOrderStatus.DEAD, timeout=40, message="dead letter")

    work_order = WorkOrder.objects.get(task=task)
    assert (work_order.retry_count, work_order.lost_count) == (0, 3)
    assert "died while running this work order" in work_order.last_error
    assert "gave up after 3 attempts lost with their workers" in work_order.last_error
    assert work_order.executions.count() == 3
    assert set(work_order.executions.values_list("status", flat=True)) == {ExecutionStatus.FAILED}
    assert Task.objects.get(pk=task.pk).status == TaskStatus.FAILED


def test_redis_flushed_with_200_queued_all_complete_once(celery_worker_factory, clean_broker, operator, settings):
    settings.AGENTVINE_LOST_DISPATCH_SECONDS = 0.5
    with transaction.atomic():
        tasks = [task_create(title=f"quick {n}", executor="quick", created_by=operator) for n in range(200)]
    clean_broker.flushdb()  # every doorbell is gone
    celery_worker_factory(concurrency=2)

    def all_done():
        guardians.guard_lost_dispatches()
        return Task.objects.filter(status=TaskStatus.COMPLETED).count() == len(tasks)

    wait_for(all_done, timeout=90, interval=0.5, message="all 200 to complete")

    orders = WorkOrder.objects.filter(task__in=tasks)
    assert orders.filter(status=WorkOrderStatus.COMPLETED).count() == 200
    assert all(order.executions.count() == 1 for order in orders.prefetch_related("executions"))


def test_a_slot_whose_database_connections_are_cut_runs_the_next_work(celery_worker_factory):
    """Slots keep their connection (and its prepared statements) across
    tasks; PostgreSQL dropping it between tasks (a restart, a failover, an
    idle timeout) must cost no work order."""
    from django.db import connection

    celery_worker_factory(concurrency=1)
    # Enough runs that the slot's hot statements are prepared on its connection.
    first = [task_create(title=f"before the cut {n}", executor="noop") for n in range(8)]
    wait_for(
        lambda: Task.objects.filter(pk__in=[t.pk for t in first], status=TaskStatus.COMPLETED).count() == 8,
        message="the first runs",
    )

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 1

    after = [task_create(title=f"after the cut {n}", executor="noop") for n in range(3)]
    wait_for(
        lambda: Task.objects.filter(pk__in=[t.pk for t in after], status=TaskStatus.COMPLETED).count() == 3,
        message="runs after the connections were cut",
    )
    # The slot noticed the dead connection before using it: no attempt was spent.
    assert list(WorkOrder.objects.filter(task__in=after).values_list("retry_count", flat=True)) == [0, 0, 0]
    assert not WorkOrder.objects.exclude(status=WorkOrderStatus.COMPLETED).exists()


def test_a_killed_nodes_work_runs_again_ahead_of_500_queued_doorbells(celery_worker_factory, guardian_beat, operator):
    """Requeued work keeps its place in line: the next doorbell any slot takes
    runs it, not the 500 newer ones queued in the broker ahead of its own."""
    from tasks_app.services import task_cancel, tasks_create

    victim = celery_worker_factory(concurrency=1, extra_env=FAST_GUARD_ENV)
    task = task_create(title="ticker 60", executor="ticker", created_by=operator)
    work_order = wait_for(lambda: _running_order(task), timeout=15, message="the run to start")
    backlog = tasks_create(specs=[{"title": "ticker 0.3", "executor": "ticker"} for _ in range(500)])
    survivor = celery_worker_factory(concurrency=1, extra_env=FAST_GUARD_ENV)
    guardian_beat(every_seconds=1)
    wait_for(lambda: work_order.executions.filter(output_chars__gt=0).exists(), timeout=5, message="output")

    victim.kill()
    killed_at = time.monotonic()
    wait_for(
        lambda: work_order.executions.filter(attempt=2, output_chars__gt=0).exists(),
        timeout=40,
        message="the work to run again",
    )
    again_after = time.monotonic() - killed_at
    work_order.refresh_from_db()
    # Let everything go: the test is about the order of the line, not draining it.
    WorkOrder.objects.filter(task__in=backlog, status=WorkOrderStatus.QUEUED).update(status=WorkOrderStatus.CANCELLED)
    task_cancel(task=task)

    assert again_after < 15, f"ran again {again_after:.1f} s after the kill"
    assert (work_order.retry_count, work_order.lost_count) == (0, 1)
    assert work_order.worker.name.startswith(f"{survivor.name}@")
    assert WorkOrder.objects.filter(task__in=backlog, status=WorkOrderStatus.COMPLETED).count() < 100


def test_a_cancel_whose_runner_was_killed_closes_the_run_and_frees_the_slot(
    celery_worker_factory, guardian_beat, operator
):
    """The pool process running an agent is killed, then the task is
    cancelled: nobody is left to close the attempt, so the guardian does
    (interrupted), the slot is idle again, and the run's question is closed."""
    from chat_app import selectors as chat_selectors
    from chat_app.services import question_ask
    from tasks_app.services import task_cancel
    from workers_app.models import WorkerStatus

    node = celery_worker_factory(concurrency=1, extra_env=FAST_GUARD_ENV)
    guardian_beat(every_seconds=1)
    task = task_create(title="ticker 60", executor="ticker", created_by=operator)
    work_order = wait_for(lambda: _running_order(task), timeout=15, message="the run to start")
    execution = work_order.executions.get()
    question_ask(work_order=work_order, execution=execution, text="Still there?")

    (pool_pid,) = node.pool_pids()
    os.kill(pool_pid, signal.SIGKILL)
    task_cancel(task=task)

    wait_for(
        lambda: work_order.executions.get().status == ExecutionStatus.INTERRUPTED,
        timeout=20,
        message="the attempt to be closed",
    )
    slot = Worker.objects.filter(name__startswith=f"{node.name}@").get()
    wait_for(lambda: Worker.objects.get(pk=slot.pk).status == WorkerStatus.IDLE, timeout=10, message="an idle slot")
    assert WorkOrder.objects.get(pk=work_order.pk).status == WorkOrderStatus.CANCELLED
    assert chat_selectors.pending_question_count() == 0
