"""An agent splits its task into subtasks and waits for them, on real Celery
workers, daphne (the agent's API) and PostgreSQL."""

import json
import sys
from pathlib import Path

import pytest

from queue_app.models import WorkOrder, WorkOrderKind
from tasks_app.models import Task, TaskDependency, TaskStatus
from tasks_app.selectors import execution_output
from tasks_app.services import task_create
from tests.chat_app.conftest import DaphneServer
from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

AGENT = Path(__file__).resolve().parents[1] / "agents" / "subtasker.py"
PROFILE = {"subtasker": {"type": "command", "command": [sys.executable, str(AGENT), "{prompt}"]}}


def test_command_agent_makes_three_subtasks_waits_and_resumes_once_with_their_summaries(
    celery_worker_factory, operator, settings, tmp_path
):
    settings.AGENTVINE_EXECUTORS = {**settings.AGENTVINE_EXECUTORS, **PROFILE}
    # The web process creates the subtasks: it must know their executor profile too.
    daphne_server = DaphneServer(tmp_path / "daphne.log", extra_env={"AGENTVINE_EXECUTORS_JSON": json.dumps(PROFILE)})
    try:
        _make_three_and_resume(celery_worker_factory, daphne_server, operator)
    finally:
        daphne_server.stop()


def _make_three_and_resume(celery_worker_factory, daphne_server, operator):
    celery_worker_factory(
        concurrency=2,
        extra_env={"AGENTVINE_API_URL": daphne_server.url, "AGENTVINE_EXECUTORS_JSON": json.dumps(PROFILE)},
    )
    parent = task_create(title="Build the formatter", executor="subtasker", created_by=operator)

    wait_for(lambda: Task.objects.filter(spawned_by=parent).count() == 3, timeout=60, message="three subtasks")
    turns = WorkOrder.objects.filter(task=parent, kind=WorkOrderKind.DELIVER_MESSAGE)
    wait_for(lambda: turns.filter(status="completed").exists(), timeout=60, message="the resumed turn")

    subtasks = list(Task.objects.filter(spawned_by=parent).order_by("created_at"))
    assert [t.title for t in subtasks] == ["Part 1", "Part 2", "Part 3"]
    assert all(t.status == TaskStatus.COMPLETED for t in subtasks)
    assert all(t.created_by_agent == "agent of 'Build the formatter' (attempt 1)" for t in subtasks)
    assert all(t.created_by == operator and t.executor == "subtasker" for t in subtasks)
    assert TaskDependency.objects.get(child=subtasks[2]).parent == subtasks[0]

    first_run, resumed = parent.executions.order_by("started_at")
    assert "still running. End your turn now" in execution_output(execution=first_run)
    # The slot was freed: the parent's first run ended before its subtasks did.
    assert first_run.completed_at <= min(t.executions.get().started_at for t in subtasks[2:])
    # Resumed once, in the same agent session, with every summary.
    assert turns.count() == 1
    assert resumed.session_id == first_run.session_id
    output = execution_output(execution=resumed)
    assert output.startswith("resumed with: AgentVine: Your 3 subtasks have ended.")
    for part in ("Part 1", "Part 2", "Part 3"):
        assert f"summary: {part} is done" in output
    parent.refresh_from_db()
    assert not parent.awaiting_subtasks
