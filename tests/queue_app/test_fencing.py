"""Fencing: every write a run makes names its execution and is refused once
that execution is no longer the live one (its work order was requeued and
started again, here on the same worker, which is what a host cut off and
back again does). Real PostgreSQL, the engine's own services."""

import pytest

from agentvine.errors import ExecutionFenced
from chat_app.models import ChatMessage
from chat_app.services import question_ask
from queue_app import credentials, lifecycle
from queue_app.models import Execution, ExecutionStatus, WorkOrderStatus
from queue_app.outputs import execution_output_append, execution_record_usage
from tasks_app.services import task_create
from workers_app.models import SessionStatus
from workers_app.runner import RUNNABLE_KINDS
from workers_app.services import agent_session_set_agent_id

pytestmark = pytest.mark.django_db(transaction=True)


def _start(worker, work_order):
    return lifecycle.work_order_claim_start(worker=worker, work_order_id=work_order.pk, session_kinds=RUNNABLE_KINDS)


@pytest.fixture
def requeued(worker):
    """A run of a work order (``stale``) whose work was requeued, as a
    guardian does for a silent host, and started again on the same worker
    (``live``)."""
    task = task_create(title="fenced", executor="ticker")
    work_order = task.work_orders.get()
    _, stale, _, _ = _start(worker, work_order)
    lifecycle.work_order_requeue(work_order=work_order, reason="worker cut off", lost=True)
    work_order, live, session, _ = _start(worker, work_order)
    return work_order, stale, live, session


def test_a_stale_output_write_is_refused(requeued):
    _, stale, live, _ = requeued
    with pytest.raises(ExecutionFenced):
        execution_output_append(execution=stale, seq=0, text="stale line\n", tail="stale line\n")
    stale.refresh_from_db()
    assert stale.output_chunks == 0 and stale.output_tail == ""
    execution_output_append(execution=live, seq=0, text="live line\n", tail="live line\n")
    live.refresh_from_db()
    assert live.output_chunks == 1


def test_a_stale_usage_report_is_refused(requeued):
    _, stale, _, _ = requeued
    with pytest.raises(ExecutionFenced):
        execution_record_usage(execution=stale, input_tokens=10, output_tokens=5)
    stale.refresh_from_db()
    assert (stale.input_tokens, stale.output_tokens) == (0, 0)


def test_a_stale_completion_is_refused_and_the_live_run_goes_on(requeued, worker):
    work_order, stale, live, session = requeued
    with pytest.raises(ExecutionFenced):
        lifecycle.work_order_complete(work_order=work_order, worker=worker, execution=stale)
    work_order.refresh_from_db()
    live.refresh_from_db()
    assert work_order.status == WorkOrderStatus.RUNNING
    assert live.status == ExecutionStatus.RUNNING
    assert credentials.agent_token_resolve(token=live.agent_token) is not None
    session.refresh_from_db()
    assert session.status == SessionStatus.ACTIVE


def test_a_stale_failure_is_refused(requeued, worker):
    work_order, stale, live, _ = requeued
    with pytest.raises(ExecutionFenced):
        lifecycle.work_order_fail(work_order=work_order, worker=worker, execution=stale, error="stale")
    work_order.refresh_from_db()
    assert (work_order.status, work_order.retry_count) == (WorkOrderStatus.RUNNING, 0)
    assert Execution.objects.get(pk=live.pk).status == ExecutionStatus.RUNNING


def test_a_stale_question_is_refused(requeued):
    work_order, stale, _, _ = requeued
    with pytest.raises(ExecutionFenced):
        question_ask(work_order=work_order, execution=stale, text="stale question?")
    work_order.refresh_from_db()
    assert work_order.status == WorkOrderStatus.RUNNING
    assert not ChatMessage.objects.filter(execution=stale).exists()


def test_a_stale_session_report_is_refused(requeued):
    _, stale, _, session = requeued
    before = session.session_id
    with pytest.raises(ExecutionFenced):
        agent_session_set_agent_id(session=session, session_id="stale-conversation", execution=stale)
    session.refresh_from_db()
    assert session.session_id == before


def test_the_stale_runs_release_leaves_the_live_token_and_session_alone(requeued):
    """What a stale runner's ``finally`` does when it crashed out: nothing to
    the live copy, although both ran on the same worker."""
    _, stale, live, session = requeued
    lifecycle.execution_release(execution=stale)
    assert credentials.agent_token_resolve(token=live.agent_token) is not None
    session.refresh_from_db()
    assert session.status == SessionStatus.ACTIVE
