"""Prompts of any size reach agents whole (through a file or stdin, never the
command line); over AGENTVINE_MAX_PROMPT_CHARS a task is refused at creation."""

import hashlib

import pytest

from tasks_app.models import Task, TaskStatus
from tasks_app.selectors import execution_output
from tasks_app.services import ERR_PROMPT_TOO_LONG
from tests.conftest import wait_for
from workers_app.runner import task_prompt

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# 1 MiB of text with lines and non-ASCII characters, well over the 128 KiB a
# single command-line argument may have on Linux.
DESCRIPTION = ("Ünïcode line of a long specification, with detail. " * 20 + "\n") * 1030


def _measured(prompt):
    return f"prompt {len(prompt)} chars sha256 {hashlib.sha256(prompt.encode()).hexdigest()}"


def test_a_one_megabyte_prompt_reaches_a_command_agent_and_claude_intact(celery_worker_factory, operator_client):
    assert len(DESCRIPTION) >= 1024 * 1024
    celery_worker_factory(concurrency=2)
    ids = []
    for title, executor in (("Measure by file", "measure"), ("Measure on stdin scenario:measure", "claude-replay")):
        response = operator_client.post(
            "/api/v1/tasks/", {"title": title, "description": DESCRIPTION, "executor": executor}, format="json"
        )
        assert response.status_code == 201, response.content[:300]
        ids.append(response.json()["id"])

    for task_id in ids:
        task = wait_for(
            lambda task_id=task_id: Task.objects.filter(pk=task_id, status=TaskStatus.COMPLETED).first(),
            message="completion",
        )
        assert _measured(task_prompt(task)) in execution_output(execution=task.executions.get())


def test_a_prompt_over_the_limit_is_a_clear_400_and_creates_nothing(operator_client, settings):
    settings.AGENTVINE_MAX_PROMPT_CHARS = 1000

    response = operator_client.post("/api/v1/tasks/", {"title": "Big", "description": "x" * 1001}, format="json")

    assert response.status_code == 400
    assert response.json() == {"description": [ERR_PROMPT_TOO_LONG.format(limit=1000)]}
    assert not Task.objects.exists()
