"""Redis, the broker, restarted empty with 200 work orders queued, for real:
the suite's own throw-away redis-server (tests/faults/services.py) under real
Celery workers, beat and the guardians. The guardian notices the empty broker
at once and rings again for every queued order: the first doorbell within
10 s of Redis answering again, not after the 120 s lost-dispatch rule; all
200 complete, each once."""

import pytest
import redis
import requests
from django.utils import timezone

from queue_app.models import WorkOrder, WorkOrderStatus
from tests.conftest import CeleryWorkerProcess, wait_for
from tests.faults.services import RedisServer, free_port
from tests.workers_app.conftest import FAST_GUARD_ENV, guardian_schedule_install, web_and_guardian_processes
from workers_app.guardians import BROKER_SENTINEL_KEY
from workers_app.services import api_token_create

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def broker(tmp_path):
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


def test_a_broker_restarted_empty_gets_every_queued_doorbell_again_at_once(broker, operator, tmp_path):
    guardian_schedule_install(every_seconds=1)
    extra = {**FAST_GUARD_ENV, "REDIS_URL": broker.url}
    port = free_port()
    started = web_and_guardian_processes(tmp_path, port=port, extra_env=extra)
    client = redis.Redis.from_url(broker.url)
    try:
        # The guardian has looked at the broker once.
        wait_for(lambda: client.exists(BROKER_SENTINEL_KEY), timeout=60, message="the guardian's first look")
        api = requests.Session()
        api.headers["Authorization"] = f"Token {api_token_create(user=operator, name='fault')[1]}"
        for batch in range(4):
            specs = [{"title": f"quick {batch}-{n}", "executor": "quick"} for n in range(50)]
            reply = api.post(f"http://127.0.0.1:{port}/api/v1/tasks/batch/", json={"tasks": specs}, timeout=30)
            assert reply.status_code == 201, reply.text
        assert client.llen("default") == 200  # the doorbells, waiting for a worker

        broker.stop()
        broker.start()  # empty: every doorbell is gone
        back = timezone.now()
        started.append(
            CeleryWorkerProcess(concurrency=2, name="drain", log_path=tmp_path / "worker.log", extra_env=extra)
        )
        orders = WorkOrder.objects.filter(task__title__startswith="quick ")
        first = wait_for(
            lambda: (
                orders.filter(dispatched_at__gte=back)
                .order_by("dispatched_at")
                .values_list("dispatched_at", flat=True)
                .first()
            ),
            timeout=30,
            message="the first doorbell after the restart",
        )
        wait_for(
            lambda: orders.filter(status=WorkOrderStatus.COMPLETED).count() == 200,
            timeout=120,
            interval=0.5,
            message="all 200 to complete",
        )
    finally:
        for process in reversed(started):
            process.stop()

    assert (first - back).total_seconds() < 10
    assert all(order.executions.count() == 1 for order in orders.prefetch_related("executions"))
    assert sum(orders.values_list("retry_count", flat=True)) == 0
