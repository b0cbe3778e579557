"""Shared fixtures: real PostgreSQL, real Redis, real Celery worker processes."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers, get_channel_layer
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
# Importing agentvine.asgi in this process (the WebSocket and web tests do)
# turns DATABASE_POOL on in os.environ for the web process it expects to be:
# processes the tests start must not inherit that (a Celery slot with a pool
# holds a connection per thread), so they get the value from before.
_DATABASE_POOL = os.environ.get("DATABASE_POOL")


def child_environ(**overrides):
    """os.environ for a process a test starts, as it was for DATABASE_POOL
    before anything in this process changed it, with ``overrides``."""
    env = dict(os.environ)
    env.pop("DATABASE_POOL", None)
    if _DATABASE_POOL is not None:
        env["DATABASE_POOL"] = _DATABASE_POOL
    return {**env, **overrides}


def _on_sqlite():
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"


def pytest_configure(config):
    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" not in engine and not _on_sqlite():
        pytest.exit("the test suite runs against PostgreSQL: set DATABASE_URL (scripts/test does)", returncode=2)
    # This process only (the workers and servers it starts keep the persistent
    # connections of production): threads here, such as the executors of
    # channels' database_sync_to_async, close their connection after each
    # use, so none still holds the test database when the suite drops it.
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0


def pytest_collection_modifyitems(config, items):
    """On SQLite (the embedded default of scripts/up) only the tests marked
    ``sqlite`` run: the lifecycle and event-log services, whose statements
    branch by database vendor. scripts/test runs them in a second pass.
    Races between threads (``postgresql``) need PostgreSQL's row locks."""
    if not _on_sqlite():
        return

    def runs_here(item):
        return item.get_closest_marker("sqlite") and not item.get_closest_marker("postgresql")

    kept = [item for item in items if runs_here(item)]
    deselected = [item for item in items if not runs_here(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.ping()
    return client


@pytest.fixture
def channel_layer(redis_client):
    """The real channels-redis layer on an empty Redis DB (ours alone).

    Flushed with a plain client: the layer's own flush() would also close the
    connections of the event publisher's loop.
    """
    redis_client.flushdb()
    # A fresh layer object per test: its receive lock and buffers belong to
    # the event loop of one test, and every test runs its own loop.
    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    yield get_channel_layer()
    redis_client.flushdb()


@pytest.fixture
def clean_broker(redis_client):
    """An empty Celery broker DB, so doorbells from earlier tests can't ring."""
    redis_client.flushdb()
    yield redis_client
    redis_client.flushdb()


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_user(
        username=f"op-{uuid.uuid4().hex[:6]}", password="operator-pass-123", is_staff=True
    )


@pytest.fixture
def worker(db):
    from workers_app.services import worker_register

    return worker_register(name=f"test-slot-{uuid.uuid4().hex[:6]}", hostname="test")


@pytest.fixture
def other_worker(db):
    from workers_app.services import worker_register

    return worker_register(name=f"other-slot-{uuid.uuid4().hex[:6]}", hostname="test")


class TestDatabaseProcess:
    """A ``python -m <argv>`` subprocess of ours on the test database and the
    test Redis, with its output in ``log_path`` and its own process group;
    ``wrapper`` is a command that runs it (``setpriv …``)."""

    def __init__(self, argv, *, log_path, extra_env=None, wrapper=None):
        env = {
            **child_environ(),
            "DJANGO_SETTINGS_MODULE": "agentvine.settings_test",
            # The process must see the test database pytest-django created.
            "DATABASE_URL": _database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "PYTHONPATH": str(ROOT),
            **(extra_env or {}),
        }
        self.log_path = Path(log_path)
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [*(wrapper or []), sys.executable, "-m", *argv],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout=10):
        """SIGTERM to the whole group, SIGKILL if it is still there after ``timeout``."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


class CeleryWorkerProcess(TestDatabaseProcess):
    """A real ``celery -A agentvine worker`` subprocess on the test database."""

    def __init__(self, *, concurrency, name, log_path, extra_env=None, wrapper=None):
        self.name = name
        self.concurrency = concurrency
        super().__init__(
            [
                "celery",
                "-A",
                "agentvine",
                "worker",
                "-Q",
                "high,default,low",
                "-c",
                str(concurrency),
                "-n",
                f"{name}@%h",
                "--without-gossip",
                "--without-mingle",
                "-l",
                "info",
            ],
            log_path=log_path,
            extra_env=extra_env,
            wrapper=wrapper,
        )

    def wait_ready(self, timeout=30):
        from workers_app.models import Worker, WorkerStatus

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"celery worker exited early:\n{self.output()}")
            ready = Worker.objects.filter(name__startswith=f"{self.name}@", status=WorkerStatus.IDLE).count()
            if ready >= self.concurrency and "ready." in self.output():
                return
            time.sleep(0.2)
        raise TimeoutError(f"celery worker not ready after {timeout}s:\n{self.output()}")

    def pool_pids(self):
        """PIDs of the pool (child) processes: each is one slot."""
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def stop(self, timeout=15):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()

    def kill(self):
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _database_url():
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def wait_for_other_connections_closed(tries=200):
    """Wait until only the test's own connection uses the test database
    (a web process's threads give theirs back when they end or go quiet)."""
    import psycopg

    with psycopg.connect(_database_url(), autocommit=True) as watcher:
        for _ in range(tries):
            others = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()[0]
            if others <= 1:  # the test's own connection
                return
            time.sleep(0.05)


@pytest.fixture
def celery_worker_factory(transactional_db, clean_broker, tmp_path):
    """Start real Celery workers; every one is stopped at teardown."""
    started = []

    def start(concurrency=1, name=None, extra_env=None, wait=True, wrapper=None):
        name = name or f"w{len(started)}-{uuid.uuid4().hex[:4]}"
        proc = CeleryWorkerProcess(
            concurrency=concurrency, name=name, log_path=tmp_path / f"{name}.log", extra_env=extra_env, wrapper=wrapper
        )
        started.append(proc)
        if wait:
            proc.wait_ready()
        return proc

    yield start
    for proc in started:
        proc.stop()


def wait_for(predicate, timeout=30, interval=0.1, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
