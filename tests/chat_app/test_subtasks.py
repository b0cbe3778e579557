"""Subtasks through the agent API: limits, siblings only, the agent's own task only,
and the resume message sent once when the last subtask ends."""

import pytest
from rest_framework.test import APIClient

from chat_app.models import ChatMessage
from chat_app.subtasks import SUMMARY_HEADER
from queue_app import credentials, lifecycle
from queue_app.models import WorkOrder, WorkOrderKind
from tasks_app.models import Task
from tasks_app.services import task_cancel, task_create

pytestmark = pytest.mark.django_db


def agent_client(operator, worker, title="parent"):
    task = task_create(title=title, created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Agent {credentials.agent_token_issue(work_order=work_order, execution=execution)}"
    )
    return task, work_order, execution, client


def test_subtasks_are_children_attributed_to_the_agent_and_limited(operator, worker, settings):
    settings.AGENTVINE_MAX_SUBTASKS = 2
    parent, _, _, client = agent_client(operator, worker)

    first = client.post("/api/v1/chat/agent/subtasks/", {"title": "one"}, format="json")
    second = client.post(
        "/api/v1/chat/agent/subtasks/", {"title": "two", "depends_on": [first.json()["id"]]}, format="json"
    )
    third = client.post("/api/v1/chat/agent/subtasks/", {"title": "three"}, format="json")

    assert first.status_code == 201 and first.json()["status"] == "queued"
    assert second.status_code == 201 and second.json()["status"] == "blocked"
    assert third.status_code == 409 and "AGENTVINE_MAX_SUBTASKS" in str(third.json())
    children = Task.objects.filter(spawned_by=parent)
    assert children.count() == 2
    assert {c.created_by_agent for c in children} == {"agent of 'parent' (attempt 1)"}


def test_depends_on_only_own_subtasks_and_operators_cannot_use_agent_endpoints(operator, worker, other_worker):
    _, _, _, client = agent_client(operator, worker)
    stranger = task_create(title="someone else's")

    refused = client.post(
        "/api/v1/chat/agent/subtasks/", {"title": "x", "depends_on": [str(stranger.pk)]}, format="json"
    )
    assert refused.status_code == 400 and "only subtasks of this task" in str(refused.json())
    operator_client = APIClient()
    operator_client.force_authenticate(operator)
    assert operator_client.post("/api/v1/chat/agent/subtasks/", {"title": "x"}, format="json").status_code == 403
    assert APIClient().post("/api/v1/chat/agent/subtasks/wait/").status_code == 401
    assert Task.objects.filter(title="x").count() == 0


def test_wait_then_the_last_subtask_ending_sends_one_summary_message(
    operator, worker, django_capture_on_commit_callbacks
):
    parent, work_order, execution, client = agent_client(operator, worker)
    assert client.post("/api/v1/chat/agent/subtasks/wait/").status_code == 409  # nothing to wait for
    ids = [client.post("/api/v1/chat/agent/subtasks/", {"title": t}, format="json").json()["id"] for t in "AB"]
    waited = client.post("/api/v1/chat/agent/subtasks/wait/").json()
    assert waited == {"waiting": True, "pending": 2, "summary": ""}
    lifecycle.work_order_complete(work_order=work_order, worker=worker, execution=execution)

    task_cancel(task=Task.objects.get(pk=ids[0]))
    assert not ChatMessage.objects.filter(task=parent, text__startswith="Your 2").exists()
    with django_capture_on_commit_callbacks(execute=True):
        task_cancel(task=Task.objects.get(pk=ids[1]))

    sent = ChatMessage.objects.filter(task=parent, text__startswith=SUMMARY_HEADER.format(count=2)[:12])
    assert sent.count() == 1
    assert "1. A [cancelled]" in sent.get().text and "2. B [cancelled]" in sent.get().text
    assert WorkOrder.objects.filter(task=parent, kind=WorkOrderKind.DELIVER_MESSAGE).count() == 1
    assert not Task.objects.get(pk=parent.pk).awaiting_subtasks
