"""Work-order lifecycles per second through the platform, against raw Celery.

(a) raw Celery: no-op tasks/s through the same Redis, queues and worker
    settings (prefetch 1, acks_late, priority queue order), same concurrency.
(b) the platform: tasks created over the REST API (a real daphne server,
    token auth), dispatched on commit, claimed by a Celery worker slot, run
    as a trivial command (`true`), completed, every transition published on
    the live layer — measured from the first API call to the last completion.
    Run once per ``--batch`` size: 1 creates each task with its own
    ``POST /api/v1/tasks/``, more sends that many per ``POST /api/v1/tasks/batch/``.

    .venv/bin/python bench/lifecycle.py [--tasks 2000] [--orders 300] [--concurrency 2]
        [--producers 4] [--batch 1,50] [--rounds 1]

Prints the rates and the ratio of each platform run (target: b >= 25% of a);
(a) runs before and after the platform runs and the ratios use the mean of both.
``--rounds N`` repeats the platform runs N times, each between two (a) runs
(a round's closing run opens the next), and prints the median ratio.
"""

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import (  # noqa: E402
    REDIS_URL,
    ROOT,
    CpuMeter,
    cpu_report,
    setup_django,
    start_web,
    stop_worker,
    wait_until,
)


def _start_celery(app, concurrency, name):
    log = open(f"/tmp/bench-lifecycle-{name}.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", "high,default,low", "-c", str(concurrency)]
        + ["-n", f"{name}@%h", "--without-gossip", "--without-mingle", "-l", "warning"],
        cwd=ROOT,
        # As in production (docker-compose.yml): DEBUG off, like the web process (harness.start_web).
        env={**os.environ, "PYTHONPATH": str(ROOT), "DEBUG": "false"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def raw_celery(tasks, concurrency):
    import redis

    from bench.celery_noop import COUNTER_KEY, noop

    client = redis.Redis.from_url(REDIS_URL)
    client.delete(COUNTER_KEY)
    worker = _start_celery("bench.celery_noop", concurrency, "raw")
    try:
        # Warm up: the pool is up and consuming before the clock starts.
        noop.apply_async(queue="default")
        wait_until(lambda: int(client.get(COUNTER_KEY) or 0) >= 1, 60, "celery worker start")
        client.delete(COUNTER_KEY)
        meter = CpuMeter(worker=worker.pid)
        started = time.perf_counter()
        for _ in range(tasks):
            noop.apply_async(queue="default")
        wait_until(lambda: int(client.get(COUNTER_KEY) or 0) >= tasks, 600, "no-op tasks")
        elapsed = time.perf_counter() - started
        spent = meter.stop()
    finally:
        stop_worker(worker)
    print("    " + cpu_report(spent, tasks, "task"))
    return tasks / elapsed


def platform(orders, concurrency, producers, batch):
    import requests
    from django.contrib.auth import get_user_model

    from queue_app.models import WorkOrder, WorkOrderStatus
    from workers_app.models import Worker, WorkerStatus
    from workers_app.services import api_token_create

    user = get_user_model().objects.create_user(username="bench-operator", password="bench-pass-123", is_staff=True)
    key = api_token_create(user=user, name="bench")[1]
    web, origin = start_web("agentvine.asgi:application", "lifecycle")
    worker = _start_celery("agentvine", concurrency, "platform")
    base = f"{origin}/api/v1/"
    headers = {"Authorization": f"Token {key}"}
    try:
        wait_until(
            lambda: (
                Worker.objects.filter(name__startswith="platform@", status=WorkerStatus.IDLE).count() >= concurrency
            ),
            60,
            "celery slots",
        )

        def up():
            try:
                return requests.get(base + "queue/", headers=headers, timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(up, 60, "daphne")
        errors = []

        def produce(count, offset):
            session = requests.Session()
            session.headers.update(headers)
            for start in range(0, count, batch):
                bodies = [
                    {"title": f"lifecycle {offset + index}", "executor": "noop"}
                    for index in range(start, min(start + batch, count))
                ]
                if batch == 1:
                    response = session.post(base + "tasks/", json=bodies[0], timeout=30)
                else:
                    response = session.post(base + "tasks/batch/", json={"tasks": bodies}, timeout=30)
                if response.status_code != 201:
                    errors.append(response.text[:200])

        share = [orders // producers + (1 if i < orders % producers else 0) for i in range(producers)]
        threads = [threading.Thread(target=produce, args=(count, sum(share[:i]))) for i, count in enumerate(share)]
        meter = CpuMeter(web=web.pid, worker=worker.pid)
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        created = time.perf_counter() - started
        if errors:
            raise RuntimeError(f"{len(errors)} API creates failed, e.g. {errors[0]}")
        wait_until(
            lambda: WorkOrder.objects.filter(status=WorkOrderStatus.COMPLETED).count() >= orders,
            900,
            "lifecycles",
        )
        elapsed = time.perf_counter() - started
        spent = meter.stop()
        failed = WorkOrder.objects.exclude(status=WorkOrderStatus.COMPLETED).count()
        if failed:
            raise RuntimeError(f"{failed} work orders did not complete")
    finally:
        stop_worker(worker)
        stop_worker(web)
    print(f"    API creates: {orders} in {created:.1f}s ({orders / created:.1f}/s over {producers} clients)")
    print("    " + cpu_report(spent, orders, "lifecycle"))
    return orders / elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=2000, help="raw Celery no-op tasks")
    parser.add_argument("--orders", type=int, default=300, help="platform work-order lifecycles per run")
    parser.add_argument("--concurrency", type=int, default=2, help="Celery worker slots, both runs")
    parser.add_argument("--producers", type=int, default=4, help="concurrent API clients creating tasks")
    parser.add_argument("--batch", default="1,50", help="tasks per create request, one platform run each")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything; the median ratio is reported")
    args = parser.parse_args()
    batches = [int(size) for size in args.batch.split(",")]
    setup_django()

    # A shared machine's speed drifts by tens of percent within a minute, so
    # (a) runs before and after the platform runs and each ratio is taken
    # against the mean of the two; --rounds repeats that and takes the median.
    ratios = {batch: [] for batch in batches}
    raw_after = None
    for round_number in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"round {round_number} of {args.rounds}")
        if raw_after is None:
            print(f"(a) raw Celery: {args.tasks} no-op tasks, -c {args.concurrency}, before the platform runs")
            raw_before = raw_celery(args.tasks, args.concurrency)
            print(f"    {raw_before:.1f} tasks/s")
        else:
            raw_before = raw_after
        rates = []
        for batch in batches:
            setup_django()
            how = _how(batch)
            print(f"(b) platform: {args.orders} lifecycles (API create -> dispatch -> claim -> run `true` -> complete)")
            print(f"    created with {how}")
            full = platform(args.orders, args.concurrency, args.producers, batch)
            print(f"    {full:.1f} lifecycles/s")
            rates.append((batch, full))
        print("(a) raw Celery again, after the platform runs")
        raw_after = raw_celery(args.tasks, args.concurrency)
        raw = (raw_before + raw_after) / 2
        print(f"    {raw_after:.1f} tasks/s; mean of both {raw:.1f} tasks/s")
        for batch, full in rates:
            ratios[batch].append(full / raw)
            print(f"ratio b/a, {_how(batch)}: {full / raw:.1%} (target >= 25%)")
    if args.rounds > 1:
        for batch, found in ratios.items():
            found.sort()
            spread = ", ".join(f"{ratio:.1%}" for ratio in found)
            median = statistics.median(found)
            print(f"median ratio b/a over {args.rounds} rounds, {_how(batch)}: {median:.1%} ({spread})")


def _how(batch):
    return "one task per POST /api/v1/tasks/" if batch == 1 else f"{batch} tasks per POST /api/v1/tasks/batch/"


if __name__ == "__main__":
    main()
