"""Agent sessions: one live session per task, resumed only after a clean end."""

import pytest

from queue_app import lifecycle
from queue_app.run_sessions import agent_session_open
from tasks_app.services import task_create, task_retry
from workers_app.models import AgentSession, SessionStatus
from workers_app.services import agent_session_set_agent_id, agent_session_terminate
from workers_app.workspaces import workspace_prepare

pytestmark = [pytest.mark.django_db, pytest.mark.sqlite]


def _attempt(task, worker, *, outcome):
    """Run one attempt of the task's work order through the queue services."""
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    session, resume = agent_session_open(task=task, worker=worker)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker, session=session)
    if outcome == "completed":
        lifecycle.work_order_complete(work_order=work_order, worker=worker, execution=execution)
    else:
        lifecycle.work_order_fail(work_order=work_order, worker=worker, execution=execution, error="x", retryable=False)
    return session, resume


def test_first_run_opens_a_new_session(worker):
    task = task_create(title="t")
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)

    session, resume = agent_session_open(task=task, worker=worker)

    assert resume is False
    assert session.task == task and session.worker == worker and session.status == SessionStatus.ACTIVE
    # The run's end gives the session back.
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker, session=session)
    lifecycle.work_order_complete(work_order=work_order, worker=worker, execution=execution)
    session.refresh_from_db()
    assert session.status == SessionStatus.IDLE


def test_completed_session_is_resumed_and_failed_one_restarts(worker):
    task = task_create(title="t")
    first, _ = _attempt(task, worker, outcome="failed")
    first_id = first.session_id

    task_retry(task=task)
    second, resume = _attempt(task, worker, outcome="completed")
    # After a failure the conversation may not exist: fresh id, same row (and workspace).
    assert resume is False
    assert second.pk == first.pk and second.session_id != first_id

    again, resume = agent_session_open(task=task, worker=worker)
    assert resume is True
    assert again.session_id == second.session_id
    assert AgentSession.objects.filter(task=task).count() == 1


def test_agent_reported_id_replaces_the_pre_assigned_one(worker):
    task = task_create(title="t")
    session, _ = agent_session_open(task=task, worker=worker)

    agent_session_set_agent_id(session=session, session_id="thread-0199")

    assert AgentSession.objects.get(pk=session.pk).session_id == "thread-0199"


def test_terminated_session_is_never_reused(worker):
    task = task_create(title="t")
    old, _ = agent_session_open(task=task, worker=worker)
    AgentSession.objects.filter(pk=old.pk).update(status=SessionStatus.TERMINATED)

    new, resume = agent_session_open(task=task, worker=worker)

    assert new.pk != old.pk and resume is False


def test_terminating_a_session_removes_its_workspace(
    worker, origin, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.AGENTVINE_WORKSPACE_ROOT = tmp_path / "workspaces"
    task = task_create(title="t", repository_url=str(origin), branch_name="feature/login")
    path = workspace_prepare(task=task)
    session, _ = agent_session_open(task=task, worker=worker)

    with django_capture_on_commit_callbacks(execute=True):
        agent_session_terminate(session=session, reason="operator closed it")

    assert not path.exists()
    assert AgentSession.objects.get(pk=session.pk).status == SessionStatus.TERMINATED


def test_activity_records_the_agents_own_conversation_id_once_and_refuses_a_taken_one(worker):
    from agentvine.errors import ValidationFailed
    from workers_app.services import agent_session_touch

    first, _ = agent_session_open(task=task_create(title="one"), worker=worker)
    second, _ = agent_session_open(task=task_create(title="two"), worker=worker)

    agent_session_touch(session=first, agent_session_id="codex-thread-1")
    assert AgentSession.objects.get(pk=first.pk).session_id == "codex-thread-1"

    with pytest.raises(ValidationFailed):
        agent_session_touch(session=second, agent_session_id="codex-thread-1")
    assert AgentSession.objects.get(pk=second.pk).session_id == second.session_id
