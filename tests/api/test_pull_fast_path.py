"""A pull worker's heartbeat and idle claim poll (workers_app/pull_fast_path.py,
queue_app/pull_polls.py), driven through the web's ASGI application: one
statement each, answered without Django's chain, with the same answers,
authentication, throttling and fencing as the Django path."""

import json

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.core.signals import request_started
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agentvine.asgi import application, django_asgi_app
from queue_app import lifecycle
from queue_app.models import Execution, ExecutionStatus
from tasks_app.services import task_create
from tests.conftest import wait_for_other_connections_closed
from workers_app.models import Worker, WorkerStatus, WorkerToken
from workers_app.services import worker_register, worker_token_issue

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _threads_closed():
    yield
    django_asgi_app.retire_idle_threads()
    # The fast path's thread gives its connection back after a second's quiet.
    wait_for_other_connections_closed()


class _DjangoRequests:
    """How many requests reached Django's handler."""

    def __enter__(self):
        self.count = 0
        request_started.connect(self._started)
        return self

    def __exit__(self, *exc):
        request_started.disconnect(self._started)

    def _started(self, **kwargs):
        self.count += 1


def _post(path, key, body=b"", headers=()):
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Token {key}".encode()),
            (b"content-type", b"application/json"),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    async def exchange():
        communicator = ApplicationCommunicator(application, scope)
        await communicator.send_input({"type": "http.request", "body": body})
        start = await communicator.receive_output(10)
        chunks = []
        while True:
            message = await communicator.receive_output(10)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await communicator.wait(10)
        return start["status"], {name.lower(): value for name, value in start["headers"]}, b"".join(chunks)

    return async_to_sync(exchange)()


def _beat(worker, key, headers=()):
    status, response_headers, body = _post(f"/api/v1/workers/{worker.pk}/heartbeat/", key, headers=headers)
    return status, response_headers, json.loads(body) if body else None


def _running(worker, title="fast lease"):
    work_order = task_create(title=title, executor="ticker").work_orders.get()
    claimed = lifecycle.work_order_claim(worker=worker, work_order_id=work_order.pk)
    return lifecycle.work_order_start(work_order=claimed, worker=worker)


@pytest.fixture
def worker_key(worker):
    return worker_token_issue(worker=worker)


def test_a_heartbeat_is_answered_without_django_and_renews_its_runs_lease(worker, worker_key):
    _, execution = _running(worker)
    Execution.objects.filter(pk=execution.pk).update(lease_expires_at=timezone.now())
    with _DjangoRequests() as django:
        status, _, beat = _beat(worker, worker_key)
    assert status == 200
    assert django.count == 0
    assert beat["ok"] is True and beat["status"] == WorkerStatus.BUSY
    assert list(beat["leases"]) == [str(execution.pk)]
    renewed = Execution.objects.get(pk=execution.pk).lease_expires_at
    assert renewed > timezone.now()
    assert beat["leases"][str(execution.pk)].replace("Z", "+00:00") == renewed.isoformat()
    assert Worker.objects.get(pk=worker.pk).last_heartbeat_at is not None


def test_the_fast_answer_is_the_django_answer(worker, worker_key, settings):
    _, execution = _running(worker)
    _, fast_headers, fast = _beat(worker, worker_key)
    # An Idempotency-Key sends it through Django (which stores its answer).
    with _DjangoRequests() as django:
        _, django_headers, slow = _beat(worker, worker_key, headers=[(b"idempotency-key", b"beat-1")])
    assert django.count == 1
    assert fast.keys() == slow.keys() and list(fast["leases"]) == list(slow["leases"]) == [str(execution.pk)]
    assert (fast["ok"], fast["status"], fast["fence_seconds"]) == (slow["ok"], slow["status"], slow["fence_seconds"])
    for name in (
        b"content-type",
        b"content-security-policy",
        b"permissions-policy",
        b"x-content-type-options",
        b"x-frame-options",
        b"referrer-policy",
        b"cross-origin-opener-policy",
        b"vary",
        b"allow",
    ):
        assert fast_headers.get(name) == django_headers.get(name), name
    assert fast_headers[b"x-request-id"]


def test_one_statement_records_a_heartbeat_renews_the_leases_and_answers_the_status(worker, worker_client):
    _, execution = _running(worker)
    # Through Django: the token's read, then one statement.
    with CaptureQueriesContext(connection) as queries:
        beat = worker_client.post(f"/api/v1/workers/{worker.pk}/heartbeat/", format="json").json()
    assert list(beat["leases"]) == [str(execution.pk)] and beat["status"] == WorkerStatus.BUSY
    assert len(queries.captured_queries) == 2, [q["sql"] for q in queries.captured_queries]


