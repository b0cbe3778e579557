"""Agent executors end to end through a real Celery worker, PostgreSQL and Redis."""

from decimal import Decimal

import pytest

from queue_app.models import ExecutionStatus, WorkOrderStatus
from tasks_app.models import Task, TaskStatus
from tasks_app.selectors import execution_output, task_usage
from tasks_app.services import task_cancel, task_create, task_retry
from tests.conftest import wait_for
from workers_app.models import AgentSession, SessionStatus

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _status(task):
    return Task.objects.get(pk=task.pk).status


def test_claude_task_completes_in_its_worktree_with_usage_cost_and_session(celery_worker_factory, operator, origin):
    celery_worker_factory(concurrency=2)
    task = task_create(
        title="Fix the flaky test",
        executor="claude-replay",
        repository_url=f"file://{origin}",
        branch_name="feature/login",
        created_by=operator,
    )
    broken = task_create(title="Needs claude", executor="claude-missing", created_by=operator)

    wait_for(lambda: _status(task) == TaskStatus.COMPLETED, message="claude task completion")
    wait_for(lambda: _status(broken) == TaskStatus.FAILED, message="misconfigured task failure")

    execution = task.executions.get()
    assert execution.status == ExecutionStatus.COMPLETED
    assert (execution.input_tokens, execution.output_tokens) == (150, 50)
    assert execution.cost_usd == Decimal("0.012300")
    output = execution_output(execution=execution)
    assert "[tool] Bash" in output
    # The agent worked in a checkout of the task's branch.
    assert "[tool result] README.md\nlogin.py" in output
    assert output.rstrip().endswith("Done: Fix the flaky test")
    session = execution.session
    assert f"[claude] session {session.session_id} (claude-replay)" in output
    assert session.task_id == task.id
    # Released just after the work order completes.
    wait_for(lambda: AgentSession.objects.get(pk=session.pk).status == SessionStatus.IDLE, message="session idle")
    assert task_usage(task=task) == {
        "executions": 1,
        "input_tokens": 150,
        "output_tokens": 50,
        "cost_usd": Decimal("0.012300"),
    }

    # A missing binary fails at once with one sentence, without retries.
    work_order = broken.work_orders.get()
    assert work_order.status == WorkOrderStatus.FAILED
    assert work_order.retry_count == 0
    assert work_order.last_error == "agent command not found: /nonexistent/claude"


def test_cancelled_claude_task_is_interrupted_cooperatively_and_resumed_on_retry(celery_worker_factory, operator):
    celery_worker_factory(concurrency=1)
    task = task_create(title="Long refactor scenario:slow", executor="claude-replay", created_by=operator)
    wait_for(
        lambda: (
            "working step 5" in execution_output(execution=task.executions.get()) if task.executions.exists() else False
        ),
        message="agent working",
    )

    task_cancel(task=task)

    execution = wait_for(
        lambda: task.executions.exclude(status=ExecutionStatus.RUNNING).first(), timeout=10, message="interrupt"
    )
    assert execution.status == ExecutionStatus.INTERRUPTED
    output = execution_output(execution=execution)
    assert "working step 5" in output
    # Stopped by the control request within the status-check period, not by the kill after the grace time.
    assert "working step 120" not in output
    assert execution.cost_usd == Decimal("0.012300")

    # Retrying continues the saved conversation in the same session and workspace.
    task_retry(task=task)
    wait_for(lambda: _status(task) == TaskStatus.COMPLETED, message="resumed run completion")
    resumed = task.executions.get(attempt=2)
    assert resumed.session_id == execution.session_id
    output = execution_output(execution=resumed)
    assert f"Resumed session {execution.session.session_id} with 2 earlier messages" in output
    assert "working step" not in output
    assert task_usage(task=task)["cost_usd"] == Decimal("0.024600")


def test_codex_task_records_its_own_thread_id_and_priced_usage(celery_worker_factory, operator, origin):
    celery_worker_factory(concurrency=1)
    task = task_create(title="Write notes", executor="codex-replay", repository_url=str(origin), created_by=operator)

    wait_for(lambda: _status(task) == TaskStatus.COMPLETED, message="codex task completion")

    execution = task.executions.get()
    assert (execution.input_tokens, execution.output_tokens) == (1200, 340)
    assert execution.cost_usd == Decimal("0.004900")
    output = execution_output(execution=execution)
    # Codex chose the conversation id; the session now carries it for a resume.
    session = AgentSession.objects.get(pk=execution.session_id)
    assert f"[codex] thread {session.session_id}\n" in output
    assert "[files] add CODEX_NOTES.md" in output


def test_a_message_to_a_finished_codex_agent_resumes_its_thread_on_a_new_turn(celery_worker_factory, operator, origin):
    from chat_app.models import ChatMessage, DeliveryStatus
    from chat_app.services import operator_message_send
    from queue_app.models import WorkOrderKind

    celery_worker_factory(concurrency=1)
    task = task_create(title="Write notes", executor="codex-replay", repository_url=str(origin), created_by=operator)
    wait_for(lambda: _status(task) == TaskStatus.COMPLETED, message="codex task completion")
    thread = AgentSession.objects.get(task=task).session_id

    first = operator_message_send(user=operator, conversation_id=str(task.pk), text="Add a CHANGELOG entry too")
    second = operator_message_send(user=operator, conversation_id=str(task.pk), text="and keep it short")

    def turns_done():
        delivered = not ChatMessage.objects.filter(pk__in=[first.pk, second.pk], status=DeliveryStatus.QUEUED).exists()
        turns = task.work_orders.filter(kind=WorkOrderKind.DELIVER_MESSAGE)
        return delivered and turns.exists() and not turns.exclude(status=WorkOrderStatus.COMPLETED).exists()

    wait_for(turns_done, message="the agent's turn for the messages")
    # One turn takes what is queued when it starts; a message that arrives
    # during a turn gets the next one.
    turns = list(task.executions.filter(work_order__kind=WorkOrderKind.DELIVER_MESSAGE).order_by("started_at"))
    assert 1 <= len(turns) <= 2
    output = execution_output(execution=turns[0])
    # The same codex thread, continued; the messages in order are its prompt.
    assert f"Resumed thread {thread} with 2 earlier messages" in output
    assert f"Done: {operator.username}: Add a CHANGELOG entry too" in output
    assert _status(task) == TaskStatus.COMPLETED
