"""Workers and sessions pages show what an operator needs to act on."""

import pytest
from django.urls import reverse

from queue_app import lifecycle
from tests.factories import make_task
from workers_app.models import AgentSession, SessionStatus
from workers_app.services import worker_mark_offline

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


def test_workers_page_shows_status_current_work_and_filters(operator_client, worker, other_worker):
    task = make_task(title="Refactor the parser")
    order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    lifecycle.work_order_start(work_order=order, worker=worker)
    worker_mark_offline(worker=other_worker)

    page = operator_client.get(reverse("worker-list")).content.decode()
    assert worker.name in page and other_worker.name in page
    assert "Refactor the parser" in page
    assert "status-busy" in page and "status-offline" in page

    offline_only = operator_client.get(reverse("worker-list"), {"status": "offline"}).content.decode()
    assert other_worker.name in offline_only and worker.name not in offline_only


def test_sessions_page_lists_sessions_with_task_and_worker(operator_client, worker):
    task = make_task(title="Long conversation")
    AgentSession.objects.create(session_id="claude-abc-123", worker=worker, task=task)
    AgentSession.objects.create(
        session_id="old-session", worker=worker, status=SessionStatus.TERMINATED, termination_reason="idle 30 min"
    )
    page = operator_client.get(reverse("session-list")).content.decode()
    assert "claude-abc-123" in page and "Long conversation" in page and worker.name in page
    assert "idle 30 min" in page
    active = operator_client.get(reverse("session-list"), {"status": "active"}).content.decode()
    assert "claude-abc-123" in active and "old-session" not in active


def test_terminate_session_from_the_page(
    operator_client, worker, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.AGENTVINE_WORKSPACE_ROOT = tmp_path
    task = make_task(title="Chatty agent")
    workspace = tmp_path / str(task.id)
    workspace.mkdir()
    (workspace / "notes.txt").write_text("work in progress")
    session = AgentSession.objects.create(session_id="sess-to-end", worker=worker, task=task)

    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(reverse("session-terminate", kwargs={"session_id": session.id}), follow=True)

    session.refresh_from_db()
    assert session.status == SessionStatus.TERMINATED
    assert "terminated by" in session.termination_reason
    assert "Session sess-to-end terminated" in response.content.decode()
    assert not workspace.exists()
    again = operator_client.post(reverse("session-terminate", kwargs={"session_id": session.id}), follow=True)
    assert "Cannot terminate" in again.content.decode()


def test_terminate_needs_an_operator(client, worker):
    session = AgentSession.objects.create(session_id="sess-keep", worker=worker)
    client.post(reverse("session-terminate", kwargs={"session_id": session.id}))
    session.refresh_from_db()
    assert session.status == SessionStatus.ACTIVE


def test_empty_states_explain_what_to_do(operator_client):
    assert "celery -A agentvine worker" in operator_client.get(reverse("worker-list")).content.decode()
    assert "No agent sessions" in operator_client.get(reverse("session-list")).content.decode()
