"""A task's budget stops its agent cooperatively, with its output and
changes kept, and raising the budget resumes it in its session: a real
Celery worker, PostgreSQL, Redis and the stand-in claude CLI
(tests/agents/claude_replay.py), which obeys ``--max-budget-usd`` as the CLI
does."""

import json
from decimal import Decimal

import pytest

from queue_app.models import ExecutionStatus, WorkOrderStatus
from tasks_app.models import Task, TaskStatus
from tasks_app.selectors import execution_output
from tasks_app.services import task_create, task_update
from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _status(task):
    return Task.objects.values_list("status", flat=True).get(pk=task.pk)


def _files(execution):
    return sorted(entry["path"] for entry in execution.changed_files)


def test_a_spent_budget_stops_the_agent_after_the_third_turn_and_raising_it_resumes_the_session(
    celery_worker_factory, operator
):
    celery_worker_factory(concurrency=1)
    task = task_create(
        title="Write the parser scenario:budget turns:5 cost:0.02",
        executor="claude-replay",
        created_by=operator,
        budget_usd="0.05",
    )
    wait_for(lambda: _status(task) == TaskStatus.PAUSED_BUDGET, timeout=40, message="the task paused on its budget")
    order = task.work_orders.get()
    assert order.status == WorkOrderStatus.PAUSED
    assert order.retry_count == 0
    assert "budget $0.05 spent ($0.0600)" in order.last_error
    first = order.executions.get()
    assert first.status == ExecutionStatus.INTERRUPTED
    # Three turns of $0.02: the agent stopped at the line, not after all five.
    assert first.cost_usd == Decimal("0.06")
    assert _files(first) == ["turn-1.txt", "turn-2.txt", "turn-3.txt"]  # its changes kept, as a commit
    assert first.head_commit
    output = execution_output(execution=first)
    assert "finished turn 3" in output and "finished turn 4" not in output

    task_update(task=task, budget_usd="0.20")
    wait_for(lambda: _status(task) == TaskStatus.COMPLETED, timeout=40, message="the task resumed and completed")
    second = order.executions.exclude(pk=first.pk).get()
    assert second.status == ExecutionStatus.COMPLETED
    assert second.session_id == first.session_id
    assert f"Resumed session {first.session.session_id} after turn 3" in execution_output(execution=second)
    # It went on from the fourth turn on the branch the first run left.
    assert _files(second) == [f"turn-{n}.txt" for n in range(1, 6)]
    assert second.cost_usd == Decimal("0.04")
    order.refresh_from_db()
    assert order.retry_count == 0 and order.status == WorkOrderStatus.COMPLETED


class _AskingChatServer:
    """A chat-completions server (the OpenAI streaming protocol, as
    tests/workers_app/test_openai_executor.py's) whose model asks a human on
    every turn: 40 prompt tokens a call, $0.02 at the profile's price."""

    def __new__(cls):
        from tests.workers_app.test_openai_executor import ChatServer, delta_chunk, sse
        from workers_app.executors.openai import ASK_HUMAN

        class Asking(ChatServer):
            def reply(self, messages):
                turn = sum(1 for message in messages if message["role"] == "tool") + 1
                call = {"index": 0, "id": f"call_{turn}", "type": "function"}
                call["function"] = {"name": ASK_HUMAN, "arguments": json.dumps({"question": f"Step {turn}: go on?"})}
                yield sse(delta_chunk({"role": "assistant", "content": f"step {turn} done. "}))
                yield sse(delta_chunk({"tool_calls": [call]}))
                yield sse(delta_chunk({}, finish="tool_calls"))
                usage = {"prompt_tokens": 40, "completion_tokens": 0, "total_tokens": 40}
                yield sse({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": usage})

        return Asking()


def test_an_agent_reporting_usage_turn_by_turn_is_stopped_by_the_platform_at_its_budget(
    celery_worker_factory, operator, settings
):
    """An OpenAI-compatible agent cannot stop itself at a budget: the runner
    checks each usage report and stops it cooperatively once the task's
    budget is spent, after the third $0.02 turn of a $0.05 budget."""
    from chat_app.models import ChatMessage
    from chat_app.services import operator_profile, question_answer
    from tests.workers_app.test_openai_executor import API_KEY

    server = _AskingChatServer()
    try:
        profiles = {
            **settings.AGENTVINE_EXECUTORS,
            "asker": {
                "type": "openai",
                "base_url": server.base_url,
                "model": "local-model",
                "api_key": API_KEY,
                "usd_per_million_input": 500.0,
            },
        }
        celery_worker_factory(concurrency=1, extra_env={"AGENTVINE_EXECUTORS_JSON": json.dumps(profiles)})
        settings.AGENTVINE_EXECUTORS = profiles
        task = task_create(title="Step by step", executor="asker", created_by=operator, budget_usd="0.05")
        for step in (1, 2):
            question = wait_for(
                lambda s=step: ChatMessage.objects.filter(task=task, text__startswith=f"Step {s}:").first(),
                timeout=30,
                message=f"the agent's question of step {step}",
            )
            question_answer(question=question, answer_text="yes", answered_by=operator_profile(user=operator))
        wait_for(lambda: _status(task) == TaskStatus.PAUSED_BUDGET, timeout=30, message="the task paused on its budget")
        run = task.executions.get()
        assert run.status == ExecutionStatus.INTERRUPTED
        assert run.cost_usd == Decimal("0.06")  # three calls: stopped at the third, not left asking a fourth time
        assert len(server.requests) == 3
        assert "step 3 done" in execution_output(execution=run)
        order = task.work_orders.get()
        assert order.status == WorkOrderStatus.PAUSED and "budget $0.05 spent ($0.0600)" in order.last_error
    finally:
        server.close()
