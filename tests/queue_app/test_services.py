"""The work-order state machine: every legal and illegal transition."""

import pytest
from django.utils import timezone

from agentvine.errors import IllegalTransition, ValidationFailed
from queue_app import lifecycle
from queue_app.models import ExecutionStatus, WorkOrder, WorkOrderStatus
from queue_app.selectors import queue_stats
from tasks_app.models import Priority, Task, TaskStatus
from tasks_app.services import task_cancel, task_create, task_retry, task_set_priority
from tests.factories import make_task
from workers_app.models import WorkerStatus

pytestmark = [pytest.mark.django_db, pytest.mark.sqlite]


def run_order(task):
    return task.work_orders.get()


def refresh(obj):
    obj.refresh_from_db()
    return obj


def test_task_create_makes_one_queued_work_order(operator):
    task = make_task(title="Fix login", priority=Priority.HIGH, created_by=operator)
    order = run_order(task)
    assert task.status == TaskStatus.QUEUED
    assert order.status == WorkOrderStatus.QUEUED
    assert order.priority == Priority.HIGH
    assert order.queue_name == "high"
    assert task.created_by == operator


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("title", {"title": "   "}),
        ("task_type", {"task_type": "chore"}),
        ("priority", {"priority": "urgent"}),
        ("executor", {"executor": "no-such-profile"}),
    ],
)
def test_task_create_rejects_bad_input_and_writes_nothing(field, kwargs):
    with pytest.raises(ValidationFailed) as excinfo:
        make_task(**kwargs)
    assert excinfo.value.field == field
    assert Task.objects.count() == 0
    assert WorkOrder.objects.count() == 0


def test_full_happy_path_and_task_status_follows(worker):
    task = make_task()
    order = lifecycle.work_order_claim(worker=worker, work_order_id=run_order(task).id)
    assert order.status == WorkOrderStatus.CLAIMED and order.worker == worker
    assert refresh(task).status == TaskStatus.QUEUED

    order, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    assert order.status == WorkOrderStatus.RUNNING
    assert execution.attempt == 1 and execution.status == ExecutionStatus.RUNNING
    assert refresh(task).status == TaskStatus.IN_PROGRESS
    assert refresh(worker).status == WorkerStatus.BUSY
    assert worker.current_work_order_id == order.id

    order = lifecycle.work_order_set_waiting(work_order=order, worker=worker, waiting=True)
    assert order.status == WorkOrderStatus.WAITING
    assert refresh(worker).status == WorkerStatus.WAITING
    assert refresh(task).status == TaskStatus.IN_PROGRESS
    order = lifecycle.work_order_set_waiting(work_order=order, worker=worker, waiting=False)

    order = lifecycle.work_order_complete(work_order=order, worker=worker, execution=execution, exit_code=0)
    assert order.status == WorkOrderStatus.COMPLETED and order.completed_at
    assert refresh(execution).status == ExecutionStatus.COMPLETED
    task = refresh(task)
    assert task.status == TaskStatus.COMPLETED and task.completed_at
    assert refresh(worker).status == WorkerStatus.IDLE and worker.current_work_order_id is None


def test_claim_is_none_for_a_second_claimer_and_for_non_queued(worker, other_worker):
    order = run_order(make_task())
    assert lifecycle.work_order_claim(worker=worker, work_order_id=order.id) is not None
    assert lifecycle.work_order_claim(worker=other_worker, work_order_id=order.id) is None
    assert refresh(order).worker == worker


def test_claim_respects_backoff(worker):
    order = run_order(make_task())
    WorkOrder.objects.filter(pk=order.pk).update(not_before=timezone.now() + timezone.timedelta(minutes=5))
    assert lifecycle.work_order_claim(worker=worker, work_order_id=order.id) is None
    assert lifecycle.work_order_claim(worker=worker) is None
    assert refresh(order).status == WorkOrderStatus.QUEUED


