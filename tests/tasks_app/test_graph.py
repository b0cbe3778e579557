"""Task dependencies: blocked until the parents complete, failure policies, cycles."""

import threading

import pytest
from django.db import connection

from agentvine.errors import IllegalTransition, ValidationFailed
from queue_app import lifecycle
from queue_app.models import WorkOrder, WorkOrderStatus
from tasks_app import graph
from tasks_app.models import Task, TaskDependency, TaskStatus
from tasks_app.services import task_cancel, task_create, task_retry
from workers_app.services import worker_register

pytestmark = [pytest.mark.django_db, pytest.mark.sqlite]


def status(task):
    return Task.objects.values_list("status", flat=True).get(pk=task.pk)


def run(task, worker, *, ok=True, retryable=False):
    """Claim, start and complete (or fail) ``task``'s queued work order on ``worker``."""
    order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get(status="queued").id)
    order, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    if ok:
        return lifecycle.work_order_complete(work_order=order, worker=worker, execution=execution)
    return lifecycle.work_order_fail(
        work_order=order, worker=worker, execution=execution, error="boom", retryable=retryable
    )


def test_child_waits_blocked_without_work_order_until_every_parent_completes(worker):
    a = task_create(title="A")
    b = task_create(title="B")
    d = task_create(title="D", depends_on=[a.pk, b.pk])

    assert status(d) == TaskStatus.BLOCKED
    assert not WorkOrder.objects.filter(task=d).exists()

    run(a, worker)
    assert status(d) == TaskStatus.BLOCKED
    assert not WorkOrder.objects.filter(task=d).exists()

    run(b, worker)
    assert status(d) == TaskStatus.QUEUED
    assert WorkOrder.objects.get(task=d).status == WorkOrderStatus.QUEUED


def test_a_completed_parent_does_not_block(worker):
    a = task_create(title="A")
    run(a, worker)
    child = task_create(title="after A", depends_on=[a.pk])
    assert status(child) == TaskStatus.QUEUED
    assert WorkOrder.objects.get(task=child).status == WorkOrderStatus.QUEUED


def test_block_policy_keeps_child_blocked_with_reason_until_parent_retried_and_completed(worker):
    a = task_create(title="Flaky parent")
    child = task_create(title="child", depends_on=[{"task": a.pk, "on_failure": "block"}])

    run(a, worker, ok=False)

    child.refresh_from_db()
    assert child.status == TaskStatus.BLOCKED
    assert "Flaky parent" in child.blocked_reason and "failed" in child.blocked_reason
    assert not WorkOrder.objects.filter(task=child).exists()

    task_retry(task=a)
    run(a, worker)
    child.refresh_from_db()
    assert child.status == TaskStatus.QUEUED
    assert child.blocked_reason == ""


def test_block_policy_operator_skips_the_edge(worker):
    a = task_create(title="A")
    child = task_create(title="child", depends_on=[a.pk])
    run(a, worker, ok=False)

    graph.task_dependency_skip(task=child, parent_id=a.pk)

    assert status(child) == TaskStatus.QUEUED
    with pytest.raises(IllegalTransition):
        graph.task_dependency_skip(task=child, parent_id=a.pk)


def test_block_policy_operator_cancels_the_subtree(worker):
    a = task_create(title="A")
    child = task_create(title="child", depends_on=[a.pk])
    grandchild = task_create(title="grandchild", depends_on=[child.pk])
    run(a, worker, ok=False)

    task_cancel(task=child)

    assert status(child) == TaskStatus.CANCELLED
    assert status(grandchild) == TaskStatus.CANCELLED
    assert not WorkOrder.objects.filter(task__in=[child, grandchild]).exists()


def test_skip_policy_ignores_the_failed_parent(worker):
    a = task_create(title="A")
    b = task_create(title="B")
    child = task_create(title="child", depends_on=[{"task": a.pk, "on_failure": "skip"}, b.pk])

    run(a, worker, ok=False)
    assert status(child) == TaskStatus.BLOCKED  # still waits for B
    run(b, worker)
    assert status(child) == TaskStatus.QUEUED


