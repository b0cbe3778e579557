"""Remote pull workers are fenced too: the start and heartbeat answers carry
the run's lease, and a write naming an execution that is no longer the live
one (its work was requeued and started again, on this same worker after it
came back) is a 409 with code ``fenced``, with nothing written."""

import pytest

from queue_app import lifecycle
from queue_app.models import Execution, ExecutionStatus, WorkOrder, WorkOrderStatus
from tasks_app.services import task_create

pytestmark = pytest.mark.django_db


def _claim_and_start(client, work_order):
    claimed = client.post("/api/v1/queue/claim/", {"work_order": str(work_order.pk)}, format="json")
    assert claimed.status_code == 200, claimed.content
    started = client.post(f"/api/v1/queue/work-orders/{work_order.pk}/start/", format="json")
    assert started.status_code == 200, started.content
    return started.json()


def test_start_and_heartbeat_answer_the_runs_lease(worker, worker_client):
    work_order = task_create(title="remote lease", executor="ticker").work_orders.get()
    started = _claim_and_start(worker_client, work_order)
    assert started["lease_expires_at"]
    beat = worker_client.post(f"/api/v1/workers/{worker.pk}/heartbeat/", format="json").json()
    assert beat["leases"] == {started["execution"]: beat["leases"][started["execution"]]}
    assert beat["leases"][started["execution"]] >= started["lease_expires_at"]


@pytest.mark.parametrize(
    "action, body",
    [
        ("output", {"seq": 0, "text": "stale line\n"}),
        ("usage", {"input_tokens": 7}),
        ("complete", {"exit_code": 0}),
        ("fail", {"error": "stale failure"}),
    ],
)
def test_a_stale_write_is_409_fenced(worker, worker_client, action, body):
    work_order = task_create(title="remote fenced", executor="ticker").work_orders.get()
    stale = _claim_and_start(worker_client, work_order)
    # A guardian gave up on the worker (cut off) and it took the work again.
    lifecycle.work_order_requeue(work_order=work_order, reason="worker cut off", lost=True)
    live = _claim_and_start(worker_client, work_order)

    answer = worker_client.post(
        f"/api/v1/queue/work-orders/{work_order.pk}/{action}/",
        {**body, "execution": stale["execution"]},
        format="json",
    )
    assert answer.status_code == 409, answer.content
    assert answer.json()["code"] == "fenced"
    run = Execution.objects.get(pk=live["execution"])
    assert (run.status, run.output_chunks, run.input_tokens) == (ExecutionStatus.RUNNING, 0, 0)
    assert WorkOrder.objects.get(pk=work_order.pk).status == WorkOrderStatus.RUNNING
    beat = worker_client.post(f"/api/v1/workers/{worker.pk}/heartbeat/", format="json").json()
    assert list(beat["leases"]) == [live["execution"]]
