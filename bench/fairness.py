"""Claims under shared load: concurrency keys, operators and priorities.

In this process, against PostgreSQL (no Celery: a claim is the statement a
slot's doorbell or a pull worker runs). Prints:

1. claim cost with 20 concurrency keys (limit 2 each) and 10,000 queued:
   a claim while seats are free, a claim that frees one seat and refills it
   (most of the line ahead belongs to full keys), and a claim that finds every
   key full (it reads the whole ready set);
2. the order work starts in when operator A queues 200 and operator B then
   queues 5 (claims taken one at a time, each run completing at once);
3. how long normal and low work wait under a constant stream of high work,
   with aging every ``--aging`` seconds (the aging guardian's clock runs
   ``--tick`` seconds per claim, so the bench takes no real waiting).

    .venv/bin/python bench/fairness.py [--queued 10000] [--keys 20] [--claims 500] [--aging 2 --tick 0.1]
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import setup_django  # noqa: E402


def _percentiles(samples):
    ordered = sorted(samples)
    return {
        "p50": 1000 * statistics.median(ordered),
        "p99": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max": 1000 * ordered[-1],
    }


def _line(label, samples):
    p = _percentiles(samples)
    print(f"  {label}: p50 {p['p50']:.2f} ms, p99 {p['p99']:.2f} ms, max {p['max']:.2f} ms ({len(samples)} claims)")


def _timed_claim(lifecycle, worker):
    start = time.perf_counter()
    order = lifecycle.work_order_claim(worker=worker)
    return order, time.perf_counter() - start


def _clear():
    from queue_app.models import ConcurrencyLimit
    from tasks_app.models import Task

    Task.objects.all().delete()
    ConcurrencyLimit.objects.all().delete()


def claim_cost(args, operator):
    from queue_app import lifecycle
    from tasks_app.services import tasks_create
    from workers_app.services import worker_register

    keys = [f"k{n:02d}" for n in range(args.keys)]
    for start in range(0, args.queued, 500):
        specs = [
            {"title": f"keyed {n}", "executor": keys[n % len(keys)]}
            for n in range(start, min(start + 500, args.queued))
        ]
        tasks_create(specs=specs, created_by=operator)
    worker = worker_register(name="bench-claimer", hostname="bench")
    print(f"1. claim cost, {args.keys} keys of limit 2, {args.queued} queued (under shared load):")
    filling, active = [], []
    for _ in range(2 * args.keys):
        order, seconds = _timed_claim(lifecycle, worker)
        filling.append(seconds)
        active.append(order)
    _line("claim while seats are free", filling)
    refill = []
    for n in range(args.claims):
        # Free one seat (its run completes), then claim: the next in line of
        # that key, past the rows of the full keys ahead of it.
        done = active.pop(n % len(active))
        fresh, execution = lifecycle.work_order_start(work_order=done, worker=worker)
        lifecycle.work_order_complete(work_order=fresh, worker=worker, execution=execution)
        order, seconds = _timed_claim(lifecycle, worker)
        refill.append(seconds)
        active.append(order)
    _line("claim after a seat frees (steady state)", refill)
    empty = []
    for _ in range(min(args.claims, 200)):
        order, seconds = _timed_claim(lifecycle, worker)
        assert order is None, "every key should be full"
        empty.append(seconds)
    _line("claim that finds every key full (whole ready set read)", empty)
    _clear()


def operators_order(slots, operators):
    from queue_app import lifecycle
    from tasks_app.services import tasks_create
    from workers_app.services import worker_register

    (a, b) = operators
    tasks_create(specs=[{"title": f"A {n}", "executor": "noop"} for n in range(200)], created_by=a)
    tasks_create(specs=[{"title": f"B {n}", "executor": "noop"} for n in range(5)], created_by=b)
    worker = worker_register(name="bench-fair", hostname="bench")
    started = {a.pk: [], b.pk: []}
    for index in range(205):
        order = lifecycle.work_order_claim(worker=worker)
        fresh, execution = lifecycle.work_order_start(work_order=order, worker=worker)
        lifecycle.work_order_complete(work_order=fresh, worker=worker, execution=execution)
        started[order.task.created_by_id].append(index + 1)
    print(f"2. A queues 200, then B queues 5 ({slots} slots: the goal is B started within {2 * slots} claims):")
    for label, user in (("A", a), ("B", b)):
        claims = started[user.pk]
        print(f"  operator {label}: first start at claim {claims[0]}, last at claim {claims[-1]}")
    _clear()


def low_under_high(steps, aging, tick):
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from queue_app import fairness, lifecycle
    from tasks_app.models import Priority
    from tasks_app.services import task_create
    from workers_app.services import worker_register

    settings.AGENTVINE_PRIORITY_AGING_SECONDS = aging
    lows = [task_create(title=f"low {n}", executor="noop", priority=Priority.LOW) for n in range(3)]
    normal = task_create(title="normal", executor="noop", priority=Priority.NORMAL)
    worker = worker_register(name="bench-aging", hostname="bench")
    task_create(title="high", executor="noop", priority=Priority.HIGH)
    waits = {}
    start = timezone.now()
    for step in range(1, steps + 1):
        # One new high order per claim: the high stream never runs dry. The
        # aging guardian's clock runs ``tick`` seconds a claim.
        task_create(title="high", executor="noop", priority=Priority.HIGH)
        fairness.queued_work_age(now=start + timedelta(seconds=step * tick))
        order = lifecycle.work_order_claim(worker=worker)
        fresh, execution = lifecycle.work_order_start(work_order=order, worker=worker)
        lifecycle.work_order_complete(work_order=fresh, worker=worker, execution=execution)
        if order.task_id in {t.pk for t in [*lows, normal]}:
            waits[order.task.title] = step * tick
        if len(waits) == len(lows) + 1:
            break
    print(
        f"3. 3 low and 1 normal order under a constant high stream, aging every {aging:g} s"
        f" (bound: normal {aging:g} s, low {2 * aging:g} s, plus a guardian tick):"
    )
    for title in ["normal", *(t.title for t in lows)]:
        wait = waits.get(title)
        waited = f"started after {wait:.2f} s" if wait is not None else f"not started in {steps} claims"
        print(f"  {title}: {waited}")
    _clear()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--queued", type=int, default=10000)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--claims", type=int, default=500)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--aging", type=float, default=2.0, help="AGENTVINE_PRIORITY_AGING_SECONDS for scenario 3")
    parser.add_argument("--tick", type=float, default=0.1, help="seconds of the aging clock per claim")
    args = parser.parse_args()
    profiles = {f"k{n:02d}": {"type": "command", "command": ["true"], "concurrency": 2} for n in range(args.keys)}
    os.environ.setdefault("DEBUG", "false")
    setup_django()
    from django.conf import settings
    from django.contrib.auth import get_user_model

    # The settings_test profiles ("noop") and the bench's keys together.
    settings.AGENTVINE_EXECUTORS.update(profiles)
    settings.AGENTVINE_PREEMPTION_ENABLED = False
    users = get_user_model().objects
    operators = [users.create_user(username=name, password="bench-pass-123") for name in ("bench-a", "bench-b")]
    claim_cost(args, operators[0])
    operators_order(args.slots, operators)
    low_under_high(500, args.aging, args.tick)


if __name__ == "__main__":
    main()
