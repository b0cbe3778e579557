"""Partition safety on three worker hosts in network namespaces.

As root, the test builds a bridge and three hosts (``ip netns``, veth pairs)
and runs a real ``celery worker`` in each, against a PostgreSQL cluster and a
redis-server of its own bound to the bridge address; daphne, the guardians
worker and beat run outside, on loopback. It cuts the host running a task's
agent mid-run (its veth taken down: the host hears nothing, its connections
hang half-open) and checks what a partition must not break:

- the work runs again on another host within 15 s of the cut;
- the cut-off agent is stopped by its own slot (self-fencing) within
  AGENTVINE_FENCE_SECONDS of the cut, seen by its process disappearing;
- after the link returns: the work order completed once, no write of the
  stale run was accepted after its work moved on, and the live copy's agent
  token and session were left alone.

Skipped only where network namespaces cannot be made (not root).
"""

import os
import random
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROOT, child_environ, wait_for
from tests.faults.services import PostgresCluster, free_port
from tests.workers_app.conftest import web_and_guardian_processes

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

HEARTBEAT = 0.5
STALLED = 2.0
FENCE = 1.5  # ≤ stalled − heartbeat: the slot fences before the guardian can requeue
LEASE = 4.0
HOSTS = ("a", "b", "c")
RUN_SECONDS = 14
MANAGE = [sys.executable, "manage.py"]
RUNS_ON = "queue_app_execution e JOIN workers_app_worker w ON w.id = e.worker_id"


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class Network:
    """A bridge and one namespace per host, named ``avh17a<tag>…`` (unique per run)."""

    def __init__(self):
        tag = secrets.token_hex(2)
        self.prefix = f"avh17a{tag}"
        self.subnet = random.randint(100, 250)
        self.bridge = f"{self.prefix}br"
        self.address = f"10.231.{self.subnet}.1"
        self.hosts = {}
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for index, host in enumerate(HOSTS):
            namespace, veth = f"{self.prefix}{host}", f"{self.prefix}{host}v"
            _ip("netns", "add", namespace)
            self.hosts[host] = (namespace, veth)
            _ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}n")
            _ip("link", "set", veth, "master", self.bridge)
            _ip("link", "set", veth, "up")
            _ip("link", "set", f"{veth}n", "netns", namespace)
            inside = ["netns", "exec", namespace, "ip"]
            _ip(*inside, "addr", "add", f"10.231.{self.subnet}.{11 + index}/24", "dev", f"{veth}n")
            _ip(*inside, "link", "set", f"{veth}n", "up")
            _ip(*inside, "link", "set", "lo", "up")

    def cut(self, host):
        _ip("link", "set", self.hosts[host][1], "down")

    def mend(self, host):
        _ip("link", "set", self.hosts[host][1], "up")

    def remove(self):
        for namespace, veth in self.hosts.values():
            _ip("link", "del", veth, check=False)
            _ip("netns", "del", namespace, check=False)
        _ip("link", "del", self.bridge, check=False)


def _can_make_namespaces():
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"avh17aprobe{secrets.token_hex(2)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@pytest.fixture
def network():
    reason = _can_make_namespaces()
    if reason:
        pytest.skip(reason)
    network = Network()
    yield network
    network.remove()


class Redis:
    """A redis-server of the test's own, bound to loopback and the bridge."""

    def __init__(self, directory, address):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        subprocess.run(
            ["redis-server", "--bind", "127.0.0.1", address, "--port", str(self.port), "--protected-mode", "no"]
            + ["--save", "", "--appendonly", "no", "--daemonize", "yes", "--dir", str(self.directory)]
            + ["--pidfile", str(self.directory / "redis.pid"), "--logfile", str(self.directory / "redis.log")],
            check=True,
        )
        wait_for(
            lambda: subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).returncode == 0,
            message="redis-server",
        )

    def stop(self):
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True)


