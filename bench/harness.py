"""Shared setup for benchmarks: a scratch PostgreSQL database, a clean Redis DB
and real Celery worker processes, all on this machine.

    BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/agentvine_bench)
    BENCH_REDIS_URL    (default redis://127.0.0.1:6379/15)
"""

import os
import signal
import socket
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


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_web(application, name, extra_env=None):
    """A daphne serving ``application`` on a free port, DEBUG off as in
    production; returns ``(process, base URL)``. Stop it with :func:`stop_worker`."""
    port = free_port()
    log = open(f"/tmp/bench-{name}-web.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), application],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DEBUG": "false", **(extra_env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def start_web_processes(application, name, count, extra_env=None):
    """``count`` daphne processes serving the platform behind one port, as
    production runs several (``agentvine/web_processes.py``).
    Returns ``([process, …], base URL)``."""
    from agentvine.web_processes import APPLICATION, web_processes_start

    assert application == APPLICATION
    log = open(f"/tmp/bench-{name}-web.log", "w")
    procs, port = web_processes_start(
        processes=count,
        bind="127.0.0.1",
        port=0,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DEBUG": "false", **(extra_env or {})},
        stdout=log,
    )
    return procs, f"http://127.0.0.1:{port}"


def wait_until(predicate, timeout, what, interval=0.02):
    """Poll ``predicate`` until it returns something truthy; that is returned."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)
    return value


# --- CPU accounting (Linux /proc) ---------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    # The command name may hold spaces; the fields after it never do.
    return text[text.rindex(")") + 2 :].split()


def process_tree(root_pid):
    """``root_pid`` and every living descendant of it."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat_fields(entry)[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids):
    """CPU time (user + system) used so far by ``pids`` and their reaped children."""
    ticks = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        ticks += sum(int(value) for value in fields[11:15])
    return ticks / _TICK


def machine_busy_seconds():
    """CPU time all cores spent on anything but idling, since boot."""
    with open("/proc/stat") as stat:
        values = [int(value) for value in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / _TICK


def _command_name(pid):
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except OSError:
        return ""


def service_roots():
    """The PostgreSQL postmaster and the Redis server on this machine, when found.

    The postmaster's reaped-children time holds the CPU of every backend that
    has exited, so short-lived connections are counted too.
    """
    roots = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        name = _command_name(entry)
        if name == "redis-server":
            roots.setdefault("redis", int(entry))
        elif name.startswith("postgres"):
            try:
                parent = int(_stat_fields(entry)[1])
            except (OSError, IndexError, ValueError):
                continue
            if not _command_name(parent).startswith("postgres"):
                roots.setdefault("postgres", int(entry))
    return roots


class CpuMeter:
    """CPU seconds spent by named process trees (and this process) over an interval.

    PostgreSQL and Redis are counted whole (they serve the whole machine);
    ``other`` is the rest of the machine's busy time.
    """

    def __init__(self, **roots):
        import resource

        self._resource = resource
        self.roots = {**roots, **service_roots()}
        self._start = self._sample()

    def _sample(self):
        usage = self._resource.getrusage(self._resource.RUSAGE_SELF)
        sample = {name: cpu_seconds(process_tree(pid)) for name, pid in self.roots.items()}
        sample["bench client"] = usage.ru_utime + usage.ru_stime
        sample["machine"] = machine_busy_seconds()
        return sample

    def stop(self):
        end = self._sample()
        spent = {name: end[name] - self._start[name] for name in end}
        spent["other"] = spent["machine"] - sum(v for k, v in spent.items() if k != "machine")
        return spent


def cpu_report(spent, per, unit):
    """One line: milliseconds of CPU per ``unit`` for each process group."""
    parts = [f"{name} {1000 * seconds / per:.2f}" for name, seconds in spent.items() if name != "machine"]
    return f"CPU ms per {unit}: " + ", ".join(parts) + f" (machine {1000 * spent['machine'] / per:.2f})"
