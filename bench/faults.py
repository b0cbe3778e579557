"""Faults in a loop, with real processes, on a PostgreSQL cluster and a
redis-server of its own (never the shared services): for each fault, the time
from its end to all work moving again, and work orders lost, run twice, stuck
and retries spent.

- PostgreSQL restarted (`pg_ctlcluster restart`) while agents run on every slot.
- Redis (the broker) restarted empty with 200 work orders queued behind busy slots.
- A worker node `kill -9`ed with 500 newer doorbells queued ahead of its work.

Deployed with the production timings (heartbeat 3 s, stalled after 9 s, the
guardians every 3 s from the migrated schedule); two worker nodes, 4 + 2 slots.

    .venv/bin/python bench/faults.py [--rounds 2]
"""

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.faults.services import PostgresCluster, RedisServer  # noqa: E402

SLOTS = {"node-a": 4, "node-b": 2}
PRODUCTION_TIMINGS = {"AGENTVINE_HEARTBEAT_SECONDS": "3", "AGENTVINE_STALLED_WORKER_SECONDS": "9"}


def _retrying(call):
    """A query from this process, across the database restart it causes."""
    from django.db import DatabaseError, connection

    for _ in range(100):
        try:
            return call()
        except DatabaseError:
            connection.close()
            time.sleep(0.2)
    return call()


def _outcome(orders):
    """(lost, run twice, stuck, retries spent) of ``orders`` once the dust
    settled: lost ended failed or dead (the bench cancels nothing it counts
    as lost), stuck is still queued or active, twice completed more than once."""
    from queue_app.models import ACTIVE_STATUSES, ExecutionStatus, WorkOrderStatus

    rows = list(orders.values_list("pk", "status", "retry_count"))
    lost = sum(1 for _, status, _ in rows if status in (WorkOrderStatus.FAILED, WorkOrderStatus.DEAD))
    twice = sum(
        1 for pk, _, _ in rows if orders.get(pk=pk).executions.filter(status=ExecutionStatus.COMPLETED).count() > 1
    )
    stuck = sum(1 for _, status, _ in rows if status in (WorkOrderStatus.QUEUED, *ACTIVE_STATUSES))
    return lost, twice, stuck, sum(retries for _, _, retries in rows)


