"""work_order_interrupted: a worker's run of work that moved on ends interrupted."""

import pytest

from agentvine.errors import IllegalTransition
from queue_app import lifecycle
from queue_app.credentials import agent_token_resolve
from queue_app.models import ExecutionStatus
from tasks_app.services import task_create
from workers_app.models import WorkerStatus

pytestmark = [pytest.mark.django_db, pytest.mark.sqlite]


def _running(worker):
    task = task_create(title="interrupt me")
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().pk)
    return lifecycle.work_order_start(work_order=work_order, worker=worker)


def test_a_cancelled_run_ends_interrupted_its_token_dies_and_the_worker_is_idle(worker):
    work_order, execution = _running(worker)
    assert agent_token_resolve(token=execution.agent_token) is not None
    lifecycle.work_order_cancel(work_order=work_order)

    closed = lifecycle.work_order_interrupted(work_order=work_order, worker=worker, reason="stopped on cancel")

    assert closed.pk == execution.pk
    assert (closed.status, closed.error) == (ExecutionStatus.INTERRUPTED, "stopped on cancel")
    assert agent_token_resolve(token=execution.agent_token) is None
    worker.refresh_from_db()
    assert (worker.status, worker.current_work_order_id) == (WorkerStatus.IDLE, None)


def test_a_run_still_active_on_its_worker_cannot_be_called_interrupted(worker):
    work_order, execution = _running(worker)

    with pytest.raises(IllegalTransition, match="still active"):
        lifecycle.work_order_interrupted(work_order=work_order, worker=worker)

    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.RUNNING


def test_another_worker_has_no_attempt_to_interrupt(worker, other_worker):
    work_order, _ = _running(worker)
    lifecycle.work_order_cancel(work_order=work_order)

    with pytest.raises(IllegalTransition, match="no running attempt"):
        lifecycle.work_order_interrupted(work_order=work_order, worker=other_worker)


def test_a_requeued_orders_old_token_does_not_work_for_its_next_run(worker):
    work_order, execution = _running(worker)

    lifecycle.work_order_requeue(work_order=work_order, reason="worker stalled")

    assert agent_token_resolve(token=execution.agent_token) is None