def test_cancel_policy_cancels_the_subtree_when_the_parent_is_cancelled():
    a = task_create(title="A")
    child = task_create(title="child", depends_on=[{"task": a.pk, "on_failure": "cancel"}])
    grandchild = task_create(title="grandchild", depends_on=[child.pk])
    unrelated = task_create(title="unrelated")

    task_cancel(task=a)

    assert status(child) == TaskStatus.CANCELLED
    assert status(grandchild) == TaskStatus.CANCELLED
    assert "'A'" in Task.objects.get(pk=child.pk).blocked_reason
    assert status(unrelated) == TaskStatus.QUEUED


def test_dead_parent_applies_policy(worker):
    a = task_create(title="A", max_retries=0)
    child = task_create(title="child", depends_on=[{"task": a.pk, "on_failure": "cancel"}])
    run(a, worker, ok=False, retryable=True)
    assert WorkOrder.objects.get(task=a).status == WorkOrderStatus.DEAD
    assert status(child) == TaskStatus.CANCELLED


def test_cycle_is_refused_naming_it_and_nothing_changes():
    root = task_create(title="root")
    x = task_create(title="X", depends_on=[root.pk])
    a = task_create(title="A", depends_on=[x.pk])
    b = task_create(title="B", depends_on=[a.pk])

    with pytest.raises(ValidationFailed) as excinfo:
        graph.task_dependencies_add(task=x, depends_on=[b.pk])

    message = excinfo.value.message
    assert message.startswith("dependency cycle: 'X'")
    assert message.index("'X'") < message.index("'A'") < message.index("'B'") < message.rindex("'X'")
    assert TaskDependency.objects.filter(child=x).count() == 1
    with pytest.raises(ValidationFailed, match="cannot depend on itself"):
        graph.task_dependencies_add(task=x, depends_on=[x.pk])


def test_bad_dependencies_are_refused_and_nothing_written():
    a = task_create(title="A")
    before = Task.objects.count()
    for depends_on, message in [
        (["00000000-0000-0000-0000-000000000000"], "unknown parent task"),
        (["not-a-uuid"], "unknown parent task"),
        ([a.pk, a.pk], "named twice"),
        ([{"task": a.pk, "on_failure": "explode"}], "unknown on_failure"),
    ]:
        with pytest.raises(ValidationFailed, match=message):
            task_create(title="bad", depends_on=depends_on)
    assert Task.objects.count() == before


def test_adding_a_dependency_to_a_started_task_is_refused():
    a = task_create(title="A")
    b = task_create(title="B")
    with pytest.raises(IllegalTransition):
        graph.task_dependencies_add(task=b, depends_on=[a.pk])


def test_base_parent_starts_from_the_parents_branch():
    a = task_create(title="A", repository_url="https://example.com/r.git", branch_name="feature/a")
    child = task_create(title="stacked", depends_on=[{"task": a.pk, "base": "parent"}])
    child.refresh_from_db()
    assert (child.repository_url, child.branch_name) == ("https://example.com/r.git", "feature/a")


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_two_parents_completing_together_queue_the_child_exactly_once():
    """Two slots finish B and C at the same moment (threads, own connections)."""
    for round_ in range(5):
        b = task_create(title=f"B{round_}")
        c = task_create(title=f"C{round_}")
        d = task_create(title=f"D{round_}", depends_on=[b.pk, c.pk])
        workers = [worker_register(name=f"pair-{round_}-{i}") for i in range(2)]
        started = []
        for task, slot in zip([b, c], workers, strict=True):
            order = lifecycle.work_order_claim(worker=slot, work_order_id=task.work_orders.get().id)
            started.append((slot, *lifecycle.work_order_start(work_order=order, worker=slot)))
        barrier = threading.Barrier(2)
        errors = []

        def finish(slot, order, execution, barrier=barrier, errors=errors):
            try:
                barrier.wait()
                lifecycle.work_order_complete(work_order=order, worker=slot, execution=execution)
            except Exception as exc:  # surfaced below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=finish, args=args) for args in started]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors
        assert WorkOrder.objects.filter(task=d).count() == 1
        assert status(d) == TaskStatus.QUEUED