def test_pull_claim_takes_highest_priority_then_oldest(worker):
    low = run_order(make_task(priority=Priority.LOW))
    normal_old = run_order(make_task(priority=Priority.NORMAL))
    normal_new = run_order(make_task(priority=Priority.NORMAL))
    high = run_order(make_task(priority=Priority.HIGH))
    claimed = []
    while (order := lifecycle.work_order_claim(worker=worker)) is not None:
        claimed.append(order.id)
    assert claimed == [high.id, normal_old.id, normal_new.id, low.id]


def test_illegal_transitions_raise_and_change_nothing(worker, other_worker):
    order = run_order(make_task())
    with pytest.raises(IllegalTransition):
        lifecycle.work_order_start(work_order=order, worker=worker)  # not claimed
    with pytest.raises(IllegalTransition):
        lifecycle.work_order_complete(work_order=order, worker=worker)  # not running
    with pytest.raises(IllegalTransition):
        lifecycle.work_order_requeue(work_order=order, reason="x")  # not active
    with pytest.raises(IllegalTransition):
        lifecycle.work_order_retry(work_order=order)  # not failed

    order = lifecycle.work_order_claim(worker=worker, work_order_id=order.id)
    with pytest.raises(IllegalTransition):
        lifecycle.work_order_start(work_order=order, worker=other_worker)  # not theirs
    order, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    with pytest.raises(IllegalTransition):
        lifecycle.work_order_complete(work_order=order, worker=other_worker)
    with pytest.raises(IllegalTransition):
        lifecycle.work_order_fail(work_order=order, worker=other_worker, error="nope")
    assert refresh(order).status == WorkOrderStatus.RUNNING

    lifecycle.work_order_complete(work_order=order, worker=worker, execution=execution)
    for transition in (
        lambda: lifecycle.work_order_complete(work_order=order, worker=worker),
        lambda: lifecycle.work_order_fail(work_order=order, worker=worker, error="late"),
        lambda: lifecycle.work_order_cancel(work_order=order),
        lambda: lifecycle.work_order_requeue(work_order=order, reason="late"),
    ):
        with pytest.raises(IllegalTransition):
            transition()
    order = refresh(order)
    assert order.status == WorkOrderStatus.COMPLETED
    assert order.last_error == ""


def _attempt_and_fail(order, worker, error="exit 3"):
    order = lifecycle.work_order_claim(worker=worker, work_order_id=order.id)
    assert order is not None, "work order should be claimable"
    order, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    return lifecycle.work_order_fail(work_order=order, worker=worker, execution=execution, error=error, exit_code=3)


def test_fail_backs_off_then_ends_dead(worker, settings):
    settings.AGENTVINE_RETRY_BACKOFF_BASE = 10.0
    settings.AGENTVINE_RETRY_BACKOFF_MAX = 1000.0
    task = task_create(title="flaky", max_retries=2)
    order = run_order(task)
    waits = []
    for attempt in range(1, 3):
        before = timezone.now()
        order = _attempt_and_fail(order, worker, error=f"boom {attempt}")
        assert order.status == WorkOrderStatus.QUEUED
        assert order.retry_count == attempt
        assert order.worker is None
        waits.append((order.not_before - before).total_seconds())
        assert refresh(task).status == TaskStatus.QUEUED
        # Backing off: not claimable until not_before.
        assert lifecycle.work_order_claim(worker=worker, work_order_id=order.id) is None
        WorkOrder.objects.filter(pk=order.pk).update(not_before=timezone.now())
    # Exponential with jitter: attempt n waits between base*2^(n-1)/2 and base*2^(n-1).
    assert 5.0 <= waits[0] <= 10.5
    assert 10.0 <= waits[1] <= 20.5

    order = _attempt_and_fail(order, worker, error="boom 3")
    assert order.status == WorkOrderStatus.DEAD
    assert order.last_error == "boom 3"
    assert refresh(task).status == TaskStatus.FAILED
    executions = list(order.executions.order_by("attempt"))
    assert [e.attempt for e in executions] == [1, 2, 3]
    assert all(e.status == ExecutionStatus.FAILED and e.exit_code == 3 for e in executions)
    assert refresh(worker).status == WorkerStatus.IDLE


