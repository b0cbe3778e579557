"""A run whose work order was requeued and started on another worker while it
still ran (its host cut off, say) ends without touching the run that replaced
it: the new run's agent token keeps working and the task's agent session stays
active on the new worker. The run's end is keyed by its execution, not by its
work order (queue_app.lifecycle, queue_app.credentials)."""

import threading

import pytest
from django.db import connection

from queue_app import credentials, lifecycle
from queue_app.models import Execution, ExecutionStatus
from tasks_app.services import task_create
from tests.conftest import wait_for
from workers_app import slots
from workers_app.models import SessionStatus
from workers_app.runner import RUNNABLE_KINDS, work_order_run


@pytest.mark.django_db(transaction=True)
def test_a_stale_run_ends_without_touching_the_run_that_replaced_it(worker, other_worker):
    task = task_create(title="ticker 30", executor="ticker")
    work_order = task.work_orders.get()
    outcome = {}

    def stale_slot():
        # This thread is the slot of ``worker``, running the agent for real.
        slots._state["worker"] = worker
        try:
            outcome["result"] = work_order_run(work_order_id=str(work_order.pk))
        finally:
            connection.close()

    runner = threading.Thread(target=stale_slot)
    runner.start()
    try:
        stale = wait_for(
            lambda: Execution.objects.filter(work_order=work_order, worker=worker, output_chunks__gt=0).first(),
            message="the first run's agent printing",
        )
        # A guardian gives up on the first worker and the work runs elsewhere.
        lifecycle.work_order_requeue(work_order=work_order, reason="worker cut off", lost=True)
        _, live, session, _ = lifecycle.work_order_claim_start(
            worker=other_worker, work_order_id=work_order.pk, session_kinds=RUNNABLE_KINDS
        )
    finally:
        runner.join(timeout=30)
        slots._state["worker"] = None
    assert not runner.is_alive() and outcome["result"] == "interrupted"

    stale.refresh_from_db()
    assert stale.status == ExecutionStatus.FAILED  # closed as lost by the requeue
    # The replacement run is untouched by the stale run's end.
    assert credentials.agent_token_resolve(token=live.agent_token) is not None
    session.refresh_from_db()
    assert (session.status, session.worker_id) == (SessionStatus.ACTIVE, other_worker.pk)
    work_order.refresh_from_db()
    assert (work_order.status, work_order.worker_id) == ("running", other_worker.pk)
