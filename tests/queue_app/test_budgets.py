"""Budgets (queue_app.budgets) on real PostgreSQL: a spent task budget pauses
its work at the claim, raising it resumes the work in its place; daily
budgets make work wait for the next day."""

import subprocess
import sys
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from queue_app import budgets, lifecycle
from queue_app.models import WorkOrderStatus
from tasks_app.models import TaskStatus, TaskType
from tasks_app.services import task_create, task_update
from tests.conftest import ROOT, child_environ
from tests.factories import run_that_spends
from workers_app.services import worker_register

pytestmark = [pytest.mark.django_db, pytest.mark.sqlite]


def _slot(name="slot-a"):
    return worker_register(name=name, hostname="test")


def test_a_spent_task_budget_pauses_its_work_at_the_claim_and_raising_it_resumes_it(operator):
    slot = _slot()
    task = task_create(title="Port the parser", created_by=operator, budget_usd="0.05")
    order = run_that_spends(task, "0.06", worker=slot)

    assert lifecycle.work_order_claim_start(worker=slot, work_order_id=None) is None
    order.refresh_from_db()
    task.refresh_from_db()
    assert order.status == WorkOrderStatus.PAUSED
    assert task.status == TaskStatus.PAUSED_BUDGET
    assert "budget $0.05 spent ($0.0600)" in order.last_error
    assert order.retry_count == 0
    assert task.executions.count() == 1  # no agent started for the refused claim

    # Raised, but not above what it spent: still paused.
    task_update(task=task, budget_usd="0.06")
    order.refresh_from_db()
    assert order.status == WorkOrderStatus.PAUSED

    task = task_update(task=task, budget_usd="0.25")
    order.refresh_from_db()
    assert task.budget_usd == Decimal("0.25")
    assert order.status == WorkOrderStatus.QUEUED and task.status == TaskStatus.QUEUED
    resumed, _, _, _ = lifecycle.work_order_claim_start(worker=slot, work_order_id=None)
    assert resumed.pk == order.pk and resumed.retry_count == 0
    assert budgets.remaining(task) == Decimal("0.19")


def test_fail_instead_of_pause_when_configured(settings, operator):
    settings.AGENTVINE_BUDGET_EXCEEDED = "fail"
    slot = _slot()
    task = task_create(title="Port the parser", created_by=operator, budget_usd="0.05")
    order = run_that_spends(task, "0.05", worker=slot)
    assert lifecycle.work_order_claim_start(worker=slot, work_order_id=None) is None
    order.refresh_from_db()
    task.refresh_from_db()
    assert order.status == WorkOrderStatus.FAILED
    assert task.status == TaskStatus.FAILED
    assert "budget $0.05 spent" in order.last_error


def test_an_operators_daily_budget_makes_their_work_wait_for_the_next_day(settings, operator, django_user_model):
    settings.AGENTVINE_OPERATOR_DAILY_BUDGET_USD = 1.0
    slot = _slot()
    first = task_create(title="First", created_by=operator)
    run_that_spends(first, "1.00", worker=slot)
    lifecycle.work_order_cancel(work_order=first.work_orders.get())
    later = task_create(title="Later", created_by=operator, budget_usd="10")  # its own budget is not the limit
    colleague = django_user_model.objects.create_user(username="colleague")
    theirs = task_create(title="Theirs", created_by=colleague)

    before = timezone.now()
    assert lifecycle.work_order_claim_start(worker=slot, work_order_id=None) is None
    waiting = later.work_orders.get()
    assert waiting.status == WorkOrderStatus.QUEUED
    assert waiting.not_before == budgets.next_day(before)
    assert waiting.not_before - before <= timedelta(days=1)
    assert "operator's daily budget $1.00 spent" in waiting.last_error
    # Another operator's work runs.
    order, _, _, _ = lifecycle.work_order_claim_start(worker=slot, work_order_id=None)
    assert order.task_id == theirs.pk


