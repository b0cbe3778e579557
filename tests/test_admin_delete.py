"""The admin refuses to delete a task or work order that is still queued or
running (a worker would crash on the missing rows): it says to cancel first."""

import pytest
from django.urls import reverse

from agentvine.admin_tools import ERR_DELETE_ACTIVE
from queue_app import lifecycle
from queue_app.models import WorkOrder
from tasks_app.models import Task
from tasks_app.services import task_cancel
from tests.factories import make_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(worker):
    task = make_task(title="busy task")
    order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    lifecycle.work_order_start(work_order=order, worker=worker)
    return task


def _messages(response):
    return [str(message) for message in response.context["messages"]]


def test_delete_page_of_a_running_task_or_work_order_says_cancel_first(admin_client, running):
    order = running.work_orders.get()
    for model, obj in (("tasks_app/task", running), ("queue_app/workorder", order)):
        app, name = model.split("/")
        url = reverse(f"admin:{app}_{name}_delete", args=[obj.pk])

        response = admin_client.post(url, {"post": "yes"}, follow=True)

        assert response.redirect_chain[-1][0] == reverse(f"admin:{app}_{name}_change", args=[obj.pk])
        assert ERR_DELETE_ACTIVE.format(obj=obj) in _messages(response)
    assert Task.objects.filter(pk=running.pk).exists()
    assert WorkOrder.objects.filter(pk=order.pk).exists()


def test_delete_selected_deletes_only_finished_tasks_and_names_the_active_ones(admin_client, running):
    finished = make_task(title="old task")
    task_cancel(task=finished)
    changelist = reverse("admin:tasks_app_task_changelist")
    selected = {"action": "delete_selected", "_selected_action": [str(running.pk), str(finished.pk)]}

    response = admin_client.post(changelist, {**selected, "post": "yes"}, follow=True)

    assert ERR_DELETE_ACTIVE.format(obj=running) in _messages(response)
    assert list(Task.objects.values_list("title", flat=True)) == ["busy task"]


def test_a_cancelled_task_can_be_deleted(admin_client, running):
    task_cancel(task=running)

    admin_client.post(reverse("admin:tasks_app_task_delete", args=[running.pk]), {"post": "yes"})

    assert not Task.objects.filter(pk=running.pk).exists()
