"""Output streaming under load: many agents printing as fast as they can.

N agents (real subprocesses, one per Celery pool slot) each print numbered
lines as fast as Python can write them, through the real path: Celery worker
-> runner -> CommandExecutor (bounded pipe reader) -> OutputBuffer ->
PostgreSQL (+ the Channels layer). Reported:

- lines persisted per second, aggregate (first start to last completion)
- database writes per 1,000 lines (one write = one output batch: a chunk
  insert and a counter update in one transaction)
- peak RSS of the worker (all pool processes together, and the largest one)
- that every line of every agent was stored exactly once and in order

Then one agent prints --big-mb megabytes, to show a slot's memory does not
follow the size of the output.

Targets: >= 5,000 lines/s aggregate with 20 agents on 2 cores, <= 20 writes
per 1,000 lines, nothing lost.

    .venv/bin/python bench/output_stream.py [--agents 20] [--lines 50000] [--big-mb 200]

Uses BENCH_DATABASE_URL / BENCH_REDIS_URL (see bench/harness.py).
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import setup_django, start_worker, stop_worker  # noqa: E402

FLOOD_AGENT = Path(__file__).resolve().parent / "flood_agent.py"


def _proc_kb(path, field):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kb(pid):
    return _proc_kb(f"/proc/{pid}/status", "VmRSS:")


def pss_kb(pid):
    # Proportional: pages shared after fork count once across the pool, so
    # the sum is what the worker really costs the machine.
    return _proc_kb(f"/proc/{pid}/smaps_rollup", "Pss:")


class MemorySampler(threading.Thread):
    """Peak RSS of a Celery worker: main process plus pool processes (not the agents)."""

    def __init__(self, worker_pid):
        super().__init__(daemon=True)
        self.worker_pid = worker_pid
        self.peak_total_kb = 0
        self.peak_total_pss_kb = 0
        self.peak_slot_kb = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            out = subprocess.run(["pgrep", "-P", str(self.worker_pid)], capture_output=True, text=True).stdout
            pids = [int(pid) for pid in out.split()]
            slots = [rss_kb(pid) for pid in pids]
            total = rss_kb(self.worker_pid) + sum(slots)
            self.peak_total_kb = max(self.peak_total_kb, total)
            pss = pss_kb(self.worker_pid) + sum(pss_kb(pid) for pid in pids)
            self.peak_total_pss_kb = max(self.peak_total_pss_kb, pss)
            self.peak_slot_kb = max([self.peak_slot_kb, *slots])
            time.sleep(0.2)


def run_round(*, agents, lines, width, label):
    from django.db.models import Max, Min, Sum

    from queue_app.models import Execution, ExecutionOutputChunk
    from tasks_app.models import Task, TaskStatus
    from tasks_app.services import task_create

    tasks = [task_create(title=f"flood {lines} {width}", executor="flood") for _ in range(agents)]
    ids = [task.id for task in tasks]
    deadline = time.monotonic() + 600
    while Task.objects.filter(pk__in=ids, status=TaskStatus.COMPLETED).count() < agents:
        failed = Task.objects.filter(pk__in=ids, status__in=[TaskStatus.FAILED, TaskStatus.CANCELLED]).count()
        if failed or time.monotonic() > deadline:
            raise RuntimeError(f"{label}: {failed} agents failed or the run timed out")
        time.sleep(0.2)
    executions = Execution.objects.filter(task_id__in=ids)
    span = executions.aggregate(start=Min("started_at"), end=Max("completed_at"), writes=Sum("output_chunks"))
    seconds = (span["end"] - span["start"]).total_seconds()

    # Nothing lost, nothing twice, in order: rebuild every agent's output.
    stored = 0
    for execution in executions:
        expected = 0
        for text in (
            ExecutionOutputChunk.objects.filter(execution=execution).order_by("seq").values_list("text", flat=True)
        ).iterator(chunk_size=50):
            for line in text.splitlines():
                if int(line[:12]) != expected:
                    raise AssertionError(f"{label}: execution {execution.pk} line {expected} missing or out of order")
                expected += 1
        if expected != lines:
            raise AssertionError(f"{label}: execution {execution.pk} stored {expected} of {lines} lines")
        stored += expected
    return {"lines": stored, "seconds": seconds, "writes": span["writes"]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--lines", type=int, default=50_000, help="lines per agent")
    parser.add_argument("--width", type=int, default=80, help="characters per line")
    parser.add_argument("--big-mb", type=int, default=200, help="output of the single big agent (0 to skip)")
    args = parser.parse_args()

    profiles = {"flood": {"type": "command", "command": ["{python}", str(FLOOD_AGENT), "{prompt}"]}}
    os.environ["AGENTVINE_EXECUTORS_JSON"] = json.dumps(profiles)
    setup_django()

    worker = start_worker(args.agents, "flood")
    sampler = MemorySampler(worker.pid)
    sampler.start()
    try:
        result = run_round(agents=args.agents, lines=args.lines, width=args.width, label="flood")
        rate = result["lines"] / result["seconds"]
        per_thousand = result["writes"] * 1000 / result["lines"]
        print(f"{args.agents} agents x {args.lines:,} lines of {args.width} chars")
        print(f"  persisted {result['lines']:,} lines in {result['seconds']:.1f}s = {rate:,.0f} lines/s aggregate")
        print(f"  database writes: {result['writes']:,} = {per_thousand:.2f} per 1,000 lines")
        print(f"  every line stored once, in order: yes ({result['lines']:,} checked)")
        print(
            f"  peak worker memory for {args.agents} slots: RSS {sampler.peak_total_kb / 1024:,.0f} MB"
            f" (PSS {sampler.peak_total_pss_kb / 1024:,.0f} MB), largest slot RSS {sampler.peak_slot_kb / 1024:,.0f} MB"
        )
    finally:
        sampler.stop.set()
        stop_worker(worker)

    if args.big_mb:
        width = 1000
        lines = args.big_mb * 1024 * 1024 // width
        worker = start_worker(1, "big")
        sampler = MemorySampler(worker.pid)
        sampler.start()
        try:
            slot_pids = subprocess.check_output(["pgrep", "-P", str(worker.pid)]).split()
            idle_slot_kb = max(rss_kb(int(pid)) for pid in slot_pids)
            result = run_round(agents=1, lines=lines, width=width, label="big")
            print(f"1 agent printing {args.big_mb} MB ({lines:,} lines of {width} chars)")
            print(f"  stored in {result['seconds']:.1f}s, {result['writes']:,} writes, every line once and in order")
            print(
                f"  slot RSS: {idle_slot_kb / 1024:,.0f} MB idle, peak {sampler.peak_slot_kb / 1024:,.0f} MB"
                f" while streaming"
            )
        finally:
            sampler.stop.set()
            stop_worker(worker)


if __name__ == "__main__":
    main()
