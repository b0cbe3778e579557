"""A task's budget stops its agent cooperatively, with its output and
changes kept, and raising the budget resumes it in its session: a real
Celery worker, PostgreSQL, Redis and the stand-in claude CLI
(tests/agents/claude_replay.py), which obeys ``--max-budget-usd`` as the CLI
does."""

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
