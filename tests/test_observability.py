"""Probes, /metrics and structured logs (agentvine/health.py, metrics.py, logging.py)."""

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.conftest import TestDatabaseProcess as DatabaseProcess
from tests.conftest import wait_for


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- /healthz and /readyz -------------------------------------------------------


def test_healthz_answers_without_the_database_and_for_any_host(client):
    # No django_db mark: a query would fail the request.
    response = client.get("/healthz", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


@pytest.mark.django_db
def test_readyz_names_every_part_when_all_answer(client):
    response = client.get("/readyz", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "ready",
        "checks": {"postgresql": "ok", "redis": "ok", "channel_layer": "ok"},
    }


@pytest.mark.django_db
def test_readyz_is_503_naming_the_part_that_does_not_answer(client, settings):
    # A port nothing listens on: Redis (and the broker and channel layer on it) refuse.
    dead = f"redis://127.0.0.1:{_free_port()}/0"
    settings.REDIS_URL = dead
    settings.CELERY_BROKER_URL = dead
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failing"] == ["redis"]
    assert body["checks"]["postgresql"] == "ok"
    # The class of the error only: no address, no message.
    assert body["checks"]["redis"] == "ConnectionError"
    assert "127.0.0.1" not in response.content.decode()


@pytest.mark.django_db
def test_readyz_answers_within_its_deadline_when_a_part_hangs(client, settings):
    # A listening socket that never answers: the probe must give up on time.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        settings.REDIS_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        settings.CELERY_BROKER_URL = settings.REDIS_URL
        settings.AGENTVINE_READY_TIMEOUT_SECONDS = 0.5
        started = time.monotonic()
        response = client.get("/readyz")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["failing"] == ["redis"]
    assert response.json()["checks"]["redis"] in ("timeout", "TimeoutError")
    assert elapsed < 2.0


def _get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class RedisServer:
    """A redis-server of this test's own on a free port, to stop and start at will."""

    def __init__(self, tmp_path):
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tmp_path
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            cwd=self.dir,
            stdout=subprocess.DEVNULL,
        )
        wait_for(lambda: self._answers(), timeout=10, message="test redis-server")

    def _answers(self):
        try:
            return redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
        except redis.ConnectionError:
            return False

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class PostgresCluster:
    """A PostgreSQL cluster of this test's own (initdb in a temporary directory), as user postgres."""

    def __init__(self):
        self.port = _free_port()
        # Outside pytest's tmp_path: that one is private to root, and the
        # server must run as an unprivileged user.
        self.base = Path(tempfile.mkdtemp(prefix="agentvine-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        bindir = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip())
        self.initdb, self.pg_ctl = str(bindir / "initdb"), str(bindir / "pg_ctl")
        self.as_postgres = []
        if os.geteuid() == 0:
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.base, user="postgres")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self._run(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def _run(self, *argv):
        result = subprocess.run([*self.as_postgres, *argv], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr

    def start(self):
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self):
        if (self.data / "postmaster.pid").exists():
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self):
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def _daphne(tmp_path, env):
    port = _free_port()
    server = DatabaseProcess(
        ["daphne", "-b", "127.0.0.1", "-p", str(port), "agentvine.asgi:application"],
        log_path=tmp_path / "daphne.log",
        extra_env=env,
    )
    server.url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _listening(port) or server.process.poll() is not None, message="daphne")
    assert server.process.poll() is None, server.output()
    return server


def _listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _ready(server):
    status, body = _get(f"{server.url}/readyz")
    return status, json.loads(body)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_daphne_readyz_follows_its_redis_going_away_and_back(tmp_path):
    own_redis = RedisServer(tmp_path)
    own_redis.start()
    server = _daphne(tmp_path, {"REDIS_URL": own_redis.url, "CELERY_BROKER_URL": own_redis.url})
    try:
        assert _ready(server) == (
            200,
            {"status": "ready", "checks": dict.fromkeys(["postgresql", "redis", "channel_layer"], "ok")},
        )
        own_redis.stop()
        status, body = _ready(server)
        assert status == 503
        assert body["failing"] == ["redis", "channel_layer"]
        assert body["checks"]["postgresql"] == "ok"
        assert _get(f"{server.url}/healthz")[0] == 200
        own_redis.start()
        wait_for(lambda: _ready(server)[0] == 200, timeout=15, message="ready again")
    finally:
        server.stop()
        own_redis.stop()


@pytest.mark.e2e
@pytest.mark.skipif(not shutil.which("pg_config"), reason="needs PostgreSQL's server binaries")
def test_daphne_readyz_follows_its_postgresql_going_away_and_back(tmp_path):
    cluster = PostgresCluster()
    cluster.start()
    server = _daphne(tmp_path, {"DATABASE_URL": cluster.url})
    try:
        assert _ready(server)[0] == 200
        cluster.stop()
        status, body = _ready(server)
        assert status == 503
        assert body["failing"] == ["postgresql"]
        assert body["checks"]["redis"] == "ok"
        assert body["checks"]["channel_layer"] == "ok"
        assert _get(f"{server.url}/healthz")[0] == 200
        cluster.start()
        wait_for(lambda: _ready(server)[0] == 200, timeout=20, message="ready again")
    finally:
        server.stop()
        cluster.remove()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_worker_ping_answers_for_a_live_node_and_fails_for_an_absent_one(celery_worker_factory):
    worker = celery_worker_factory(concurrency=1)
    node = f"{worker.name}@{socket.gethostname()}"
    out = io.StringIO()
    call_command("worker_ping", node=node, timeout=5, heartbeats=True, stdout=out)
    assert out.getvalue().strip() == f"{node}: pong"

    with pytest.raises(CommandError, match="did not answer a ping within 1s"):
        call_command("worker_ping", node=f"absent@{socket.gethostname()}", timeout=1)

    os.killpg(worker.process.pid, signal.SIGSTOP)  # hung: neither pings nor heartbeats
    try:
        with pytest.raises(CommandError, match="did not answer"):
            call_command("worker_ping", node=node, timeout=1)
    finally:
        os.killpg(worker.process.pid, signal.SIGCONT)
