"""How many PostgreSQL and Redis connections a worker node holds, counted on
the servers themselves (pg_stat_activity, CLIENT LIST) and told apart by the
process that owns each socket, with a real Celery worker running a real task.

A fleet's budget is these numbers times its slots: PostgreSQL's default
max_connections=100 is the scarce one."""

import re
import subprocess
import time

import pytest
from django.conf import settings
from django.db import connection

# As the web tests that share this process do: it sets DATABASE_POOL for a
# web process in os.environ, which the worker started here must not inherit.
import agentvine.asgi  # noqa: F401
from queue_app.models import WorkOrder, WorkOrderStatus
from tasks_app.models import Task, TaskStatus
from tasks_app.services import task_create
from tests.conftest import wait_for
from workers_app.models import Worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SLOTS = 2
# What each slot process may hold: its one PostgreSQL connection (shared by
# its heartbeat), and in Redis its wake-up subscription, one connection its
# threads share for short commands, and the live-event layer's.
PG_PER_SLOT = 1
REDIS_PER_SLOT = 3


def _socket_owners(port):
    """{local port of a client socket to 127.0.0.1:``port``: pids holding it}
    (a socket inherited over a fork is held by both processes)."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", "dst", f"127.0.0.1:{port}"], capture_output=True, text=True
    ).stdout
    owners = {}
    for line in out.splitlines():
        fields = line.split()
        local = fields[2] if len(fields) > 3 else fields[0]
        owners[int(local.rsplit(":", 1)[1])] = [int(pid) for pid in re.findall(r"pid=(\d+)", line)]
    return owners


def _pg_backends_by_pid():
    db = settings.DATABASES["default"]
    owners = _socket_owners(int(db.get("PORT") or 5432))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT client_port FROM pg_stat_activity WHERE datname = current_database() AND client_port > 0"
        )
        ports = [row[0] for row in cursor.fetchall()]
    counts = {}
    for port in ports:
        for pid in owners.get(port, ()):
            counts[pid] = counts.get(pid, 0) + 1
    return counts


def _redis_clients_by_pid(redis_client):
    port = redis_client.connection_pool.connection_kwargs.get("port", 6379)
    owners = _socket_owners(port)
    counts = {}
    for client in redis_client.client_list():
        for pid in owners.get(int(client["addr"].rsplit(":", 1)[1]), ()):
            counts[pid] = counts.get(pid, 0) + 1
    return counts


def _at(timestamp):
    import datetime

    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)


def _count(by_pid, pids):
    return {pid: by_pid.get(pid, 0) for pid in pids}


def _explain(pids):
    """What each slot's backends last ran, and the slot's settings environment."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT client_port, application_name, backend_start, state, left(query, 120) FROM pg_stat_activity"
            " WHERE datname = current_database() AND client_port > 0"
        )
        rows = cursor.fetchall()
    owners = _socket_owners(int(settings.DATABASES["default"].get("PORT") or 5432))
    for row in rows:
        print("backend", owners.get(row[0]), row)
    for pid in pids:
        environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        print(pid, sorted(e.decode() for e in environ if re.match(rb"(DATABASE|AGENTVINE|CONN|PG|DJANGO|CELERY)", e)))


def test_each_slot_holds_one_postgresql_connection_and_few_redis_ones_while_it_runs(
    celery_worker_factory, operator, redis_client
):
    node = celery_worker_factory(concurrency=SLOTS)
    slots = node.pool_pids()
    assert len(slots) == SLOTS

    idle_pg = _count(_pg_backends_by_pid(), slots)
    task = task_create(title="ticker 3", executor="ticker", created_by=operator)
    order = wait_for(
        lambda: WorkOrder.objects.filter(task=task, status=WorkOrderStatus.RUNNING).select_related("worker").first(),
        timeout=20,
        message="the run to start",
    )
    wait_for(lambda: order.executions.filter(output_chars__gt=0).exists(), timeout=10, message="output")
    # Past a heartbeat and a lease renewal of the run.
    time.sleep(settings.AGENTVINE_HEARTBEAT_SECONDS + 0.5)
    running_pg = _count(_pg_backends_by_pid(), slots)
    running_redis = _count(_redis_clients_by_pid(redis_client), slots)
    node_redis = _redis_clients_by_pid(redis_client).get(node.process.pid, 0)
    node_pg = _pg_backends_by_pid().get(node.process.pid, 0)
    wait_for(lambda: Task.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, timeout=20, message="completion")
    after_pg = _count(_pg_backends_by_pid(), slots)
    # Both slots kept beating through the shared connection, the busy one too.
    beat_since = time.time() - 2 * settings.AGENTVINE_HEARTBEAT_SECONDS - 1
    beats = Worker.objects.filter(name__startswith=f"{node.name}@", last_heartbeat_at__gte=_at(beat_since))
    assert beats.count() == SLOTS

    print(f"pg idle {idle_pg} running {running_pg} after {after_pg} node {node_pg}")
    if any(n > PG_PER_SLOT for n in [*idle_pg.values(), *running_pg.values(), *after_pg.values()]):
        _explain(slots)
    print(f"redis running {running_redis} node {node_redis}")
    assert all(n <= PG_PER_SLOT for n in idle_pg.values()), idle_pg
    assert all(n <= PG_PER_SLOT for n in running_pg.values()), running_pg
    assert all(n <= PG_PER_SLOT for n in after_pg.values()), after_pg
    assert all(n <= REDIS_PER_SLOT for n in running_redis.values()), running_redis
    assert node_pg == 0