def test_non_retryable_failure_ends_failed_at_once(worker):
    order = run_order(make_task())
    order = lifecycle.work_order_claim(worker=worker, work_order_id=order.id)
    order, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    order = lifecycle.work_order_fail(
        work_order=order, worker=worker, execution=execution, error="agent command not found", retryable=False
    )
    assert order.status == WorkOrderStatus.FAILED
    assert order.retry_count == 0
    assert refresh(execution).error == "agent command not found"


def test_cancel_queued_and_running(worker):
    queued_task = make_task()
    task_cancel(task=queued_task)
    assert refresh(queued_task).status == TaskStatus.CANCELLED
    assert run_order(queued_task).status == WorkOrderStatus.CANCELLED
    with pytest.raises(IllegalTransition):
        task_cancel(task=queued_task)

    running_task = make_task()
    order = lifecycle.work_order_claim(worker=worker, work_order_id=run_order(running_task).id)
    order, _ = lifecycle.work_order_start(work_order=order, worker=worker)
    lifecycle.work_order_cancel(work_order=order)
    assert refresh(running_task).status == TaskStatus.CANCELLED
    with pytest.raises(IllegalTransition):
        lifecycle.work_order_complete(work_order=order, worker=worker)


def test_retry_after_dead_or_cancelled(worker):
    task = task_create(title="retry me", max_retries=0)
    _attempt_and_fail(run_order(task), worker)
    assert refresh(task).status == TaskStatus.FAILED
    task_retry(task=task)
    order = run_order(task)
    assert order.status == WorkOrderStatus.QUEUED and order.retry_count == 0
    assert refresh(task).status == TaskStatus.QUEUED
    with pytest.raises(IllegalTransition):
        task_retry(task=task)


def test_requeue_spends_no_retry_and_too_many_lost_attempts_end_dead(worker, settings):
    settings.AGENTVINE_MAX_LOST_ATTEMPTS = 2
    task = task_create(title="stalled", max_retries=1)
    order = lifecycle.work_order_claim(worker=worker, work_order_id=run_order(task).id)
    order, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    order = lifecycle.work_order_requeue(work_order=order, reason="preempted", preempted=True)
    assert (order.status, order.retry_count, order.lost_count) == (WorkOrderStatus.QUEUED, 0, 0)
    assert refresh(execution).status == ExecutionStatus.INTERRUPTED

    order = lifecycle.work_order_claim(worker=worker, work_order_id=order.id)
    order, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    assert execution.attempt == 2
    # Its worker died: not the work's fault, but counted.
    order = lifecycle.work_order_requeue(work_order=order, reason="worker stalled", lost=True)
    assert (order.status, order.retry_count, order.lost_count) == (WorkOrderStatus.QUEUED, 0, 1)
    assert refresh(execution).status == ExecutionStatus.FAILED

    order = lifecycle.work_order_claim(worker=worker, work_order_id=order.id)
    lifecycle.work_order_start(work_order=order, worker=worker)
    order = lifecycle.work_order_requeue(work_order=order, reason="worker stalled", lost=True)
    assert order.status == WorkOrderStatus.DEAD and order.retry_count == 0
    assert order.last_error == "worker stalled; gave up after 2 attempts lost with their workers"
    assert refresh(task).status == TaskStatus.FAILED


