"""PostgreSQL restarted under load, for real: the suite's own throw-away
cluster (tests/faults/services.py) is restarted while agents run on real
Celery workers and a client creates tasks through a real daphne. Every task
completes exactly once, none stays stuck, no retry is spent, and the API
answers 503 (never 500) while the database is away."""

import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.conftest import ROOT, CeleryWorkerProcess, child_environ
from tests.faults.services import PostgresCluster, free_port
from tests.workers_app.conftest import FAST_GUARD_ENV, web_and_guardian_processes

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

RUNS = 20  # on four slots: four running and sixteen queued when PostgreSQL restarts


@pytest.fixture
def cluster():
    cluster = PostgresCluster()
    yield cluster
    cluster.drop()


def _manage(env, *args):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_work_survives_a_postgresql_restart(cluster, clean_broker, tmp_path):

    cluster.psql("CREATE DATABASE agentvine")
    database_url = cluster.url("agentvine")
    env = {**child_environ(), "DJANGO_SETTINGS_MODULE": "agentvine.settings_test", "DATABASE_URL": database_url}
    _manage(env, "migrate", "-v0")
    # Guardians every second, as the other recovery tests run them.
    cluster.psql(
        "INSERT INTO django_celery_beat_intervalschedule (every, period) VALUES (1, 'seconds');"
        " UPDATE django_celery_beat_periodictask SET interval_id = (SELECT max(id)"
        " FROM django_celery_beat_intervalschedule) WHERE task LIKE 'workers_app.guard_%'",
        database="agentvine",
    )
    token = _manage(
        env,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; from workers_app.services import api_token_create;"
        "u = User.objects.create_user('op', password='x', is_staff=True);"
        "print(api_token_create(user=u, name='fault')[1])",
    ).splitlines()[-1]

    extra = {**FAST_GUARD_ENV, "DATABASE_URL": database_url}
    port = free_port()
    worker = CeleryWorkerProcess(concurrency=4, name="fault", log_path=tmp_path / "worker.log", extra_env=extra)
    started = [*web_and_guardian_processes(tmp_path, port=port, extra_env=extra), worker]
    api = requests.Session()
    api.headers["Authorization"] = f"Token {token}"
    base = f"http://127.0.0.1:{port}/api/v1"

    def create(title, timeout=10):
        return api.post(f"{base}/tasks/", json={"title": title, "executor": "ticker"}, timeout=timeout)

    def running():
        return int(cluster.psql("SELECT count(*) FROM queue_app_workorder WHERE status = 'running'", "agentvine"))

    try:
        _wait(lambda: _listening(port), 30, "daphne")
        _wait(lambda: "ready." in worker.output(), 60, "the worker")
        created = [create(f"ticker 2 #{n}") for n in range(RUNS)]
        assert [reply.status_code for reply in created] == [201] * RUNS
        _wait(lambda: running() == 4, 30, "four runs")
        time.sleep(1)  # output flowing

        # A client keeps creating tasks through the restart.
        replies, stop = [], threading.Event()

        def client():
            n = 0
            while not stop.is_set():
                try:
                    replies.append(create(f"ticker 0.5 during #{n}").status_code)
                except requests.RequestException as exc:
                    replies.append(type(exc).__name__)
                n += 1
                time.sleep(0.1)

        thread = threading.Thread(target=client)
        thread.start()
        cluster.restart()
        back_at = time.monotonic()
        time.sleep(2)
        stop.set()
        thread.join()

        def finished():
            rows = cluster.psql(
                "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FROM queue_app_workorder", "agentvine"
            )
            done, total = map(int, rows.split("|"))
            return done == total

        _wait(finished, 90, "every task to complete")
        moving_again = time.monotonic() - back_at

        # Away for longer than the web's connection pool waits: a 503 that
        # says when to try again, and nothing created.
        cluster.stop()
        try:
            refused = create("ticker 0.5 while away", timeout=60)
        finally:
            cluster.start()
    finally:
        for process in reversed(started):
            process.stop()

    # Through the restart the pool waited for the database: slower, never a 500.
    assert set(replies) <= {201, 503}, replies
    assert (refused.status_code, refused.headers["Retry-After"]) == (503, "3")
    assert refused.json()["code"] == "unavailable"
    # Exactly once, nothing stuck, no retry spent; what a 503 refused was not created.
    summary = cluster.psql(
        "SELECT count(*), count(*) FILTER (WHERE status = 'completed'), sum(retry_count),"
        " (SELECT count(*) FROM queue_app_execution WHERE status = 'completed'),"
        " (SELECT count(*) FROM queue_app_execution WHERE status = 'running')"
        " FROM queue_app_workorder",
        "agentvine",
    )
    total, completed, retries, completed_runs, open_runs = map(int, summary.split("|"))
    assert total == RUNS + replies.count(201)
    assert (completed, retries, completed_runs, open_runs) == (total, 0, total, 0)
    assert moving_again < 90


def _listening(port):
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
