"""A pull worker's heartbeat and claim poll statements (queue_app/pull_polls.py),
on PostgreSQL (one statement each) and on SQLite (the ORM's several)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from queue_app import lifecycle, pull_polls
from queue_app.models import Execution
from tasks_app.services import task_create
from workers_app.models import Worker, WorkerStatus, WorkerToken
from workers_app.services import token_hash, worker_register, worker_token_issue

pytestmark = [pytest.mark.django_db, pytest.mark.sqlite]


def _running(worker):
    work_order = task_create(title="polled", executor="ticker").work_orders.get()
    claimed = lifecycle.work_order_claim(worker=worker, work_order_id=work_order.pk)
    return lifecycle.work_order_start(work_order=claimed, worker=worker)


def test_a_batch_of_heartbeats_checks_each_token_renews_leases_and_answers_each_status(worker):
    _, execution = _running(worker)
    idle = worker_register(name="idle-poller", hostname="test")
    offline = worker_register(name="offline-poller", hostname="test")
    Worker.objects.filter(pk=offline.pk).update(status=WorkerStatus.OFFLINE)
    keys = {w.pk: token_hash(worker_token_issue(worker=w)) for w in (worker, idle, offline)}
    revoked = worker_register(name="revoked-poller", hostname="test")
    revoked_hash = token_hash(worker_token_issue(worker=revoked))
    WorkerToken.objects.filter(worker=revoked).update(revoked_at=timezone.now())
    before = Worker.objects.get(pk=revoked.pk).last_heartbeat_at

    beats = pull_polls.worker_heartbeats_record(
        [
            (worker.pk, keys[worker.pk]),
            (idle.pk, keys[idle.pk]),
            (offline.pk, keys[offline.pk]),
            (revoked.pk, revoked_hash),
            (idle.pk, keys[worker.pk]),  # another worker's token
        ]
    )

    lease = Execution.objects.get(pk=execution.pk).lease_expires_at
    assert beats == [
        pull_polls.Heartbeat(True, WorkerStatus.BUSY, {str(execution.pk): lease}),
        pull_polls.Heartbeat(True, WorkerStatus.IDLE, {}),
        pull_polls.Heartbeat(True, None, {}),
        pull_polls.Heartbeat(False, None, {}),
        pull_polls.Heartbeat(False, None, {}),
    ]
    assert Worker.objects.get(pk=revoked.pk).last_heartbeat_at == before
    assert Worker.objects.get(pk=offline.pk).status == WorkerStatus.OFFLINE


def test_claim_polls_learn_how_many_orders_are_ready(worker):
    key = token_hash(worker_token_issue(worker=worker))
    assert pull_polls.work_orders_claim_possible([(worker.pk, key), (worker.pk, "0" * 64)]) == ([True, False], 0)
    task_create(title="ready one", executor="ticker")
    task_create(title="ready two", executor="ticker")
    assert pull_polls.work_orders_claim_possible([(worker.pk, key)]) == ([True], 1)
    assert pull_polls.work_orders_claim_possible([(worker.pk, key)] * 3) == ([True] * 3, 2)


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="one statement on PostgreSQL only")
def test_on_postgresql_a_batch_of_heartbeats_is_one_statement(worker):
    _running(worker)
    idle = worker_register(name="idle-one", hostname="test")
    beats = [(w.pk, token_hash(worker_token_issue(worker=w))) for w in (worker, idle)]
    with CaptureQueriesContext(connection) as queries:
        pull_polls.worker_heartbeats_record(beats)
        pull_polls.worker_heartbeat_record(worker_id=worker.pk)
    assert len(queries.captured_queries) == 2
