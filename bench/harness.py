"""Shared setup for benchmarks: a scratch PostgreSQL database, a clean Redis DB
and real Celery worker processes, all on this machine.

    BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/agentvine_bench)
    BENCH_REDIS_URL    (default redis://127.0.0.1:6379/15)
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/agentvine_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")


def setup_django(extra_env=None):
    """Point Django at the scratch database, migrate it and empty it."""
    os.environ["DATABASE_URL"] = DATABASE_URL
    os.environ["REDIS_URL"] = REDIS_URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentvine.settings_test")
    os.environ.update(extra_env or {})
    sys.path.insert(0, str(ROOT))
    import psycopg

    admin_url = DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
    name = DATABASE_URL.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("flush", interactive=False, verbosity=0)
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def start_worker(concurrency, name, extra_env=None, log_dir="/tmp"):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(extra_env or {})}
    log = open(Path(log_dir) / f"bench-{name}.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
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
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    from workers_app.models import Worker, WorkerStatus

    deadline = time.monotonic() + 60
    while Worker.objects.filter(name__startswith=f"{name}@", status=WorkerStatus.IDLE).count() < concurrency:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"worker {name} did not start; see {log.name}")
        time.sleep(0.2)
    return proc


def stop_worker(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_until(predicate, timeout, what, interval=0.02):
    """Poll ``predicate`` until it returns something truthy; that is returned."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)
    return value
