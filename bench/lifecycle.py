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
        [--producers 4] [--batch 1,50] [--rounds 1] [--observability]

Prints the rates and the ratio of each platform run (target: b >= 25% of a);
(a) runs before and after the platform runs and the ratios use the mean of both.
``--rounds N`` repeats the platform runs N times, each between two (a) runs
(a round's closing run opens the next), and prints the median ratio.
``--observability`` runs each platform run twice, both with the worker
logging at INFO (as docker-compose runs it): text logs and no scraper, then
JSON logs and /metrics scraped every ``--scrape-every`` seconds (history
totals cached as in production; AGENTVINE_METRICS_TOTALS_SECONDS=0 recomputes
them on every scrape); it prints both ratios side by side.
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

# --observability: what an operator watching the fleet runs (README, Observability).
METRICS_TOKEN = "bench-lifecycle-metrics"
OBSERVED_ENV = {
    "AGENTVINE_LOG_FORMAT": "json",
    "AGENTVINE_METRICS_TOKEN": METRICS_TOKEN,
    # 0: every scrape recomputes the history totals, the most a scrape can cost.
    "AGENTVINE_METRICS_TOTALS_SECONDS": os.environ.get("AGENTVINE_METRICS_TOTALS_SECONDS", "30"),
}


def _start_celery(app, concurrency, name, loglevel="warning", extra_env=None):
    log = open(f"/tmp/bench-lifecycle-{name}.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", "high,default,low", "-c", str(concurrency)]
        + ["-n", f"{name}@%h", "--without-gossip", "--without-mingle", "-l", loglevel],
        cwd=ROOT,
        # As in production (docker-compose.yml): DEBUG off, like the web process (harness.start_web).
        env={**os.environ, "PYTHONPATH": str(ROOT), "DEBUG": "false", **(extra_env or {})},
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


class Scraper(threading.Thread):
    """Scrapes /metrics every ``interval`` seconds, as Prometheus would."""

    def __init__(self, url, interval):
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.stopped = threading.Event()
        self.scrapes, self.failures, self.seconds = 0, 0, 0.0

    def run(self):
        import requests

        headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        while not self.stopped.wait(self.interval):
            started = time.perf_counter()
            try:
                ok = requests.get(self.url, headers=headers, timeout=30).status_code == 200
            except requests.RequestException:
                ok = False
            self.seconds += time.perf_counter() - started
            self.scrapes += 1
            self.failures += not ok


def platform(orders, concurrency, producers, batch, observed=False, scrape_every=5.0, loglevel="warning"):
    import requests
    from django.contrib.auth import get_user_model

    from queue_app.models import WorkOrder, WorkOrderStatus
    from workers_app.models import Worker, WorkerStatus
    from workers_app.services import api_token_create

    user = get_user_model().objects.create_user(username="bench-operator", password="bench-pass-123", is_staff=True)
    key = api_token_create(user=user, name="bench")[1]
    extra_env = OBSERVED_ENV if observed else None
    web, origin = start_web("agentvine.asgi:application", "lifecycle", extra_env=extra_env)
    worker = _start_celery("agentvine", concurrency, "platform", loglevel=loglevel, extra_env=extra_env)
    scraper = Scraper(f"{origin}/metrics", scrape_every) if observed else None
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
        if scraper:
            scraper.start()
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
        if scraper:
            scraper.stopped.set()
        stop_worker(worker)
        stop_worker(web)
    print(f"    API creates: {orders} in {created:.1f}s ({orders / created:.1f}/s over {producers} clients)")
    if scraper:
        mean = scraper.seconds / max(scraper.scrapes, 1) * 1000
        failed = scraper.failures
        print(f"    observed: JSON logs, {scraper.scrapes} scrapes ({failed} failed, mean {mean:.0f} ms)")
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
    parser.add_argument(
        "--observability", action="store_true", help="also run each platform run with JSON logs and /metrics scraped"
    )
    parser.add_argument("--scrape-every", type=float, default=5.0, help="seconds between scrapes with --observability")
    args = parser.parse_args()
    modes = [False, True] if args.observability else [False]
    batches = [int(size) for size in args.batch.split(",")]
    setup_django()

    # A shared machine's speed drifts by tens of percent within a minute, so
    # (a) runs before and after the platform runs and each ratio is taken
    # against the mean of the two; --rounds repeats that and takes the median.
    ratios = {(batch, observed): [] for batch in batches for observed in modes}
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
            for observed in modes:
                setup_django()
                how = _how(batch, observed)
                steps = "API create -> dispatch -> claim -> run `true` -> complete"
                print(f"(b) platform: {args.orders} lifecycles ({steps})")
                print(f"    created with {how}")
                # Compared at INFO both ways (as docker-compose runs workers):
                # the difference is the JSON format, its ids and the scrapes.
                loglevel = "info" if args.observability else "warning"
                full = platform(
                    args.orders, args.concurrency, args.producers, batch, observed, args.scrape_every, loglevel
                )
                print(f"    {full:.1f} lifecycles/s")
                rates.append(((batch, observed), full))
        print("(a) raw Celery again, after the platform runs")
        raw_after = raw_celery(args.tasks, args.concurrency)
        raw = (raw_before + raw_after) / 2
        print(f"    {raw_after:.1f} tasks/s; mean of both {raw:.1f} tasks/s")
        for key, full in rates:
            ratios[key].append(full / raw)
            print(f"ratio b/a, {_how(*key)}: {full / raw:.1%} (target >= 25%)")
    if args.rounds > 1:
        for key, found in ratios.items():
            found.sort()
            spread = ", ".join(f"{ratio:.1%}" for ratio in found)
            median = statistics.median(found)
            print(f"median ratio b/a over {args.rounds} rounds, {_how(*key)}: {median:.1%} ({spread})")
    if args.observability:
        for batch in batches:
            off, on = (statistics.median(ratios[(batch, observed)]) for observed in modes)
            print(
                f"observability, {_how(batch)}: median ratio off {off:.1%} | on {on:.1%} "
                f"({on / off - 1:+.1%}; target within 5 %)"
            )


def _how(batch, observed=False):
    how = "one task per POST /api/v1/tasks/" if batch == 1 else f"{batch} tasks per POST /api/v1/tasks/batch/"
    return f"{how}, JSON logs + /metrics" if observed else how


if __name__ == "__main__":
    main()
