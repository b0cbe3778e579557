"""Fair sharing and aging (queue_app.fairness), with real claims (on
PostgreSQL, and on SQLite in the second pass)."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from queue_app import fairness, lifecycle
from queue_app.models import WorkOrder, WorkOrderStatus
from tasks_app.models import Priority
from tasks_app.selectors import queue_positions
from tasks_app.services import task_create, tasks_create
from workers_app.services import worker_register

pytestmark = [pytest.mark.django_db, pytest.mark.sqlite]

SLOTS = 4


@pytest.fixture(autouse=True)
def _no_preemption(settings):
    settings.AGENTVINE_PREEMPTION_ENABLED = False


def _operator(name):
    return get_user_model().objects.create_user(username=name, password="fair-pass-123")


def _run_next(worker):
    """Claim, start and complete the first work order in line; its task."""
    order = lifecycle.work_order_claim(worker=worker)
    assert order is not None, "nothing in line"
    fresh, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    lifecycle.work_order_complete(work_order=fresh, worker=worker, execution=execution)
    return order.task


def test_an_operator_queueing_after_a_big_backlog_starts_within_two_claims_per_slot():
    a, b = _operator("op-a"), _operator("op-b")
    tasks_create(specs=[{"title": f"A {n}", "executor": "noop"} for n in range(200)], created_by=a)
    tasks_create(specs=[{"title": f"B {n}", "executor": "noop"} for n in range(5)], created_by=b)
    worker = worker_register(name="fair-slot", hostname="test")

    started = [_run_next(worker) for _ in range(2 * SLOTS + 2)]
    b_claims = [index + 1 for index, task in enumerate(started) if task.created_by_id == b.pk]
    a_titles = [task.title for task in started if task.created_by_id == a.pk]
    assert b_claims and b_claims[0] <= 2 * SLOTS, f"B's first start at claim {b_claims[:1]}"
    # The two take turns: B's five within the first ten claims, each operator in its own order.
    assert b_claims == [2, 4, 6, 8, 10], b_claims
    assert a_titles == [f"A {n}" for n in range(5)]


def test_queue_positions_follow_the_fair_line():
    a, b = _operator("op-a"), _operator("op-b")
    tasks_create(specs=[{"title": f"A {n}", "executor": "noop"} for n in range(20)], created_by=a)
    (b_task,) = tasks_create(specs=[{"title": "B 0", "executor": "noop"}], created_by=b)
    # B's only task is second in line, not 21st, and the claim agrees.
    assert queue_positions(task_ids=[b_task.pk]) == {b_task.pk: 2}
    worker = worker_register(name="fair-slot", hostname="test")
    assert [_run_next(worker).pk for _ in range(2)][1] == b_task.pk


def test_low_work_under_a_constant_high_stream_starts_within_twice_the_aging_period(settings):
    settings.AGENTVINE_PRIORITY_AGING_SECONDS = 1.0
    low = task_create(title="low", executor="noop", priority=Priority.LOW)
    task_create(title="high", executor="noop", priority=Priority.HIGH)
    worker = worker_register(name="aging-slot", hostname="test")
    start = timezone.now()
    # The guardian's clock runs 0.25 s a claim: one new high order a claim,
    # so high work never runs out.
    step = 0.25
    started_after = None
    for claim in range(1, 41):
        task_create(title="high", executor="noop", priority=Priority.HIGH)
        fairness.queued_work_age(now=start + timedelta(seconds=claim * step))
        if _run_next(worker).pk == low.pk:
            started_after = claim * step
            break
    assert started_after is not None, "the low order never started under the high stream"
    # Strict priority until it has waited its two periods, then first of the high level.
    assert 2.0 <= started_after <= 2.0 + step, started_after
    order = low.work_orders.get()
    assert order.priority == Priority.LOW  # its label stays; only its place moved


def test_aging_off_keeps_strict_priorities(settings):
    settings.AGENTVINE_PRIORITY_AGING_SECONDS = 0
    task_create(title="low", executor="noop", priority=Priority.LOW)
    later = timezone.now() + timedelta(days=1)
    assert fairness.queued_work_age(now=later) == 0
    assert WorkOrder.objects.get(task__title="low").priority_rank == 2


def test_a_retry_is_placed_anew_and_a_lost_run_keeps_its_place():
    a, b = _operator("op-a"), _operator("op-b")
    first = task_create(title="A first", executor="noop", created_by=a)
    tasks_create(specs=[{"title": f"B {n}", "executor": "noop"} for n in range(3)], created_by=b)
    worker = worker_register(name="fair-slot", hostname="test")
    order = lifecycle.work_order_claim(worker=worker)
    assert order.task_id == first.pk
    # Lost with its worker: back at the head of the line.
    lifecycle.work_order_requeue(work_order=order, reason="worker lost", lost=True)
    again = lifecycle.work_order_claim(worker=worker)
    assert again.task_id == first.pk
    fresh, execution = lifecycle.work_order_start(work_order=again, worker=worker)
    lifecycle.work_order_fail(work_order=fresh, worker=worker, execution=execution, error="boom")
    assert WorkOrder.objects.get(pk=again.pk).status == WorkOrderStatus.QUEUED
    # A retry takes A's next turn: behind B's first, ahead of B's second.
    line = WorkOrder.objects.filter(status=WorkOrderStatus.QUEUED).order_by(*fairness.LINE_ORDER)
    assert list(line.values_list("task__title", flat=True)) == ["B 0", "A first", "B 1", "B 2"]
