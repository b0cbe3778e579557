"""Django admin: every model's changelist and change page, and service actions."""

import pytest
from django.apps import apps
from django.contrib import admin
from django.urls import reverse

from queue_app import lifecycle
from queue_app.models import WorkOrder, WorkOrderStatus
from queue_app.outputs import execution_output_append
from tasks_app.models import Priority, TaskStatus
from tests.factories import make_task
from workers_app.models import AgentSession, WorkerStatus

pytestmark = pytest.mark.django_db

OUR_APPS = ("tasks_app", "queue_app", "workers_app", "chat_app")


@pytest.fixture
def seeded(worker):
    task = make_task(title="admin seeded")
    order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    order, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    execution_output_append(execution=execution, seq=0, text="out\n", tail="out\n")
    AgentSession.objects.create(session_id="sess-1", worker=worker, task=task)
    return task


def our_models():
    return [m for m in apps.get_models() if m._meta.app_label in OUR_APPS and m in admin.site._registry]


def test_every_model_of_ours_is_registered():
    registered = {m._meta.model_name for m in our_models()}
    assert {"task", "execution", "workorder", "worker", "agentsession", "chatmessage"} <= registered


@pytest.mark.parametrize("model", our_models(), ids=lambda m: m._meta.label)
def test_changelist_and_change_page_render(admin_client, seeded, model):
    opts = model._meta
    response = admin_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
    assert response.status_code == 200
    obj = model.objects.first()
    if obj is not None:
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        assert admin_client.get(url).status_code == 200


def test_admin_refuses_staff_without_superuser(client, operator):
    client.force_login(operator)
    response = client.get(reverse("admin:tasks_app_task_changelist"))
    assert response.status_code in (302, 403)


def _act(admin_client, model, action, pks):
    opts = model._meta
    return admin_client.post(
        reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
        {"action": action, "_selected_action": [str(pk) for pk in pks]},
        follow=True,
    )


def test_task_actions_go_through_services(admin_client):
    from tasks_app.models import Task

    queued = make_task(priority=Priority.NORMAL)
    response = _act(admin_client, Task, "raise_to_high_priority", [queued.pk])
    queued.refresh_from_db()
    assert queued.priority == Priority.HIGH
    assert queued.work_orders.get().priority == Priority.HIGH
    assert "1 tasks raised" in response.content.decode()

    _act(admin_client, Task, "cancel_tasks", [queued.pk])
    queued.refresh_from_db()
    assert queued.status == TaskStatus.CANCELLED
    response = _act(admin_client, Task, "cancel_tasks", [queued.pk])
    assert "task is already finished" in response.content.decode()

    _act(admin_client, Task, "retry_tasks", [queued.pk])
    queued.refresh_from_db()
    assert queued.status == TaskStatus.QUEUED


def test_work_order_actions(admin_client, worker):
    task = make_task()
    order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    lifecycle.work_order_start(work_order=order, worker=worker)
    _act(admin_client, WorkOrder, "requeue_active_work_orders", [order.pk])
    order.refresh_from_db()
    assert order.status == WorkOrderStatus.QUEUED and order.retry_count == 0
    _act(admin_client, WorkOrder, "cancel_work_orders", [order.pk])
    order.refresh_from_db()
    assert order.status == WorkOrderStatus.CANCELLED
    _act(admin_client, WorkOrder, "retry_failed_work_orders", [order.pk])
    order.refresh_from_db()
    assert order.status == WorkOrderStatus.QUEUED


def test_worker_mark_offline_action(admin_client, worker):
    _act(admin_client, type(worker), "mark_workers_offline", [worker.pk])
    worker.refresh_from_db()
    assert worker.status == WorkerStatus.OFFLINE


def test_status_cannot_be_edited_by_hand(admin_client, seeded):
    url = reverse("admin:tasks_app_task_change", args=[seeded.pk])
    admin_client.post(url, {"title": "renamed", "task_type": "feature", "status": "completed", "executor": ""})
    seeded.refresh_from_db()
    assert seeded.status == TaskStatus.IN_PROGRESS


def test_lifting_a_rate_limit_pause_lets_its_work_start_at_once(admin_client, worker):
    from datetime import timedelta

    from django.utils import timezone

    from agentvine.errors import IllegalTransition
    from queue_app import rate_limits
    from queue_app.models import ConcurrencyKeyPause

    rate_limits.key_pause(key="claude-replay", resets_at=(timezone.now() + timedelta(hours=2)).timestamp(), reason="5h")
    waiting = make_task(title="claude work", executor="claude-replay")
    assert lifecycle.work_order_claim(worker=worker) is None  # waits for the reset

    _act(admin_client, ConcurrencyKeyPause, "lift_the_pause_now", ["claude-replay"])
    assert ConcurrencyKeyPause.objects.get().paused_until <= timezone.now()
    assert lifecycle.work_order_claim(worker=worker).task_id == waiting.id
    # Lifting a pause that is over already is refused, and changes nothing.
    _act(admin_client, ConcurrencyKeyPause, "lift_the_pause_now", ["claude-replay"])
    with pytest.raises(IllegalTransition, match="not paused"):
        rate_limits.key_pause_lift(key="claude-replay")