def _first_activity_after(order, moment):
    """When ``order``'s work next wrote anything (output, or its end) after ``moment``."""
    from queue_app.models import ExecutionOutputChunk

    chunk = (
        ExecutionOutputChunk.objects.filter(execution__work_order=order, created_at__gt=moment)
        .order_by("created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    ended = (
        order.executions.filter(completed_at__gt=moment).order_by("completed_at").values_list("completed_at", flat=True)
    )
    found = [when for when in [chunk, ended.first()] if when]
    return min(found) if found else None


def fault_postgresql_restart(cluster, harness):
    from queue_app.models import WorkOrder, WorkOrderStatus
    from tasks_app.services import tasks_create

    tasks = tasks_create(specs=[{"title": "ticker 8", "executor": "ticker"} for _ in range(sum(SLOTS.values()))])
    orders = WorkOrder.objects.filter(task__in=tasks)
    harness.wait_until(lambda: orders.filter(status=WorkOrderStatus.RUNNING).count() == len(tasks), 60, "every slot")
    time.sleep(1)
    cluster.restart()
    back = _now()
    _retrying(lambda: harness.wait_until(lambda: _settled(orders), 120, "the runs to end", interval=0.5))
    moving = [(_first_activity_after(order, back) - back).total_seconds() for order in orders]
    return moving, _outcome(orders)


def fault_redis_restart(broker, harness):
    from queue_app.models import WorkOrder, WorkOrderStatus
    from tasks_app.services import tasks_create

    busy = tasks_create(specs=[{"title": "ticker 6", "executor": "ticker"} for _ in range(sum(SLOTS.values()))])
    harness.wait_until(
        lambda: WorkOrder.objects.filter(task__in=busy, status=WorkOrderStatus.RUNNING).count() == len(busy),
        60,
        "every slot busy",
    )
    queued = tasks_create(specs=[{"title": "quick", "executor": "quick"} for _ in range(200)])
    broker.stop()
    broker.start()
    back = _now()
    orders = WorkOrder.objects.filter(task__in=[*busy, *queued])
    harness.wait_until(lambda: _settled(orders), 180, "all 200 to complete", interval=0.5)
    first = (
        WorkOrder.objects.filter(task__in=queued, dispatched_at__gte=back)
        .order_by("dispatched_at")
        .values_list("dispatched_at", flat=True)
        .first()
    )
    return [(first - back).total_seconds()], _outcome(orders)


def fault_node_kill(nodes, harness):
    """Two long agents start, then 500 newer short ones are queued behind
    them; the node running the first long agent is killed: its long work must
    run again on the other node ahead of whatever of the 500 is left."""
    from queue_app.models import WorkOrder, WorkOrderStatus
    from tasks_app.services import task_cancel, tasks_create

    long = tasks_create(specs=[{"title": "ticker 20", "executor": "ticker"} for _ in range(2)])
    harness.wait_until(
        lambda: WorkOrder.objects.filter(task__in=long, status=WorkOrderStatus.RUNNING).count() == len(long),
        60,
        "the long runs",
    )
    backlog = tasks_create(specs=[{"title": "ticker 0.3", "executor": "ticker"} for _ in range(500)])
    running = WorkOrder.objects.filter(task__in=long).select_related("worker")
    node = running.first().worker.name.split("@")[0]
    victims = [order for order in running if order.worker.name.startswith(f"{node}@")]
    time.sleep(1)
    os.killpg(nodes[node].pid, signal.SIGKILL)
    nodes[node].wait()
    killed = _now()
    harness.wait_until(
        lambda: all(order.executions.filter(attempt=2).exists() for order in victims), 90, "the work to run again"
    )
    moving = [(order.executions.get(attempt=2).started_at - killed).total_seconds() for order in victims]
    # Measured: the backlog is let go, the long runs end where they are now.
    WorkOrder.objects.filter(task__in=backlog, status=WorkOrderStatus.QUEUED).update(status=WorkOrderStatus.CANCELLED)
    orders = WorkOrder.objects.filter(task__in=long)
    harness.wait_until(lambda: _settled(orders), 90, "the long runs to end", interval=0.5)
    outcome = _outcome(orders)
    for task in long:
        task.refresh_from_db()
        if task.status in ("queued", "in_progress"):
            task_cancel(task=task)
    nodes[node] = harness.start_worker(SLOTS[node], node)  # back for the next round
    return moving, outcome


def _settled(orders):
    from queue_app.models import ACTIVE_STATUSES, ExecutionStatus, WorkOrderStatus

    return (
        not orders.filter(status__in=[WorkOrderStatus.QUEUED, *ACTIVE_STATUSES]).exists()
        and not orders.filter(executions__status=ExecutionStatus.RUNNING).exists()
    )


def _now():
    from django.utils import timezone

    return timezone.now()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cluster = PostgresCluster()
    broker = RedisServer(Path(tempfile.mkdtemp(prefix="bench-faults-redis-")))
    cluster.psql("CREATE DATABASE agentvine_faults")
    os.environ["BENCH_DATABASE_URL"] = cluster.url("agentvine_faults")
    os.environ["BENCH_REDIS_URL"] = broker.url
    from bench import harness
    from bench.recovery import start_guardians

    processes = []
    try:
        harness.setup_django(PRODUCTION_TIMINGS)
        processes += start_guardians()
        nodes = {name: harness.start_worker(slots, name) for name, slots in SLOTS.items()}
        processes.append(nodes)
        from workers_app.models import Worker, WorkerStatus

        harness.wait_until(
            lambda: Worker.objects.filter(status=WorkerStatus.IDLE).count() >= sum(SLOTS.values()), 60, "the slots"
        )
        results = {"PostgreSQL restart": [], "Redis restart, 200 queued": [], "node kill -9, 500 queued ahead": []}
        for round_no in range(args.rounds):
            results["PostgreSQL restart"].append(fault_postgresql_restart(cluster, harness))
            results["Redis restart, 200 queued"].append(fault_redis_restart(broker, harness))
            results["node kill -9, 500 queued ahead"].append(fault_node_kill(nodes, harness))
            print(f"round {round_no + 1} of {args.rounds} done", flush=True)
    finally:
        for process in processes:
            for one in process.values() if isinstance(process, dict) else [process]:
                harness.stop_worker(one)
        broker.stop()
        cluster.drop()
    print(f"{'fault':34} {'moving again p50 / max (s)':>28} {'lost':>5} {'twice':>6} {'stuck':>6} {'retries':>8}")
    for fault, rounds in results.items():
        seconds = [s for moving, _ in rounds for s in moving]
        totals = [sum(outcome[i] for _, outcome in rounds) for i in range(4)]
        print(
            f"{fault:34} {statistics.median(seconds):>13.2f} / {max(seconds):<12.2f}"
            f" {totals[0]:>5} {totals[1]:>6} {totals[2]:>6} {totals[3]:>8}"
        )
    print("targets: PostgreSQL moving within 15 s, Redis re-dispatch within 10 s, node within 15 s; 0 lost, 0 twice")


if __name__ == "__main__":
    main()