def test_requeued_work_keeps_its_place_ahead_of_newer_work(worker, other_worker):
    older = run_order(make_task())
    order, _, _, _ = lifecycle.work_order_claim_start(worker=worker, work_order_id=older.id)
    newer = [run_order(make_task()) for _ in range(3)]
    lifecycle.work_order_requeue(work_order=order, reason="worker stalled", lost=True)

    # The doorbell of a newer order rings first; the requeued one runs first.
    claimed, _, _, _ = lifecycle.work_order_claim_start(worker=other_worker, work_order_id=newer[0].id)
    assert claimed.pk == older.pk
    # Then the newer ones, oldest first, whichever doorbell rings.
    following = [
        lifecycle.work_order_claim_start(worker=other_worker, work_order_id=newer[2].id)[0].pk for _ in range(3)
    ]
    assert following == [order.pk for order in newer]
    assert lifecycle.work_order_claim_start(worker=other_worker, work_order_id=newer[1].id) is None


def test_raise_priority_moves_queued_work(worker):
    task = make_task(priority=Priority.LOW)
    task_set_priority(task=task, priority=Priority.HIGH)
    order = run_order(task)
    assert (order.priority, order.priority_rank, order.queue_name) == (Priority.HIGH, 0, "high")
    with pytest.raises(ValidationFailed):
        task_set_priority(task=task, priority="urgent")


def test_queue_stats_counts_depth_and_age(worker):
    for priority in (Priority.HIGH, Priority.LOW, Priority.LOW):
        make_task(priority=priority)
    running = run_order(make_task(priority=Priority.NORMAL))
    lifecycle.work_order_claim(worker=worker, work_order_id=running.id)
    stats = queue_stats()
    assert stats["depth"] == {"high": 1, "normal": 0, "low": 2}
    assert stats["by_status"]["queued"] == 3
    assert stats["by_status"]["claimed"] == 1
    assert stats["oldest_waiting_seconds"]["normal"] is None
    assert stats["oldest_waiting_seconds"]["low"] >= 0

    task_cancel(task=make_task(priority=Priority.LOW))
    assert queue_stats()["by_status"]["cancelled"] == 1
    active = queue_stats(active_only=True)
    assert active["by_status"]["cancelled"] == 0
    assert active["by_status"]["queued"] == 3 and active["depth"] == stats["depth"]


def test_complete_of_a_stale_copy_takes_the_checked_path_and_publishes_what_is_stored(worker):
    from agentvine.models import LiveEvent

    task = make_task()
    order = lifecycle.work_order_claim(worker=worker, work_order_id=run_order(task).id)
    order, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    # Changed behind the runner's back: its copy of the order is stale.
    WorkOrder.objects.filter(pk=order.pk).update(priority=Priority.HIGH, priority_rank=0)

    done = lifecycle.work_order_complete(work_order=order, worker=worker, execution=execution)

    assert done.status == WorkOrderStatus.COMPLETED and done.priority == Priority.HIGH
    assert refresh(execution).status == ExecutionStatus.COMPLETED
    assert refresh(task).status == TaskStatus.COMPLETED
    last = LiveEvent.objects.filter(type="work_order.updated").order_by("-id").first()
    assert last.payload["status"] == WorkOrderStatus.COMPLETED and last.payload["priority"] == Priority.HIGH


def test_completing_twice_raises_and_publishes_nothing_more(worker):
    from agentvine.models import LiveEvent

    task = make_task()
    order = lifecycle.work_order_claim(worker=worker, work_order_id=run_order(task).id)
    order, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    lifecycle.work_order_complete(work_order=order, worker=worker, execution=execution)
    events_before = LiveEvent.objects.count()

    with pytest.raises(IllegalTransition):
        lifecycle.work_order_complete(work_order=order, worker=worker, execution=execution)
    assert LiveEvent.objects.count() == events_before


