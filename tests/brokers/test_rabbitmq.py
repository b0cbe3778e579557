"""The engine's end-to-end core with RabbitMQ as the broker
(``CELERY_BROKER_URL=amqp://…``, agentvine/brokers.py): the same tests as on
Redis, imported from their modules and run here on a vhost of their own, plus
what only RabbitMQ does: durable quorum queues, confirmed publishing, a
retry's backoff through delayed delivery and the redelivery of a dead
worker's unacknowledged doorbell."""

import pytest

from queue_app.dispatch import work_order_dispatch
from tasks_app.models import Task, TaskStatus
from tasks_app.services import task_create
from tests.brokers.conftest import rabbitmq_queues
from tests.conftest import wait_for

# The core, unchanged: create → run → complete, a failure retried with
# backoff, cancel, kill -9 recovery (with beat and the guardians' worker).
from tests.queue_app.test_engine_e2e import (  # noqa: F401
    test_created_task_runs_demo_agent_to_completion,
    test_failing_command_is_retried_per_policy_then_ends_failed,
)
from tests.workers_app.test_interrupts_e2e import test_cancelling_a_running_agent_stops_it_within_5_seconds  # noqa: F401
from tests.workers_app.test_recovery_e2e import (  # noqa: F401
    test_kill_9_of_a_worker_mid_run_requeues_and_completes_once_elsewhere,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("rabbitmq_vhost")]


def test_queues_are_durable_quorum_queues_and_a_confirmed_doorbell_waits_in_them(rabbitmq_vhost, celery_worker_factory):
    task = task_create(title="Waits for a worker", executor="quick")
    # Published with confirms before any worker exists: RabbitMQ has it on disk.
    # (RabbitMQ's queue counts lag by up to its statistics interval, 5 s.)
    wait_for(lambda: rabbitmq_queues(rabbitmq_vhost)["default"] == ("quorum", True, 1, 0), message="the doorbell")

    celery_worker_factory(concurrency=1)
    wait_for(lambda: Task.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, message="completion")
    wait_for(lambda: rabbitmq_queues(rabbitmq_vhost)["default"][2:] == (0, 0), message="the doorbell consumed")
    # Every configured queue exists, "guardians" too, though nobody consumes it here.
    queues = rabbitmq_queues(rabbitmq_vhost)
    assert {name: queues[name][:2] for name in ("high", "low", "guardians")} == dict.fromkeys(
        ("high", "low", "guardians"), ("quorum", True)
    )


def test_a_doorbell_held_by_a_worker_that_dies_is_redelivered_to_another(rabbitmq_vhost, celery_worker_factory):
    # One slot, busy with a long run: the second doorbell waits in the
    # worker's prefetch, delivered but not acknowledged.
    holder = celery_worker_factory(concurrency=1)
    busy = task_create(title="ticker 30", executor="ticker")
    wait_for(lambda: Task.objects.get(pk=busy.pk).status == TaskStatus.IN_PROGRESS, message="the busy run")
    waiting = task_create(title="Second in line", executor="quick")
    wait_for(lambda: rabbitmq_queues(rabbitmq_vhost)["default"][3] == 1, message="the doorbell held unacked")

    holder.kill()
    # RabbitMQ saw the connection go: the doorbell is ready again at once.
    wait_for(lambda: rabbitmq_queues(rabbitmq_vhost)["default"][2:] == (1, 0), timeout=10, message="redelivery")
    celery_worker_factory(concurrency=1)
    wait_for(lambda: Task.objects.get(pk=waiting.pk).status == TaskStatus.COMPLETED, message="the waiting work")
    # The killed run is the guardians' (orphans by lease), not the broker's: still in progress here.
    assert Task.objects.get(pk=busy.pk).status == TaskStatus.IN_PROGRESS


def test_a_duplicate_doorbell_is_harmless(rabbitmq_vhost, celery_worker_factory):
    task = task_create(title="Only once", executor="quick")
    assert work_order_dispatch(work_order_id=task.work_orders.get().id)
    celery_worker_factory(concurrency=2)
    wait_for(lambda: Task.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, message="completion")
    wait_for(lambda: rabbitmq_queues(rabbitmq_vhost)["default"][2:] == (0, 0), message="both doorbells consumed")
    assert task.work_orders.get().executions.count() == 1
