"""CPU of one work-order run on a Celery slot, without Celery, daphne or the network.

Calls ``workers_app.runner.work_order_run`` in a loop in this process (the
executor profile ``noop`` runs ``true``), after a warm-up, and prints per run:
this process's CPU, the CPU of its PostgreSQL backend, wall time, and the
statements one run sends. Useful to see what a change to the slot's hot path
saves before the noisier end-to-end bench/lifecycle.py.

    .venv/bin/python bench/slot_run.py [--runs 500]
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import setup_django  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def _backend_cpu(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("DEBUG", "false")
    setup_django()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from queue_app.models import WorkOrder
    from tasks_app.services import tasks_create
    from workers_app import slots
    from workers_app.runner import work_order_run
    from workers_app.services import worker_register

    # As in a Celery slot (worker_process_init): generic plans on its connections.
    slots.use_generic_plans()
    connection.close()
    slots._state["worker"] = worker_register(name="bench-slot:1", hostname="bench", pid=os.getpid(), new_process=True)
    total = args.warmup + 1 + args.runs
    for start in range(0, total, 100):
        tasks_create(
            specs=[{"title": f"slot run {n}", "executor": "noop"} for n in range(start, min(start + 100, total))]
        )
    ids = [str(pk) for pk in WorkOrder.objects.order_by("enqueued_at").values_list("id", flat=True)]
    for work_order_id in ids[: args.warmup]:
        work_order_run(work_order_id=work_order_id)
    with CaptureQueriesContext(connection) as captured:
        work_order_run(work_order_id=ids[args.warmup])
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    runs = ids[args.warmup + 1 :]
    backend_start, cpu_start, wall_start = _backend_cpu(backend), time.process_time(), time.perf_counter()
    for work_order_id in runs:
        outcome = work_order_run(work_order_id=work_order_id)
        if outcome != "completed":
            raise RuntimeError(f"work order {work_order_id} ended {outcome}")
    cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
    backend_cpu = _backend_cpu(backend) - backend_start
    print(f"{len(runs)} runs of `true` through work_order_run, per run:")
    print(f"  slot process CPU {1000 * cpu / len(runs):.2f} ms (its threads included; not the `true` child)")
    print(f"  PostgreSQL backend CPU {1000 * backend_cpu / len(runs):.2f} ms")
    print(f"  wall {1000 * wall / len(runs):.2f} ms")
    print(f"  statements {len(captured.captured_queries)}:")
    for query in captured.captured_queries:
        print(f"    {query['sql'][:100]}")


if __name__ == "__main__":
    main()
