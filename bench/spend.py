"""What budgets cost: the claim with budgets to check, and the spend read.

In this process, against PostgreSQL (no Celery: a claim is the statement a
slot's doorbell runs). The table holds ``--runs`` earlier runs with a cost,
spread over the last 7 days, ``--operators`` operators and ``--repositories``
repositories (a fifth of them today). Prints:

1. the claim-and-start of a queued task (``work_order_claim_start``, what a
   slot's doorbell runs), each run then completing at once: without any
   budget (no query added), with a task budget (the sum of its runs), and
   with both daily budgets too (the sum of today's spend rows);
2. the claim of a task whose budget is spent (it is paused instead);
3. the spend read of the Overview and ``GET spend/``: every group from the
   last 7 days' spend rows (queue_app.models.SpendDay).

    .venv/bin/python bench/spend.py [--runs 100000] [--claims 300]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import setup_django  # noqa: E402


def _line(label, samples):
    ordered = sorted(samples)
    p50 = 1000 * statistics.median(ordered)
    p99 = 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"  {label}: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({len(samples)})")


def seed_runs(args, operators):
    """``--runs`` finished runs with a cost, as a bulk insert (the history a
    busy week leaves)."""
    import random
    from decimal import Decimal

    from django.db import connection

    from queue_app.models import Execution, ExecutionStatus, WorkOrder, WorkOrderStatus
    from tasks_app.models import Task

    rng = random.Random(7)
    batch = 2000
    for start in range(0, args.runs, batch):
        tasks, orders, runs = [], [], []
        for n in range(start, min(start + batch, args.runs)):
            task = Task(
                title=f"history {n}",
                status="completed",
                created_by=operators[n % len(operators)],
                repository_url=f"https://git.example.com/repo-{n % args.repositories}.git",
                executor=["noop", "ticker", ""][n % 3],
            )
            order = WorkOrder(task=task, status=WorkOrderStatus.COMPLETED)
            tasks.append(task)
            orders.append(order)
            runs.append(
                Execution(
                    task=task,
                    work_order=order,
                    attempt=1,
                    status=ExecutionStatus.COMPLETED,
                    cost_usd=Decimal(rng.randint(1, 500)) / 1000,
                    input_tokens=rng.randint(100, 100_000),
                    output_tokens=rng.randint(10, 10_000),
                )
            )
        Task.objects.bulk_create(tasks)
        WorkOrder.objects.bulk_create(orders)
        Execution.objects.bulk_create(runs)
    # auto_now_add stamped them now: a fifth today, the rest over the six days before.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE queue_app_execution SET started_at = now() - (CASE WHEN abs(hashtext(id::text)) % 5 = 0"
            " THEN random() * interval '2 hours' ELSE interval '1 day' + random() * interval '5.9 days' END)"
        )
        cursor.execute("ANALYZE queue_app_execution")
    # Their spend rows, as the usage reports would have added them (the
    # migration's backfill, which does the same from the recorded runs).
    import importlib

    from django.apps import apps

    importlib.import_module("queue_app.migrations.0013_budgets").backfill(apps, None)
    return Execution.objects.count()


def claims(args, operator, label, **spec):
    from queue_app import lifecycle
    from tasks_app.services import tasks_create
    from workers_app.services import worker_register

    tasks_create(
        specs=[{"title": f"{label} {n}", "executor": "noop", **spec} for n in range(args.claims)], created_by=operator
    )
    worker = worker_register(name=f"bench-{label}", hostname="bench")
    samples = []
    while True:
        start = time.perf_counter()
        started = lifecycle.work_order_claim_start(worker=worker, work_order_id=None)
        elapsed = time.perf_counter() - start
        if started is None:
            break
        samples.append(elapsed)
        order, execution, _, _ = started
        lifecycle.work_order_complete(work_order=order, worker=worker, execution=execution)
    return samples


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--claims", type=int, default=300)
    parser.add_argument("--operators", type=int, default=50)
    parser.add_argument("--repositories", type=int, default=20)
    args = parser.parse_args()
    setup_django()
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from queue_app import budgets, lifecycle
    from tasks_app.selectors import spend_overview
    from tasks_app.services import task_create
    from tests.factories import run_that_spends
    from workers_app.services import worker_register

    settings.AGENTVINE_PREEMPTION_ENABLED = False
    users = get_user_model()
    operators = [users.objects.create_user(username=f"operator-{n}") for n in range(args.operators)]
    seeded = seed_runs(args, operators)
    print(f"{seeded} earlier runs over 7 days, {args.operators} operators, {args.repositories} repositories")

    print("1. claim and start of a queued task (each run completes at once):")
    _line("no budget", claims(args, operators[0], "plain"))
    _line("task budget", claims(args, operators[0], "budgeted", budget_usd="5"))
    settings.AGENTVINE_OPERATOR_DAILY_BUDGET_USD = 1e6
    settings.AGENTVINE_DAILY_BUDGET_USD = 1e7
    _line("task and both daily budgets", claims(args, operators[0], "daily", budget_usd="5"))

    worker = worker_register(name="bench-spent", hostname="bench")
    refused = []
    for n in range(min(args.claims, 100)):
        task = task_create(title=f"spent {n}", executor="noop", created_by=operators[1], budget_usd="0.01")
        run_that_spends(task, "0.02", worker=worker)
        start = time.perf_counter()
        assert lifecycle.work_order_claim_start(worker=worker, work_order_id=None) is None
        refused.append(time.perf_counter() - start)
    print("2. claim of a task whose budget is spent:")
    _line("paused at the claim", refused)

    print("3. spend read (every group, last 7 days):")
    reads = []
    for _ in range(20):
        start = time.perf_counter()
        overview = spend_overview(paused=0)
        reads.append(time.perf_counter() - start)
    _line("Overview spend panel", reads)
    print(
        f"  7 days ${overview['total']:.2f}, today ${overview['today']:.2f},"
        f" {len(overview['by']['operator'])} operators, {len(overview['by']['repository'])} repositories"
    )
    assert budgets.spent_today() == overview["today"]


if __name__ == "__main__":
    main()
