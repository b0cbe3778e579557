"""Self-fencing of a Celery slot: a run that cannot renew its lease for
AGENTVINE_FENCE_SECONDS stops its agent by itself and abandons the run,
touching nothing (a guardian requeues the work; the run that replaces it must
not be hurt by this one's end).

The slot's database connection runs through a TCP proxy that the test makes
silent (tests/faults/tcp_proxy.py): every open connection stops carrying data
and stays open, as after a network cut, so the runner's next query hangs.
"""

import os
import threading
import time
import uuid

import pytest
from django.db import connections

from queue_app.models import Execution, ExecutionStatus, WorkOrderStatus
from tasks_app.services import task_create
from tests.conftest import wait_for
from tests.faults.tcp_proxy import TcpProxy
from workers_app import slots
from workers_app.models import SessionStatus
from workers_app.runner import work_order_run

pytestmark = [pytest.mark.fault, pytest.mark.django_db(transaction=True)]

FENCE = 2.0


def _agent_pids(marker):
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    if marker.encode() in cmdline.read():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def test_a_slot_cut_off_from_the_database_stops_its_agent_within_the_fence(worker, settings):
    settings.AGENTVINE_FENCE_SECONDS = FENCE
    settings.AGENTVINE_LEASE_SECONDS = 3 * FENCE
    marker = f"fence-{uuid.uuid4().hex[:8]}"
    task = task_create(title=f"ticker 60 {marker}", executor="ticker")
    work_order = task.work_orders.get()
    proxy = TcpProxy(int(connections["default"].settings_dict["PORT"] or 5432))
    outcome = {}

    def slot():
        # This thread is the slot of ``worker``; its connection goes through the proxy.
        slots._state["worker"] = worker
        own = connections["default"]
        own.settings_dict = {**own.settings_dict, "HOST": "127.0.0.1", "PORT": str(proxy.port)}
        try:
            outcome["result"] = work_order_run(work_order_id=str(work_order.pk))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = repr(exc)
        finally:
            own.close()

    runner = threading.Thread(target=slot)
    runner.start()
    try:
        execution = wait_for(
            lambda: Execution.objects.filter(work_order=work_order, output_chunks__gt=0).first(),
            message="the agent printing",
        )
        pids = wait_for(lambda: _agent_pids(marker), message="the agent's process")
        cut = time.monotonic()
        proxy.go_silent()
        wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pids), timeout=FENCE + 5)
        stopped_after = time.monotonic() - cut
    finally:
        # The link returns (the hung query fails): the runner ends on its own.
        proxy.close()
        runner.join(timeout=30)
        slots._state["worker"] = None

    assert stopped_after <= FENCE + 0.5, f"agent stopped {stopped_after:.1f}s after the cut"
    assert not runner.is_alive() and outcome.get("result") == "fenced", outcome
    # The fenced run touched nothing: the work is still the guardian's to take back.
    execution.refresh_from_db()
    work_order.refresh_from_db()
    assert execution.status == ExecutionStatus.RUNNING
    assert work_order.status == WorkOrderStatus.RUNNING
    assert execution.agent_tokens.filter(revoked_at__isnull=True).exists()
    assert execution.session.status == SessionStatus.ACTIVE
