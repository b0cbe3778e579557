"""`agentvine tasks create --budget`, `agentvine tasks budget` and `agentvine
spend` against a running server."""

from decimal import Decimal

import pytest

from queue_app import lifecycle
from tasks_app.models import Task, TaskStatus
from tests.factories import run_that_spends

pytestmark = pytest.mark.e2e


def test_a_budget_set_at_creation_and_raised_resumes_a_paused_task_and_spend_shows_it(logged_in, worker):
    cli = logged_in
    created = cli("tasks", "create", "Write the parser", "--budget", "0.05")
    assert created.code == 0, created.err
    task = Task.objects.get(pk=created.out.split()[1])
    assert task.budget_usd == Decimal("0.05")
    run_that_spends(task, "0.06", worker=worker)
    assert lifecycle.work_order_claim_start(worker=worker, work_order_id=None) is None
    assert "paused_budget" in cli("tasks", "show", str(task.pk)).out

    refused = cli("tasks", "budget", str(task.pk), "lots")
    assert refused.code == 1 and "a budget is a dollar figure" in refused.err
    raised = cli("tasks", "budget", str(task.pk), "$2")
    assert raised.code == 0, raised.err
    assert "budget $2.0000" in raised.out
    task.refresh_from_db()
    assert task.budget_usd == Decimal("2") and task.status == TaskStatus.QUEUED

    spend = cli("spend", "--by", "operator", "--days", "1")
    assert spend.code == 0, spend.err
    assert "0.0600" in spend.out and "total $0.06" in spend.out
    assert cli("spend", "--by", "planet").code == 2
