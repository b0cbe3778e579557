"""The web process's ASGI handler (agentvine/asgi_handler.py), driven through
its ASGI interface: each request's sync code runs in one thread, threads are
reused, a slow request holds up nobody, and a request whose client went away
gives its still-busy thread to no other request."""

import asyncio
import logging
import threading

import psycopg
import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.core.signals import request_started

from agentvine.asgi import application, django_asgi_app
from tasks_app.services import task_create
from tests.conftest import _database_url, wait_for_other_connections_closed
from workers_app.services import api_token_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _request_threads_closed():
    yield
    # Request threads keep their database connections (as in production, where
    # they come from a pool): ended here so the test database can be dropped.
    django_asgi_app.retire_idle_threads()
    wait_for_other_connections_closed()


def _scope(path, query=b"", headers=()):
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def _start(path, query=b"", headers=()):
    communicator = ApplicationCommunicator(application, _scope(path, query, headers))
    await communicator.send_input({"type": "http.request", "body": b""})
    return communicator


async def _response(communicator, timeout):
    start = await communicator.receive_output(timeout)
    body = await communicator.receive_output(timeout)
    await communicator.wait(timeout)
    return start["status"], body["body"]


class _Threads:
    """Which thread each request started in, and which thread logged its response."""

    def __init__(self):
        self.started, self.logged = [], []

    def __enter__(self):
        request_started.connect(self._on_started)
        self._handler = logging.Handler()
        self._handler.emit = lambda record: self.logged.append(record.thread)
        # 4xx are logged at WARNING, below the level settings give this logger.
        self._logger = logging.getLogger("django.request")
        self._level = self._logger.level
        self._logger.setLevel(logging.WARNING)
        self._logger.addHandler(self._handler)
        return self

    def __exit__(self, *exc):
        request_started.disconnect(self._on_started)
        self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._level)

    def _on_started(self, **kwargs):
        self.started.append(threading.get_ident())


def test_a_request_runs_its_chain_and_view_in_one_thread_and_the_next_request_reuses_it():
    async def three_requests():
        loop_thread = threading.get_ident()
        statuses = []
        for _ in range(3):
            communicator = await _start("/api/v1/queue/")
            statuses.append((await _response(communicator, 10))[0])
        return loop_thread, statuses

    with _Threads() as threads:
        loop_thread, statuses = async_to_sync(three_requests)()
    # Anonymous: 401, logged by Django's handler at the end of the sync chain.
    assert statuses == [401, 401, 401]
    assert len(threads.started) == 3 and len(threads.logged) == 3
    # The request_started receivers, the middleware and the view ran in the
    # same thread, not the event loop's, and every request got that thread.
    assert len(set(threads.started)) == 1
    assert threads.logged == threads.started
    assert threads.started[0] != loop_thread


def test_a_slow_request_and_an_abandoned_one_hold_up_no_other_request(operator):
    task = task_create(title="locked", created_by=operator)
    key = api_token_create(user=operator, name="asgi")[1]
    headers = [(b"authorization", f"Token {key}".encode()), (b"content-type", b"application/json")]
    patch = {**_scope(f"/api/v1/tasks/{task.id}/", headers=headers), "method": "PATCH"}
    locker = psycopg.connect(_database_url())
    watcher = psycopg.connect(_database_url(), autocommit=True)

    def waiting_for_lock():
        return watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()[0]

    async def scenario():
        # Another transaction holds the task's row: the PATCH's view blocks in its thread.
        locker.execute("SELECT 1 FROM tasks_app_task WHERE id = %s FOR UPDATE", [task.id])
        slow = ApplicationCommunicator(application, patch)
        await slow.send_input({"type": "http.request", "body": b'{"title": "renamed"}'})
        for _ in range(200):
            if waiting_for_lock():
                break
            await asyncio.sleep(0.05)
        assert waiting_for_lock() == 1
        # While it blocks, another request is served.
        during = await _response(await _start("/api/v1/queue/"), 3)
        # The server gives up on the slow request (as daphne does with a
        # client gone for good); its thread is still blocked in the view.
        slow.future.cancel()
        await asyncio.sleep(0.1)
        # Served promptly: the blocked thread was not handed to this request.
        after = await _response(await _start("/api/v1/queue/"), 3)
        return during[0], after[0]

    try:
        during, after = async_to_sync(scenario)()
    finally:
        locker.rollback()
        locker.close()
        watcher.close()
    assert (during, after) == (401, 401)
