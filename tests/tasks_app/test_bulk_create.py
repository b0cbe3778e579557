"""Creating thousands of tasks at once: PostgreSQL takes at most 65,535
parameters in one statement, and a batch of 2,000 tasks with their search
text, work orders and events needs far more."""

import pytest

from agentvine.models import LiveEvent
from queue_app.models import WorkOrder, WorkOrderStatus
from tasks_app.models import Task, TaskDependency, TaskStatus
from tasks_app.services import tasks_create

pytestmark = pytest.mark.django_db


def test_two_thousand_tasks_are_created_whole_with_their_work_orders_and_events(
    operator, django_capture_on_commit_callbacks
):
    specs = [{"title": f"bulk {n}", "description": "x" * 40, "executor": "ticker"} for n in range(2000)]

    with django_capture_on_commit_callbacks(execute=False):
        tasks = tasks_create(specs=specs, created_by=operator)

    assert [task.title for task in tasks] == [f"bulk {n}" for n in range(2000)]
    assert Task.objects.filter(status=TaskStatus.QUEUED, title__startswith="bulk ").count() == 2000
    assert WorkOrder.objects.filter(status=WorkOrderStatus.QUEUED, task__in=tasks).count() == 2000
    assert LiveEvent.objects.filter(type="task.created").count() == 2000
    assert LiveEvent.objects.filter(type="work_order.updated").count() == 2000


def test_two_thousand_tasks_with_ten_parents_each_write_every_edge(operator, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        parents = tasks_create(specs=[{"title": f"parent {n}"} for n in range(10)], created_by=operator)
        specs = [{"title": f"child {n}", "depends_on": [str(p.pk) for p in parents]} for n in range(2000)]
        children = tasks_create(specs=specs, created_by=operator)

    assert Task.objects.filter(pk__in=[c.pk for c in children], status=TaskStatus.BLOCKED).count() == 2000
    assert TaskDependency.objects.filter(parent__in=parents).count() == 20000
