"""How long high-priority work waits when every slot runs long low work.

Two slots run 20-second low-priority runs (plus a backlog); a high-priority
work order arrives mid-run. Reported: its wait (enqueued → its execution
started) as a ratio of one low run's duration, and how long the preempted
low run took to give way. Celery's defaults measured 5x, Celery tuned
(prefetch 1, acks_late, priority queues) 1x; preemption targets <= 0.05x.

    .venv/bin/python bench/preempt.py [--low-seconds 20] [--rounds 3]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import setup_django, start_worker, stop_worker, wait_until  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--low-seconds", type=float, default=20.0)
    parser.add_argument("--backlog", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    setup_django()
    from queue_app.models import Execution, ExecutionStatus, WorkOrder, WorkOrderStatus
    from tasks_app.models import Priority
    from tasks_app.services import task_cancel, task_create

    worker = start_worker(2, "preempt")
    ratios, give_way = [], []
    try:
        for round_no in range(args.rounds):
            lows = [
                task_create(title=f"ticker {args.low_seconds}", executor="ticker", priority=Priority.LOW)
                for _ in range(args.backlog + 2)
            ]
            wait_until(lambda: WorkOrder.objects.filter(status=WorkOrderStatus.RUNNING).count() == 2, 30, "busy slots")
            # Arrive mid-run, so nothing is about to finish anyway.
            time.sleep(args.low_seconds * 0.3)
            high = task_create(title="ticker 0.2", executor="ticker", priority=Priority.HIGH)
            started = wait_until(lambda high=high: high.executions.first(), args.low_seconds * 10, "high work to start")
            enqueued_at = high.work_orders.get().enqueued_at
            wait = (started.started_at - enqueued_at).total_seconds()
            ratios.append(wait / args.low_seconds)
            victim = Execution.objects.filter(task__in=lows, status=ExecutionStatus.INTERRUPTED).first()
            if victim is not None:
                give_way.append((victim.completed_at - enqueued_at).total_seconds())
            print(
                f"round {round_no + 1}: high waited {wait:.3f}s = {ratios[-1]:.4f}x a {args.low_seconds:g}s low run"
                + (f"; the preempted low run gave way in {give_way[-1]:.3f}s" if victim else "; nothing preempted")
            )
            for task in [*lows, high]:
                task.refresh_from_db()
                if task.work_orders.filter(status__in=["queued", "claimed", "running", "waiting"]).exists():
                    task_cancel(task=task)
            wait_until(
                lambda: not WorkOrder.objects.filter(status__in=["claimed", "running"]).exists(), 30, "idle slots"
            )
    finally:
        stop_worker(worker)
    print(
        f"high-priority wait / low run: median {statistics.median(ratios):.4f}x, max {max(ratios):.4f}x "
        f"(target <= 0.05x); high wait median {statistics.median(ratios) * args.low_seconds:.3f}s"
    )


if __name__ == "__main__":
    main()
