"""End to end through a real Celery worker process, PostgreSQL and Redis."""

import pytest

from queue_app.dispatch import work_order_dispatch
from queue_app.models import ExecutionStatus, WorkOrderStatus
from tasks_app.models import Priority, Task, TaskStatus
from tasks_app.selectors import execution_output
from tasks_app.services import task_create
from tests.conftest import wait_for
from workers_app.models import Worker, WorkerStatus

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_created_task_runs_demo_agent_to_completion(celery_worker_factory, operator):
    celery_worker_factory(concurrency=1)
    task = task_create(title="Add a greeting", description="Say hello in the README", created_by=operator)

    wait_for(lambda: task.__class__.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, message="completion")

    execution = task.executions.get()
    assert execution.status == ExecutionStatus.COMPLETED
    assert execution.exit_code == 0
    output = execution_output(execution=execution)
    assert "demo agent: starting on task: Add a greeting" in output
    assert output.rstrip().endswith("wrote AGENTVINE_RESULT.md; done")
    work_order = task.work_orders.get()
    assert work_order.status == WorkOrderStatus.COMPLETED
    assert work_order.worker.name.startswith("w0-")


def _status(task):
    return Task.objects.values_list("status", flat=True).get(pk=task.pk)


def test_failing_command_is_retried_per_policy_then_ends_failed(celery_worker_factory):
    celery_worker_factory(concurrency=1)
    task = task_create(title="Break things", executor="fail", max_retries=2)

    wait_for(lambda: _status(task) == TaskStatus.FAILED, message="task failed")

    work_order = task.work_orders.get()
    assert work_order.status == WorkOrderStatus.DEAD
    assert work_order.retry_count == 2
    assert "agent exited with code 3" in work_order.last_error
    assert "boom" in work_order.last_error
    attempts = list(work_order.executions.order_by("attempt"))
    assert [e.attempt for e in attempts] == [1, 2, 3]
    assert all(e.status == ExecutionStatus.FAILED and e.exit_code == 3 for e in attempts)
    assert "working" in execution_output(execution=attempts[0])


def test_missing_agent_binary_fails_once_with_a_clear_error(celery_worker_factory):
    celery_worker_factory(concurrency=1)
    task = task_create(title="No binary", executor="missing")

    wait_for(lambda: _status(task) == TaskStatus.FAILED, message="task failed")

    work_order = task.work_orders.get()
    assert work_order.status == WorkOrderStatus.FAILED
    assert work_order.last_error == "agent command not found: /nonexistent/agent-binary"
    assert work_order.executions.count() == 1


def test_high_priority_runs_before_every_remaining_low(celery_worker_factory, settings):
    # Queue order alone: preemption (tests/workers_app) would interrupt "busy".
    settings.AGENTVINE_PREEMPTION_ENABLED = False
    celery_worker_factory(concurrency=1)
    busy = task_create(title="ticker 1.5", executor="ticker", priority=Priority.LOW)
    wait_for(lambda: _status(busy) == TaskStatus.IN_PROGRESS, message="worker busy")
    backlog = [task_create(title="ticker 0.2", executor="ticker", priority=Priority.LOW) for _ in range(4)]
    high = task_create(title="ticker 0.2", executor="ticker", priority=Priority.HIGH)

    wait_for(
        lambda: all(_status(t) == TaskStatus.COMPLETED for t in [busy, high, *backlog]),
        timeout=60,
        message="all completed",
    )

    high_started = high.executions.get().started_at
    assert busy.executions.get().started_at < high_started
    for task in backlog:
        assert task.executions.get().started_at > high_started


def test_doorbell_delivered_three_times_runs_the_work_once(celery_worker_factory):
    task = task_create(title="Only once")
    work_order = task.work_orders.get()
    # Two more doorbells for the same work order before any worker is up.
    assert work_order_dispatch(work_order_id=work_order.id)
    assert work_order_dispatch(work_order_id=work_order.id)
    celery_worker_factory(concurrency=2)

    wait_for(lambda: _status(task) == TaskStatus.COMPLETED, message="completion")
    # Give the extra doorbells time to be consumed.
    wait_for(lambda: clean_broker_empty(), message="broker drained")

    assert work_order.executions.count() == 1
    output = execution_output(execution=work_order.executions.get())
    assert output.count("demo agent: starting on task") == 1


def clean_broker_empty():
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    return all(client.llen(queue) == 0 for queue in ("high", "default", "low")) and not client.hlen("unacked")


def test_slots_register_and_go_offline_on_clean_shutdown(celery_worker_factory):
    proc = celery_worker_factory(concurrency=2, name="shutdown")
    slots = Worker.objects.filter(name__startswith="shutdown@")
    assert slots.count() == 2
    assert {w.status for w in slots} == {WorkerStatus.IDLE}
    assert all(w.last_heartbeat_at for w in slots)
    first_beats = {w.pk: w.last_heartbeat_at for w in slots}
    wait_for(
        lambda: all(w.last_heartbeat_at > first_beats[w.pk] for w in slots.all()),
        message="heartbeats",
    )

    proc.stop()

    assert {w.status for w in slots.all()} == {WorkerStatus.OFFLINE}
