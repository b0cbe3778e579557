"""Test data made through the services, so it obeys the same invariants."""

import factory

from tasks_app.models import Priority, TaskType


class TaskInput(factory.DictFactory):
    title = factory.Sequence(lambda n: f"Task number {n}")
    description = factory.Faker("sentence")
    task_type = TaskType.FEATURE
    priority = Priority.NORMAL


def make_task(**overrides):
    from tasks_app.services import task_create

    return task_create(**TaskInput(**overrides))


def run_that_spends(task, dollars, *, worker, started_at=None):
    """One run of ``task`` (first in line; started at ``started_at``, else
    now) that reports ``dollars`` of usage and is then put back in line, as
    a preempted run is: the next claim decides whether it may go on.
    Returns its work order."""
    from decimal import Decimal

    from queue_app import lifecycle
    from queue_app.models import Execution
    from queue_app.outputs import execution_record_usage

    order, execution, _, _ = lifecycle.work_order_claim_start(worker=worker, work_order_id=None)
    assert order.task_id == task.pk
    if started_at is not None:
        Execution.objects.filter(pk=execution.pk).update(started_at=started_at)
        execution.started_at = started_at
    execution_record_usage(execution=execution, input_tokens=100, output_tokens=10, cost_usd=Decimal(dollars))
    lifecycle.work_order_requeue(work_order=order, reason="gave way")
    return order
