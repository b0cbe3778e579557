"""Agents ask a human with no configuration, through a real Celery worker and a
real daphne.

The ``claude`` agent is tests/agents/claude_replay.py, a stand-in for the
Claude Code CLI written from its documented stream-json protocol: it starts
the MCP servers of its ``--mcp-config`` over stdio (the ``mcp`` client, as the
CLI does) and refuses tools no ``--allowedTools`` rule allows, as ``-p`` mode
does. The profile under test names only the binary: everything else is the
profile's defaults.
"""

import pytest

from chat_app import selectors, services
from tasks_app.models import Task, TaskStatus
from tasks_app.selectors import execution_output
from tasks_app.services import task_create
from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _finished(task):
    task = Task.objects.get(pk=task.pk)
    return task if task.status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED) else None


def test_claude_with_default_arguments_asks_through_mcp_and_gets_the_answer(
    daphne_server, celery_worker_factory, operator
):
    celery_worker_factory(concurrency=1, extra_env={"AGENTVINE_API_URL": daphne_server.url})
    task = task_create(title="Pick a database scenario:ask", executor="claude-replay", created_by=operator)

    question = wait_for(lambda: selectors.pending_questions().filter(task=task).first(), message="the question")
    assert question.text == "Which database should I use?"
    services.question_answer(
        question=question, answer_text="PostgreSQL", answered_by=services.operator_profile(user=operator)
    )

    task = wait_for(lambda: _finished(task), message="the run's end")
    output = execution_output(execution=task.executions.get())
    assert task.status == TaskStatus.COMPLETED, output
    assert "[tool] mcp__agentvine__ask_human" in output
    assert "The human said: PostgreSQL" in output
