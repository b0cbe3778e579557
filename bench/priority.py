"""How long a high-priority work order waits behind a backlog of low ones.

Two slots run low-priority work of a fixed duration with a backlog behind it;
a high-priority work order arrives while both slots are busy. Reported: its
wait (enqueued → execution started) as a ratio of one low run's duration.
Celery's defaults measured 5.0x here; prefetch 1 + acks_late gives <= 1.0x.

    .venv/bin/python bench/priority.py [--low-seconds 4] [--backlog 10] [--rounds 3]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import setup_django, start_worker, stop_worker  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--low-seconds", type=float, default=4.0)
    parser.add_argument("--backlog", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # Queue order alone; bench/preempt.py measures it with preemption.
    setup_django({"AGENTVINE_PREEMPTION_ENABLED": "false"})
    from queue_app.models import WorkOrder, WorkOrderStatus
    from tasks_app.models import Priority, TaskStatus
    from tasks_app.services import task_cancel, task_create

    worker = start_worker(2, "prio")
    ratios = []
    try:
        for round_no in range(args.rounds):
            lows = [
                task_create(title=f"ticker {args.low_seconds}", executor="ticker", priority=Priority.LOW)
                for _ in range(args.backlog + 2)
            ]
            deadline = time.monotonic() + 30
            while WorkOrder.objects.filter(status=WorkOrderStatus.RUNNING).count() < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError("slots never became busy")
                time.sleep(0.05)
            # Arrive mid-run, so the wait is not trivially aligned with a finish.
            time.sleep(args.low_seconds * 0.3)
            high = task_create(title="ticker 0.2", executor="ticker", priority=Priority.HIGH)
            deadline = time.monotonic() + args.low_seconds * 10
            while not high.executions.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("high-priority work never started")
                time.sleep(0.02)
            order = high.work_orders.get()
            wait = (high.executions.get().started_at - order.enqueued_at).total_seconds()
            ratios.append(wait / args.low_seconds)
            print(f"round {round_no + 1}: high waited {wait:.2f}s = {ratios[-1]:.2f}x a {args.low_seconds}s low run")
            for task in lows:
                task.refresh_from_db()
                if task.status not in (TaskStatus.COMPLETED, TaskStatus.CANCELLED, TaskStatus.FAILED):
                    task_cancel(task=task)
            deadline = time.monotonic() + 30
            while WorkOrder.objects.filter(status__in=["claimed", "running"]).exists():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
    finally:
        stop_worker(worker)
    print(f"high-priority wait / low run: median {statistics.median(ratios):.2f}x, max {max(ratios):.2f}x")


if __name__ == "__main__":
    main()
