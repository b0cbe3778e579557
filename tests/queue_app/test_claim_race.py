"""Claims under real concurrency: separate threads with separate connections."""

import threading
from collections import Counter

import pytest
from django.db import connection

from queue_app import lifecycle
from queue_app.models import WorkOrder, WorkOrderStatus
from tasks_app.models import Priority
from tests.factories import make_task
from workers_app.services import worker_register

pytestmark = pytest.mark.django_db(transaction=True)


def _run_threads(count, target):
    barrier = threading.Barrier(count)
    results = [None] * count
    errors = []

    def run(i):
        try:
            barrier.wait()
            results[i] = target(i)
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def test_many_claimers_one_work_order_exactly_one_wins():
    order = make_task().work_orders.get()
    workers = [worker_register(name=f"race-{i}") for i in range(16)]

    results = _run_threads(16, lambda i: lifecycle.work_order_claim(worker=workers[i], work_order_id=order.id))

    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    order.refresh_from_db()
    assert order.status == WorkOrderStatus.CLAIMED
    assert order.worker_id == winners[0].worker_id


def test_many_claimers_drain_many_work_orders_none_twice_none_missed():
    priorities = [Priority.HIGH, Priority.NORMAL, Priority.LOW]
    ids = {make_task(priority=priorities[n % 3]).work_orders.get().id for n in range(150)}
    workers = [worker_register(name=f"drain-{i}") for i in range(8)]

    def drain(i):
        got = []
        while (order := lifecycle.work_order_claim(worker=workers[i])) is not None:
            got.append(order.id)
        return got

    results = _run_threads(8, drain)

    claimed = Counter(pk for got in results for pk in got)
    assert set(claimed) == ids
    assert max(claimed.values()) == 1
    assert WorkOrder.objects.filter(status=WorkOrderStatus.QUEUED).count() == 0
    assert sum(1 for got in results if got) > 1, "skip_locked should let claimers work side by side"
