"""Task graphs on real Celery workers, PostgreSQL and Redis."""

import random
from datetime import timedelta

import pytest

from queue_app.models import Execution, WorkOrder
from tasks_app.models import Task, TaskDependency, TaskStatus
from tasks_app.services import task_create
from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _all(tasks, status):
    return Task.objects.filter(pk__in=[t.pk for t in tasks], status=status).count() == len(tasks)


def test_diamond_runs_in_order_and_the_join_starts_right_after_the_last_parent(celery_worker_factory):
    celery_worker_factory(concurrency=2)
    a = task_create(title="ticker 0.3", executor="ticker")
    b = task_create(title="ticker 1.0", executor="ticker", depends_on=[a.pk])
    c = task_create(title="ticker 0.2", executor="ticker", depends_on=[a.pk])
    d = task_create(title="join", executor="noop", depends_on=[b.pk, c.pk])

    # While B runs, D is blocked: no work order, so nothing in any queue rang for it.
    wait_for(lambda: Task.objects.get(pk=b.pk).status == TaskStatus.IN_PROGRESS, message="B running")
    assert Task.objects.get(pk=d.pk).status == TaskStatus.BLOCKED
    assert not WorkOrder.objects.filter(task=d).exists()

    wait_for(lambda: _all([a, b, c, d], TaskStatus.COMPLETED), message="diamond completed")

    runs = {task.title: Execution.objects.get(task=task) for task in (a, b, c, d)}
    a_run, b_run, c_run, d_run = (runs[t.title] for t in (a, b, c, d))
    assert b_run.started_at >= a_run.completed_at
    assert c_run.started_at >= a_run.completed_at
    last_parent = max(b_run.completed_at, c_run.completed_at)
    assert last_parent <= d_run.started_at < last_parent + timedelta(seconds=1)
    # D's one work order was written when its last parent completed.
    d_order = WorkOrder.objects.get(task=d)
    assert d_order.enqueued_at >= b_run.completed_at - timedelta(milliseconds=50)


def test_two_hundred_task_graph_of_ten_levels_drains_in_order(celery_worker_factory):
    celery_worker_factory(concurrency=2)
    rng = random.Random(22)
    levels = [[task_create(title="level 0 root", executor="noop")]]
    for level, width in enumerate([23, *[22] * 8], start=1):
        below = levels[-1]
        levels.append(
            [
                task_create(
                    title=f"level {level} #{n}",
                    executor="noop",
                    depends_on=[t.pk for t in rng.sample(below, min(2, len(below)))],
                )
                for n in range(width)
            ]
        )
    tasks = [task for level in levels for task in level]
    assert len(tasks) == 200

    wait_for(lambda: _all(tasks, TaskStatus.COMPLETED), timeout=120, message="graph drained")

    started = dict(Execution.objects.filter(task__in=tasks).values_list("task_id", "started_at"))
    completed = dict(Execution.objects.filter(task__in=tasks).values_list("task_id", "completed_at"))
    assert Execution.objects.filter(task__in=tasks).count() == len(tasks)
    edges = TaskDependency.objects.filter(child__in=tasks).values_list("parent_id", "child_id")
    assert len(edges) > 300
    for parent_id, child_id in edges:
        assert started[child_id] >= completed[parent_id]
