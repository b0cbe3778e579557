"""A run that hits its time limit ends failed with the reason and is retried
only when its profile says ``retry_on_timeout``: a hung agent would most
likely hang again, and each retry would hold a slot for the whole limit."""

import pytest
from django.conf import settings
from django.test import override_settings

from queue_app.models import Execution, ExecutionStatus, WorkOrderStatus
from tasks_app.services import task_create
from workers_app import slots
from workers_app.runner import work_order_run

pytestmark = pytest.mark.django_db


def _hung_agent_profiles(**extra):
    ticker = settings.AGENTVINE_EXECUTORS["ticker"]
    return {**settings.AGENTVINE_EXECUTORS, "hangs": {**ticker, "timeout": 1, **extra}}


@pytest.fixture
def slot(worker):
    slots._state["worker"] = worker
    yield worker
    slots._state["worker"] = None


def _run_hung_task():
    task = task_create(title="ticker 30", executor="hangs")
    work_order = task.work_orders.get()
    outcome = work_order_run(work_order_id=str(work_order.pk))
    work_order.refresh_from_db()
    return outcome, work_order, Execution.objects.get(work_order=work_order)


def test_a_run_past_its_time_limit_fails_without_a_retry(slot):
    with override_settings(AGENTVINE_EXECUTORS=_hung_agent_profiles()):
        outcome, work_order, execution = _run_hung_task()

    assert outcome == "failed"
    assert (work_order.status, work_order.retry_count) == (WorkOrderStatus.FAILED, 0)
    assert work_order.last_error.startswith("time limit of 1s exceeded")
    assert execution.status == ExecutionStatus.FAILED and "tick" in execution.output_tail


def test_a_profile_may_ask_for_retries_after_a_time_limit(slot):
    with override_settings(AGENTVINE_EXECUTORS=_hung_agent_profiles(retry_on_timeout=True)):
        outcome, work_order, _ = _run_hung_task()

    assert outcome == "failed"
    assert (work_order.status, work_order.retry_count) == (WorkOrderStatus.QUEUED, 1)