def test_claim_start_opens_the_session_then_resumes_it_for_the_next_turn(worker, other_worker):
    from queue_app.models import WorkOrderKind
    from workers_app.models import SessionStatus

    kinds = (WorkOrderKind.RUN_TASK, WorkOrderKind.DELIVER_MESSAGE)
    task = make_task()
    first = run_order(task)
    order, execution, session, resume = lifecycle.work_order_claim_start(
        worker=worker, work_order_id=first.id, session_kinds=kinds
    )
    assert (order.status, order.worker_id, order.task.pk) == (WorkOrderStatus.RUNNING, worker.id, task.pk)
    assert (execution.attempt, execution.session_id, resume) == (1, session.pk, False)
    assert refresh(session).status == SessionStatus.ACTIVE and refresh(task).status == TaskStatus.IN_PROGRESS
    # A duplicate doorbell finds nothing to claim.
    assert lifecycle.work_order_claim_start(worker=other_worker, work_order_id=first.id, session_kinds=kinds) is None
    lifecycle.work_order_complete(work_order=order, worker=worker, execution=execution)
    assert refresh(session).status == SessionStatus.IDLE

    turn = lifecycle.work_order_enqueue(task=refresh(task), kind=WorkOrderKind.DELIVER_MESSAGE)
    order, execution, again, resume = lifecycle.work_order_claim_start(
        worker=other_worker, work_order_id=turn.id, session_kinds=kinds
    )
    assert again.pk == session.pk and resume is True and again.session_id == session.session_id
    stored = refresh(again)
    assert (stored.status, stored.worker_id) == (SessionStatus.ACTIVE, other_worker.id)
    assert execution.session_id == session.pk and refresh(task).status == TaskStatus.COMPLETED


def test_claim_start_waits_for_a_backoff_and_skips_a_cancelled_order(worker):
    task = make_task()
    order = run_order(task)
    WorkOrder.objects.filter(pk=order.pk).update(not_before=timezone.now() + timezone.timedelta(seconds=30))
    assert lifecycle.work_order_claim_start(worker=worker, work_order_id=order.id) is None
    WorkOrder.objects.filter(pk=order.pk).update(not_before=None)
    lifecycle.work_order_cancel(work_order=refresh(order))
    assert lifecycle.work_order_claim_start(worker=worker, work_order_id=order.id) is None
    assert refresh(order).status == WorkOrderStatus.CANCELLED


def test_a_failed_message_turn_returns_its_messages_for_the_retry_and_fails_them_at_the_end(worker, operator):
    from chat_app.models import ChatMessage, DeliveryStatus
    from chat_app.services import operator_message_send
    from queue_app.models import WorkOrderKind
    from workers_app.runner import RUNNABLE_KINDS, run_prompt

    task = make_task()
    order, execution, _, _ = lifecycle.work_order_claim_start(
        worker=worker, work_order_id=run_order(task).id, session_kinds=RUNNABLE_KINDS
    )
    lifecycle.work_order_complete(work_order=order, worker=worker, execution=execution)
    message = operator_message_send(user=operator, conversation_id=str(task.pk), text="also update the docs")
    turn = lifecycle.work_order_enqueue(task=refresh(task), kind=WorkOrderKind.DELIVER_MESSAGE, max_retries=1)

    def take_turn():
        WorkOrder.objects.filter(pk=turn.pk).update(not_before=None)
        order, execution, _, resume = lifecycle.work_order_claim_start(
            worker=worker, work_order_id=turn.id, session_kinds=RUNNABLE_KINDS
        )
        assert "also update the docs" in run_prompt(order, resume, execution)
        assert ChatMessage.objects.get(pk=message.pk).execution_id == execution.pk
        return order, execution

    order, execution = take_turn()
    lifecycle.work_order_fail(work_order=order, worker=worker, execution=execution, error="agent crashed")
    # The turn will run again: the message waits for it, in its place.
    stored = ChatMessage.objects.get(pk=message.pk)
    assert (stored.status, stored.delivered_at) == (DeliveryStatus.QUEUED, None)

    order, execution = take_turn()
    lifecycle.work_order_fail(work_order=order, worker=worker, execution=execution, error="agent crashed again")
    assert refresh(turn).status == WorkOrderStatus.DEAD
    stored = ChatMessage.objects.get(pk=message.pk)
    assert stored.status == DeliveryStatus.FAILED and "agent crashed again" in stored.failure_reason