class Host:
    """A ``celery worker`` of one slot in a host's namespace."""

    def __init__(self, network, host, *, env, log_path):
        namespace, _ = network.hosts[host]
        self.name = f"{network.prefix}-{host}"
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", "celery", "-A", "agentvine", "worker"]
            + ["-Q", "high,default,low", "-c", "1", "-n", f"{self.name}@%h", "--without-gossip", "--without-mingle"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        self.log.close()


def _agent_pids(marker):
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


class Lab:
    """A PostgreSQL cluster and a redis-server of the test's own listening on
    the bridge, daphne, guardians (every second) and beat on loopback, and a
    one-slot ``celery worker`` in each of ``hosts``' namespaces."""

    def __init__(self, network, tmp_path, hosts=HOSTS):
        self.network = network
        self.cluster = PostgresCluster()
        self.processes, self.hosts, self.redis = [], [], None
        try:
            self._start(tmp_path, hosts)
        except BaseException:
            self.stop()
            raise

    def _start(self, tmp_path, hosts):
        network, cluster = self.network, self.cluster
        conf = Path(f"/etc/postgresql/{cluster.version}/{cluster.name}")
        (conf / "conf.d" / "multihost.conf").write_text(f"listen_addresses = '127.0.0.1,{network.address}'\n")
        with open(conf / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all 10.231.{network.subnet}.0/24 trust\n")
        cluster.restart()
        cluster.psql("CREATE DATABASE agentvine")
        self.redis = Redis(tmp_path / "redis", network.address)
        self.local = {
            **child_environ(),
            "DJANGO_SETTINGS_MODULE": "agentvine.settings_test",
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": cluster.url("agentvine"),
            "REDIS_URL": f"redis://127.0.0.1:{self.redis.port}/0",
            "AGENTVINE_HEARTBEAT_SECONDS": str(HEARTBEAT),
            "AGENTVINE_STALLED_WORKER_SECONDS": str(STALLED),
            "AGENTVINE_FENCE_SECONDS": str(FENCE),
            "AGENTVINE_LEASE_SECONDS": str(LEASE),
            "AGENTVINE_INTERRUPT_GRACE_SECONDS": "1.0",
        }
        subprocess.run([*MANAGE, "migrate", "-v0"], cwd=ROOT, env=self.local, check=True, capture_output=True)
        # Guardians every second.
        self.sql(
            "INSERT INTO django_celery_beat_intervalschedule (every, period) VALUES (1, 'seconds');"
            " UPDATE django_celery_beat_periodictask SET interval_id = (SELECT max(id)"
            " FROM django_celery_beat_intervalschedule) WHERE task LIKE 'workers_app.guard_%'"
        )
        self.processes = web_and_guardian_processes(tmp_path, port=free_port(), extra_env=self.local)
        remote = {
            **self.local,
            "DATABASE_URL": f"postgres://postgres@{network.address}:{cluster.port}/agentvine",
            "REDIS_URL": f"redis://{network.address}:{self.redis.port}/0",
        }
        for host in hosts:
            env = {**remote, "AGENTVINE_VAR_DIR": str(tmp_path / f"var-{host}")}
            self.hosts.append(Host(network, host, env=env, log_path=tmp_path / f"host-{host}.log"))
        wait_for(
            lambda: (
                self.sql(
                    f"SELECT count(*) FROM workers_app_worker WHERE status = 'idle' AND name LIKE '{network.prefix}-%'"
                )
                == str(len(hosts))
            ),
            timeout=60,
            message="one idle slot per host",
        )

    def sql(self, query):
        return self.cluster.psql(query, database="agentvine")

    def task_create(self, title):
        subprocess.run(
            [
                *MANAGE,
                "shell",
                "-c",
                f"from tasks_app.services import task_create; task_create(title={title!r}, executor='ticker')",
            ],
            cwd=ROOT,
            env=self.local,
            check=True,
            capture_output=True,
        )

    def stop(self):
        for host in self.hosts:
            host.stop()
        for process in reversed(self.processes):
            process.stop()
        if self.redis is not None:
            self.redis.stop()
        self.cluster.drop()


def test_a_partitioned_host_fences_itself_and_its_work_runs_once_elsewhere(network, tmp_path):
    lab = Lab(network, tmp_path)
    try:
        marker = f"partition-{uuid.uuid4().hex[:8]}"
        lab.task_create(f"ticker {RUN_SECONDS} {marker}")
        work_order = lab.sql("SELECT id FROM queue_app_workorder")
        first = wait_for(
            lambda: lab.sql(
                f"SELECT e.id || ' ' || w.name FROM {RUNS_ON} WHERE e.work_order_id = '{work_order}'"
                " AND e.status = 'running' AND e.output_chunks > 0"
            ),
            timeout=30,
            message="the agent running and printing",
        )
        stale, slot = first.split(" ", 1)
        cut_host = slot.split("@", 1)[0].rsplit("-", 1)[1]
        pids = wait_for(lambda: _agent_pids(marker), message="the agent's process")

        cut_at = time.monotonic()
        network.cut(cut_host)
        wait_for(
            lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids),
            timeout=FENCE + 5,
            message="the cut-off agent stopped",
        )
        stopped_after = time.monotonic() - cut_at
        live = wait_for(
            lambda: lab.sql(
                f"SELECT id FROM queue_app_execution WHERE work_order_id = '{work_order}'"
                f" AND status = 'running' AND id <> '{stale}'"
            ),
            timeout=20,
            message="the work running again elsewhere",
        )
        rerun_after = time.monotonic() - cut_at
        live_slot = lab.sql(f"SELECT w.name FROM {RUNS_ON} WHERE e.id = '{live}'")

        network.mend(cut_host)
        # The stale host is back while its work runs elsewhere: give its hung
        # calls time to land, then look at the live copy.
        time.sleep(3 * FENCE)
        live_token = lab.sql(
            f"SELECT count(*) FROM queue_app_agenttoken WHERE execution_id = '{live}' AND revoked_at IS NULL"
        )
        session = lab.sql(
            "SELECT s.status || ' ' || w.name FROM workers_app_agentsession s"
            " JOIN workers_app_worker w ON w.id = s.worker_id"
            f" WHERE s.id = (SELECT session_id FROM queue_app_execution WHERE id = '{live}')"
        )
        still_running = lab.sql(f"SELECT status FROM queue_app_execution WHERE id = '{live}'")

        wait_for(
            lambda: lab.sql(f"SELECT status FROM queue_app_workorder WHERE id = '{work_order}'") == "completed",
            timeout=40,
            message="the work completed",
        )
        completed = lab.sql(
            f"SELECT count(*) FROM queue_app_execution WHERE work_order_id = '{work_order}' AND status = 'completed'"
        )
        stale_row = lab.sql(
            # Output chunks written after the stale run was closed: stale writes accepted.
            "SELECT status || ' ' || (SELECT count(*) FROM queue_app_executionoutputchunk c"
            " WHERE c.execution_id = e.id AND c.created_at > e.completed_at)"
            f" FROM queue_app_execution e WHERE e.id = '{stale}'"
        )
    finally:
        lab.stop()

    print(f"partition: agent stopped {stopped_after:.2f}s after the cut, work running again after {rerun_after:.2f}s")
    assert stopped_after <= FENCE + 0.5, f"the cut-off agent ran {stopped_after:.1f}s after the cut"
    assert rerun_after <= 15, f"the work ran again {rerun_after:.1f}s after the cut"
    assert not live_slot.startswith(f"{network.prefix}-{cut_host}@")
    assert still_running == "running", "the live copy must still run when the stale host is back"
    assert live_token == "1", "the live copy's agent token was revoked by the stale run"
    assert session == f"active {live_slot}", f"the live copy's session was changed: {session}"
    assert completed == "1", "the work order completed twice"
    stale_status, late_writes = stale_row.split(" ")
    assert stale_status in ("failed", "interrupted") and late_writes == "0", stale_row


def _connections_to(network, host, port):
    """Established TCP connections from ``host``'s namespace to the bridge's ``port``."""
    namespace, _ = network.hosts[host]
    out = subprocess.run(
        ["ip", "netns", "exec", namespace, "ss", "-Htn", "state", "established", "dst", f"{network.address}:{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return len(out.splitlines())


def test_a_query_in_flight_when_the_link_is_cut_fails_within_the_dead_link_bound_and_the_slot_recovers(
    network, tmp_path
):
    import psycopg

    from agentvine.settings import database_dead_link_options

    # Derived from the fence, as the hosts derive it (AGENTVINE_DATABASE_DEAD_LINK_SECONDS).
    options = database_dead_link_options(FENCE)
    bound = options["keepalives_idle"] + options["keepalives_interval"] * options["keepalives_count"] + 1.0
    lab = Lab(network, tmp_path, hosts=("a", "b"))
    try:
        lab.task_create(f"ticker {RUN_SECONDS}")
        first = wait_for(
            lambda: lab.sql(
                f"SELECT e.id || ' ' || w.name FROM {RUNS_ON} WHERE e.status = 'running' AND e.output_chunks > 0"
            ),
            timeout=30,
            message="the agent running and printing",
        )
        stale, slot = first.split(" ", 1)
        cut_host = slot.split("@", 1)[0].rsplit("-", 1)[1]
        other_host = "b" if cut_host == "a" else "a"
        host_address = f"10.231.{network.subnet}.{11 + HOSTS.index(cut_host)}"
        # The slot's next output write waits on a row lock: a query in flight.
        locker = psycopg.connect(lab.cluster.url("agentvine"))
        locker.execute("SELECT 1 FROM queue_app_execution WHERE id = %s FOR UPDATE", [stale])
        wait_for(
            lambda: (
                lab.sql(
                    "SELECT count(*) FROM pg_stat_activity"
                    f" WHERE client_addr = '{host_address}' AND wait_event_type = 'Lock'"
                )
                == "1"
            ),
            timeout=10,
            message="the slot's query waiting on the lock",
        )
        assert _connections_to(network, cut_host, lab.cluster.port) == 1  # its one connection, heartbeat included

        cut_at = time.monotonic()
        network.cut(cut_host)
        # Its answer now goes nowhere; the guardian may take the work back.
        time.sleep(0.3)
        locker.rollback()
        wait_for(
            lambda: _connections_to(network, cut_host, lab.cluster.port) == 0,
            timeout=bound + 30,
            message="the cut-off slot to drop its connection",
        )
        dropped_after = time.monotonic() - cut_at
        live = wait_for(
            lambda: lab.sql(f"SELECT id FROM queue_app_execution WHERE status = 'running' AND id <> '{stale}'"),
            timeout=20,
            message="the work running again on the other host",
        )

        network.mend(cut_host)
        mended_at = time.time()
        # Recovered: the slot beats again, idle, and runs new work (the other host is busy).
        cut_slot = f"{network.prefix}-{cut_host}@%"
        wait_for(
            lambda: (
                lab.sql(
                    f"SELECT count(*) FROM workers_app_worker WHERE name LIKE '{cut_slot}' AND status = 'idle'"
                    f" AND last_heartbeat_at > to_timestamp({mended_at})"
                )
                == "1"
            ),
            timeout=30,
            message="the cut-off slot beating again",
        )
        lab.task_create("ticker 1")
        after = wait_for(
            lambda: lab.sql(
                f"SELECT w.name FROM {RUNS_ON} JOIN queue_app_workorder o ON o.id = e.work_order_id"
                " JOIN tasks_app_task t ON t.id = o.task_id WHERE t.title = 'ticker 1' AND e.status = 'completed'"
            ),
            timeout=40,
            message="new work completed after the link returned",
        )
        still_live = lab.sql(f"SELECT status FROM queue_app_execution WHERE id = '{live}'")
        connections_back = _connections_to(network, cut_host, lab.cluster.port)
        locker.close()
    finally:
        lab.stop()

    print(f"dead link: the blocked query's connection dropped {dropped_after:.2f}s after the cut (bound {bound:.1f}s)")
    assert dropped_after <= bound, f"the query in flight hung {dropped_after:.1f}s after the cut"
    assert after.startswith(f"{network.prefix}-{cut_host}@"), f"the new work ran on {after}, not the recovered host"
    assert still_live in ("running", "completed"), f"the copy on {other_host} was disturbed: {still_live}"
    assert connections_back == 1
