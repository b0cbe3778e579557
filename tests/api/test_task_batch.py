"""POST /api/v1/tasks/batch/: many tasks in one request, all or none."""

import pytest

from agentvine import events
from agentvine.models import LiveEvent
from queue_app.models import WorkOrder, WorkOrderStatus
from tasks_app import services as task_services
from tasks_app.models import Task, TaskStatus
from tasks_app.serializers import MAX_BATCH_TASKS
from tests.conftest import wait_for

from .conftest import token_client

URL = "/api/v1/tasks/batch/"


@pytest.mark.django_db
def test_a_batch_creates_every_task_in_order_each_queued_with_its_events(operator_client, operator):
    body = {
        "tasks": [
            {"title": "Fix login", "task_type": "bugfix", "priority": "high"},
            {"title": "Write docs", "task_type": "docs", "repository_url": "https://example.com/r.git"},
            {"title": "  Add tests  ", "priority": "low", "executor": "noop", "max_retries": 1},
        ]
    }

    response = operator_client.post(URL, body, format="json")

    assert response.status_code == 201, response.content
    created = response.json()
    assert [task["title"] for task in created] == ["Fix login", "Write docs", "Add tests"]
    assert [task["status"] for task in created] == ["queued"] * 3
    for shown in created:
        task = Task.objects.get(pk=shown["id"])
        assert task.created_by == operator
        order = WorkOrder.objects.get(task=task)
        assert (order.status, order.priority) == (WorkOrderStatus.QUEUED, task.priority)
    assert WorkOrder.objects.get(task_id=created[2]["id"]).max_retries == 1
    assert Task.objects.get(pk=created[1]["id"]).repository_url == "https://example.com/r.git"
    # Each task has its task.created and work_order.updated on the live log.
    for shown in created:
        stream = LiveEvent.objects.filter(groups__contains=f" {events.task_group(shown['id'])} ")
        types = list(stream.order_by("id").values_list("type", flat=True))
        assert types == ["task.created", "work_order.updated"]


@pytest.mark.django_db
def test_one_bad_task_refuses_the_batch_naming_it(operator_client):
    body = {"tasks": [{"title": "fine"}, {"title": "bad executor", "executor": "nope"}]}

    response = operator_client.post(URL, body, format="json")

    assert response.status_code == 400
    assert response.json() == {"executor": [f"task 1: {task_services.ERR_UNKNOWN_EXECUTOR}"]}
    assert not Task.objects.exists()
    assert not WorkOrder.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {"tasks": []},
        {"tasks": [{"title": "x"}] * (MAX_BATCH_TASKS + 1)},
        {"tasks": [{"title": "ok"}, {"description": "no title"}]},
        {"tasks": [{"title": "ok"}, {"title": "x", "priority": "urgent"}]},
        {"tasks": "not a list"},
        [{"title": "a bare list"}],
        {},
    ],
)
def test_malformed_batches_are_400_and_create_nothing(operator_client, body):
    response = operator_client.post(URL, body, format="json")

    assert response.status_code == 400
    assert "tasks" in response.json() or "non_field_errors" in response.json()
    assert not Task.objects.exists()


@pytest.mark.django_db
def test_field_errors_point_at_the_bad_task(operator_client):
    response = operator_client.post(URL, {"tasks": [{"title": "ok"}, {"description": "no title"}]}, format="json")

    assert response.json() == {"tasks": {"1": {"title": ["This field is required."]}}}


def test_a_batch_is_run_to_completion_by_a_celery_worker(celery_worker_factory, operator):
    from workers_app.services import api_token_create

    celery_worker_factory(concurrency=2)
    client = token_client(api_token_create(user=operator, name="batch")[1])
    body = {"tasks": [{"title": f"batch {index}", "executor": "noop"} for index in range(12)]}

    response = client.post(URL, body, format="json")

    assert response.status_code == 201
    ids = [task["id"] for task in response.json()]
    wait_for(
        lambda: Task.objects.filter(pk__in=ids, status=TaskStatus.COMPLETED).count() == len(ids),
        timeout=60,
        message="every batch task completed",
    )
    assert WorkOrder.objects.filter(task_id__in=ids, status=WorkOrderStatus.COMPLETED).count() == len(ids)
