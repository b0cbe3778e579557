"""Concurrency key ``ticker: 1`` on four real Celery slots (PostgreSQL, Redis)."""

import threading
import time

import pytest

from queue_app.models import ACTIVE_STATUSES, WorkOrder
from tasks_app.models import Task, TaskStatus
from tasks_app.services import task_create
from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_one_limited_run_at_a_time_while_other_work_flows_around(celery_worker_factory, settings):
    settings.AGENTVINE_CONCURRENCY_LIMITS = {"ticker": 1}
    settings.AGENTVINE_PREEMPTION_ENABLED = False
    celery_worker_factory(concurrency=4)
    samples, done = [], threading.Event()

    def sample():
        from django.db import connection

        while not done.is_set():
            running = WorkOrder.objects.filter(task__executor="ticker", status__in=ACTIVE_STATUSES).count()
            samples.append(running)
            time.sleep(0.05)
        connection.close()

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        limited = [task_create(title="ticker 0.3", executor="ticker") for _ in range(10)]
        others = [task_create(title="noop", executor="noop") for _ in range(10)]

        def finished(tasks):
            return Task.objects.filter(pk__in=[t.pk for t in tasks], status=TaskStatus.COMPLETED).count() == len(tasks)

        wait_for(lambda: finished(others), timeout=60, message="the other work done")
        # The other work did not queue behind the limited backlog.
        assert not finished(limited)
        # Each limited run's end rings the next one's doorbell: the doorbells
        # that found the key full were spent on the other work.
        wait_for(lambda: finished(limited), timeout=60, message="the limited work done")
    finally:
        done.set()
        sampler.join()
    assert max(samples) == 1, f"more than one ticker run at once: {max(samples)}"
    assert len(samples) > 40