def test_the_daily_budget_for_everyone_holds_all_work(settings, operator):
    settings.AGENTVINE_DAILY_BUDGET_USD = 0.5
    slot = _slot()
    first = task_create(title="First", created_by=operator)
    run_that_spends(first, "0.50", worker=slot)
    assert lifecycle.work_order_claim_start(worker=slot, work_order_id=None) is None
    held = first.work_orders.get()
    assert held.status == WorkOrderStatus.QUEUED and held.not_before > timezone.now() + timedelta(seconds=1)
    assert "daily budget $0.50 spent" in held.last_error
    # The pull API's claim obeys the same budget.
    task_create(title="Second", created_by=operator)
    assert lifecycle.work_order_claim(worker=_slot("pull-1")) is None


def test_a_new_task_gets_its_types_default_budget(settings, operator):
    settings.AGENTVINE_TASK_BUDGET_USD = "feature=5,docs=0.5,default=2"
    assert task_create(title="f", created_by=operator).budget_usd == Decimal("5")
    assert task_create(title="d", task_type=TaskType.DOCS, created_by=operator).budget_usd == Decimal("0.5")
    assert task_create(title="t", task_type=TaskType.TEST, created_by=operator).budget_usd == Decimal("2")
    assert task_create(title="n", created_by=operator, budget_usd=None).budget_usd is None
    settings.AGENTVINE_TASK_BUDGET_USD = "3"
    assert task_create(title="any", task_type=TaskType.BUGFIX, created_by=operator).budget_usd == Decimal("3")
    # A malformed setting stops the process at start, naming it.
    check = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={
            **child_environ(),
            "DJANGO_SETTINGS_MODULE": "agentvine.settings_test",
            "AGENTVINE_TASK_BUDGET_USD": "feature=lots",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode != 0
    assert "AGENTVINE_TASK_BUDGET_USD must be a dollar figure or type=figure pairs" in check.stderr


def test_every_usage_report_adds_to_its_days_spend_and_a_run_counts_once(operator, worker):
    from queue_app.models import SpendDay
    from queue_app.outputs import execution_record_usage

    task = task_create(title="Chatty", created_by=operator, executor="noop", repository_url="https://git.example.com/a")
    _, execution, _, _ = lifecycle.work_order_claim_start(worker=worker, work_order_id=None)
    for cost in ("0.01", "0.02", "0.03"):
        execution_record_usage(execution=execution, input_tokens=10, output_tokens=2, cost_usd=Decimal(cost))
    row = SpendDay.objects.get()
    assert (row.operator_id, row.executor, row.repository) == (operator.pk, "noop", task.repository_url)
    assert (row.cost_usd, row.runs, row.input_tokens, row.output_tokens) == (Decimal("0.06"), 1, 30, 6)
    assert row.day == budgets.day_start().date()
    assert budgets.spent_today() == Decimal("0.06")


def test_a_doorbell_for_the_next_day_rings_within_a_runs_time_limit(settings, clean_broker, operator):
    """A Redis broker hands a doorbell held past its visibility timeout to
    another worker again: a wait until midnight is rung in steps no longer
    than a run's time limit (the early ring rings again for the rest)."""
    import json

    from django.utils import timezone

    from queue_app import dispatch

    task = task_create(title="Tomorrow", created_by=operator)
    order = task.work_orders.get()
    before = timezone.now()
    assert dispatch.work_order_dispatch(work_order_id=order.pk, countdown=20 * 3600)
    message = json.loads(clean_broker.lrange("default", 0, -1)[-1])
    eta = timezone.datetime.fromisoformat(message["headers"]["eta"])
    assert message["headers"]["id"] and eta - before <= timezone.timedelta(
        seconds=settings.AGENTVINE_MAX_RUN_SECONDS + 5
    )
    assert eta - before >= timezone.timedelta(seconds=settings.AGENTVINE_MAX_RUN_SECONDS - 5)