def test_the_fast_path_spends_one_statement_on_a_batch_of_heartbeats(worker, worker_key):
    from workers_app.pull_fast_path import Call, PullFastPath

    _running(worker)
    second = worker_register(name="second-fast", hostname="test")
    second_key = worker_token_issue(worker=second)
    fast = PullFastPath(django_asgi_app)

    def calls():
        return [
            Call(key=key, heartbeat_worker=str(w.pk), loop=None, answered=None)
            for w, key in ((worker, worker_key), (second, second_key))
        ]

    fast.answer(calls())  # learns which worker each token belongs to
    with CaptureQueriesContext(connection) as queries:
        answers = fast.answer(calls())
    assert [(status, json.loads(body)["status"]) for status, body, _ in answers] == [
        (200, WorkerStatus.BUSY),
        (200, WorkerStatus.IDLE),
    ]
    assert len(queries.captured_queries) == 1, [q["sql"] for q in queries.captured_queries]


def test_a_revoked_worker_token_stops_working_on_its_next_call(worker, worker_key):
    assert _beat(worker, worker_key)[0] == 200
    assert _post("/api/v1/queue/claim/", worker_key, b"{}")[0] == 204
    # Revoked as the admin's action does, while this process remembers the token.
    WorkerToken.objects.filter(worker=worker).update(revoked_at=timezone.now())
    before = Worker.objects.get(pk=worker.pk).last_heartbeat_at
    status, _, body = _beat(worker, worker_key)
    assert status == 401 and body["detail"] == "invalid or revoked token"
    assert Worker.objects.get(pk=worker.pk).last_heartbeat_at == before
    assert _post("/api/v1/queue/claim/", worker_key, b"{}")[0] == 401


def test_a_worker_may_not_heartbeat_another(worker, worker_key):
    other = worker_register(name="other-fast", hostname="test")
    before = Worker.objects.get(pk=other.pk).last_heartbeat_at
    status, _, body = _beat(other, worker_key)
    assert status == 403
    assert Worker.objects.get(pk=other.pk).last_heartbeat_at == before


def test_an_offline_worker_that_heartbeats_comes_back_idle(worker, worker_key):
    Worker.objects.filter(pk=worker.pk).update(status=WorkerStatus.OFFLINE)
    status, _, beat = _beat(worker, worker_key)
    assert status == 200 and beat["ok"] is True and beat["status"] == WorkerStatus.IDLE
    assert Worker.objects.get(pk=worker.pk).status == WorkerStatus.IDLE


def test_a_requeued_run_is_missing_from_the_heartbeat(worker, worker_key):
    work_order, execution = _running(worker)
    lifecycle.work_order_requeue(work_order=work_order, reason="worker cut off", lost=True)
    status, _, beat = _beat(worker, worker_key)
    assert status == 200 and beat["leases"] == {}
    assert Execution.objects.get(pk=execution.pk).status != ExecutionStatus.RUNNING


def test_an_idle_claim_poll_finds_nothing_without_django_and_a_ready_order_is_claimed(worker, worker_key):
    with _DjangoRequests() as django:
        status, _, body = _post("/api/v1/queue/claim/", worker_key, b"{}")
        assert (status, body, django.count) == (204, b"", 0)
        work_order = task_create(title="ready for a pull", executor="ticker").work_orders.get()
        status, _, body = _post("/api/v1/queue/claim/", worker_key, b"{}")
    assert status == 200 and django.count == 1
    assert json.loads(body)["work_order"]["id"] == str(work_order.pk)


def test_fast_calls_count_against_the_same_throttle(worker, worker_key, settings):
    settings.AGENTVINE_API_RATE = "3/min"
    assert _post("/api/v1/queue/claim/", worker_key, b'{"work_order": null}')[0] == 204  # through Django
    assert _beat(worker, worker_key)[0] == 200
    assert _post("/api/v1/queue/claim/", worker_key, b"{}")[0] == 204
    with _DjangoRequests() as django:
        status, headers, body = _beat(worker, worker_key)
    assert status == 429 and django.count == 0
    assert int(headers[b"retry-after"]) > 0
    assert body["detail"].startswith("Request was throttled.")
