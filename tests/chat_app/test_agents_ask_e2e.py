"""Agents ask a human with no configuration, through a real Celery worker and a
real daphne.

The ``claude`` agent is tests/agents/claude_replay.py, a stand-in for the
Claude Code CLI written from its documented stream-json protocol: it starts
the MCP servers of its ``--mcp-config`` over stdio (the ``mcp`` client, as the
CLI does) and refuses tools no ``--allowedTools`` rule allows, as ``-p`` mode
does. The profile under test names only the binary: everything else is the
profile's defaults.
"""

import os
import time

import pytest

from agentvine.models import LiveEvent
from chat_app import selectors, services
from chat_app.ask_client import ERR_UNREACHABLE
from tasks_app.models import Task, TaskStatus
from tasks_app.selectors import execution_output
from tasks_app.services import task_cancel, task_create
from tests.conftest import wait_for
from tests.faults.services import free_port

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


@pytest.mark.parametrize(
    ("verdict", "expected"),
    [
        ("allow", "Permission granted: ran rm -rf build"),
        ("deny not in this repo", "Permission refused: not in this repo"),
    ],
)
def test_claude_permission_prompts_are_answered_allow_or_deny_by_an_operator(
    daphne_server, celery_worker_factory, operator, verdict, expected
):
    celery_worker_factory(concurrency=1, extra_env={"AGENTVINE_API_URL": daphne_server.url})
    task = task_create(title="Clean up scenario:permission", executor="claude-replay-prompts", created_by=operator)

    question = wait_for(
        lambda: selectors.pending_questions().filter(task=task).first(), message="the permission prompt"
    )
    assert question.text.startswith('Allow Bash with {"command": "rm -rf build"}?')
    services.question_answer(
        question=question, answer_text=verdict, answered_by=services.operator_profile(user=operator)
    )

    task = wait_for(lambda: _finished(task), message="the run's end")
    assert expected in execution_output(execution=task.executions.get())


def _processes_of(work_order_id):
    """(pid, command line) of every process whose environment names the work
    order: what ``ps e`` shows, read from /proc."""
    marker = f"AGENTVINE_WORK_ORDER_ID={work_order_id}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                if marker not in environ.read().split(b"\0"):
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                found.append((int(pid), cmdline.read().replace(b"\0", b" ").decode(errors="replace")))
        except OSError:
            continue
    return found


def test_wrong_api_url_fails_the_run_within_the_connect_limit_and_nothing_survives(celery_worker_factory, operator):
    nobody = f"http://127.0.0.1:{free_port()}"
    celery_worker_factory(concurrency=1, extra_env={"AGENTVINE_API_URL": nobody, "AGENTVINE_ASK_CONNECT_SECONDS": "2"})
    task = task_create(title="Ask scenario:ask with:linger", executor="claude-replay", created_by=operator)
    work_order = task.work_orders.get()
    wait_for(lambda: _processes_of(work_order.id), message="the agent's processes")
    started = time.monotonic()

    task = wait_for(lambda: _finished(task), timeout=20, message="the run's end")

    # The connect limit, plus starting the MCP server (a Python process
    # importing mcp: seconds on a loaded machine) and the runner's next check.
    assert time.monotonic() - started < 2 + 10
    execution = task.executions.get()
    expected = ERR_UNREACHABLE.format(url=nobody, seconds=2)
    assert task.status == TaskStatus.FAILED
    assert expected in execution.error
    assert execution_output(execution=execution).count(f"[agentvine] {expected}\n") == 1
    [failed] = LiveEvent.objects.filter(type="question.failed")
    assert failed.payload["text"] == expected
    assert _processes_of(work_order.id) == []


def test_cancel_while_asking_leaves_no_mcp_server_or_background_job(daphne_server, celery_worker_factory, operator):
    celery_worker_factory(
        concurrency=1,
        extra_env={"AGENTVINE_API_URL": daphne_server.url, "AGENTVINE_INTERRUPT_GRACE_SECONDS": "1"},
    )
    task = task_create(title="Ask scenario:ask with:linger", executor="claude-replay", created_by=operator)
    wait_for(lambda: selectors.pending_questions().filter(task=task).first(), message="the question")
    work_order = task.work_orders.get()
    assert any("chat_app.mcp_server" in command for _, command in _processes_of(work_order.id))

    task_cancel(task=task)

    wait_for(lambda: task.executions.get().completed_at, message="the attempt's end")
    assert wait_for(lambda: not _processes_of(work_order.id), timeout=5, message="no process left")
