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
