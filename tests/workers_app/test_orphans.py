"""Orphans are found by what the rows say, not by silence alone: a run whose
slot moved on, or whose lease its runner stopped renewing, is taken back
while the slot still heartbeats; a run left open after a cancel whose runner
is dead is closed and its slot freed; the questions a run leaves unanswered
are closed with it."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from chat_app import selectors as chat_selectors
from chat_app import services as chat_services
from queue_app import lifecycle
from queue_app.models import Execution, ExecutionStatus, WorkOrder, WorkOrderStatus
from tasks_app.services import task_cancel, task_create
from workers_app import guardians, slots
from workers_app.models import Worker, WorkerStatus
from workers_app.runner import work_order_run

pytestmark = pytest.mark.django_db


def _running(worker, title="work"):
    task = task_create(title=title)
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().pk)
    return lifecycle.work_order_start(work_order=work_order, worker=worker)


def test_work_whose_slot_moved_on_is_taken_back_while_the_slot_heartbeats(worker):
    lost, lost_execution = _running(worker, "lost")
    # The slot's runner crashed out (its task raised) and the slot took other work.
    other, _ = _running(worker, "next")
    assert Worker.objects.get(pk=worker.pk).current_work_order_id == other.pk

    _, requeued = guardians.guard_stalled_workers()

    assert [order.pk for order in requeued] == [lost.pk]
    lost.refresh_from_db()
    assert (lost.status, lost.retry_count, lost.lost_count) == (WorkOrderStatus.QUEUED, 0, 1)
    assert lost.last_error == f"worker {worker.name} is no longer running this work order"
    assert Execution.objects.get(pk=lost_execution.pk).status == ExecutionStatus.FAILED
    # The slot and its current work are left alone.
    assert WorkOrder.objects.get(pk=other.pk).status == WorkOrderStatus.RUNNING
    assert Worker.objects.get(pk=worker.pk).current_work_order_id == other.pk


def test_work_whose_lease_expired_is_taken_back_while_the_slot_heartbeats(worker, other_worker):
    stuck, execution = _running(worker, "stuck")
    healthy, _ = _running(other_worker, "healthy")
    Execution.objects.filter(pk=execution.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    _, requeued = guardians.guard_stalled_workers()

    assert [order.pk for order in requeued] == [stuck.pk]
    assert WorkOrder.objects.get(pk=stuck.pk).last_error == (
        f"the run on worker {worker.name} stopped renewing its lease"
    )
    assert WorkOrder.objects.get(pk=healthy.pk).status == WorkOrderStatus.RUNNING


def test_a_cancelled_run_whose_runner_is_dead_is_closed_and_its_slot_freed(worker, operator):
    work_order, execution = _running(worker, "cancelled")
    question = chat_services.question_ask(work_order=work_order, execution=execution, text="Which branch?")
    assert chat_selectors.pending_question_count() == 1
    task_cancel(task=work_order.task)
    # Nothing happens while the runner may still be stopping its agent.
    guardians.guard_stalled_workers()
    assert Execution.objects.get(pk=execution.pk).status == ExecutionStatus.RUNNING

    # Its runner is gone: the lease it renewed ran out.
    Execution.objects.filter(pk=execution.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    guardians.guard_stalled_workers()

    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.INTERRUPTED and execution.completed_at is not None
    slot = Worker.objects.get(pk=worker.pk)
    assert (slot.status, slot.current_work_order_id) == (WorkerStatus.IDLE, None)
    # Its question left "Waiting for you", and answering it says why.
    question.refresh_from_db()
    assert question.closed_at is not None
    assert chat_selectors.pending_question_count() == 0
    client = APIClient()
    client.force_authenticate(operator)
    reply = client.post(f"/api/v1/chat/questions/{question.pk}/answer/", {"text": "main"}, format="json")
    assert reply.status_code == 409
    assert reply.json()["detail"] == chat_services.ERR_QUESTION_CLOSED


def test_a_completed_run_closes_its_unanswered_questions_in_its_own_statement(worker):
    work_order, execution = _running(worker, "asked and moved on")
    question = chat_services.question_ask(work_order=work_order, execution=execution, text="Proceed?")
    lifecycle.work_order_set_waiting(work_order=work_order, worker=worker, waiting=False)
    work_order.refresh_from_db()

    with CaptureQueriesContext(connection) as captured:
        lifecycle.work_order_complete(work_order=work_order, worker=worker, execution=execution)

    # One statement writes the completion and closes the question; besides it
    # only reads (what the end releases in the task graph, the cached list of
    # limited concurrency keys) and the savepoint of the completion's
    # transaction inside this test's own.
    statements = [query["sql"] for query in captured if not query["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    completing = [sql for sql in statements if '"chat_app_chatmessage"' in sql]
    assert len(completing) == 1 and '"queue_app_workorder"' in completing[0]
    assert all(sql.startswith("SELECT") for sql in statements if sql is not completing[0])

    question.refresh_from_db()
    assert question.closed_at is not None and question.answered_at is None


@pytest.mark.django_db(transaction=True)
def test_a_running_agent_keeps_its_lease_and_its_work(worker):
    task = task_create(title="ticker 2", executor="ticker")
    outcome = {}

    def slot():
        slots._state["worker"] = worker
        try:
            outcome["result"] = work_order_run(work_order_id=str(task.work_orders.get().pk))
        finally:
            connection.close()

    with override_settings(AGENTVINE_LEASE_SECONDS=0.6):
        runner = threading.Thread(target=slot)
        runner.start()
        requeued = []
        while runner.is_alive():
            requeued += guardians.guard_stalled_workers()[1]
            runner.join(timeout=0.2)
    slots._state["worker"] = None

    assert requeued == [] and outcome["result"] == "completed"
    assert list(task.work_orders.get().executions.values_list("status", flat=True)) == [ExecutionStatus.COMPLETED]
