"""Task graphs: how fast a dependency graph drains compared with the same number of
independent tasks, on a real Celery worker (no-op agent: ``true``).

    python bench/graph.py [--fanout 10] [--depth 3] [--concurrency 2] [--rounds 1]

The graph is a tree of ``1 + fanout + … + fanout**depth`` tasks (1,111 by
default), every task created up front (the children blocked); the baseline is
as many independent tasks created up front. Prints, per round:

- drain throughput of each (tasks per second from creation to the last
  completion) and the graph's as a percentage of the baseline (target ≥ 80 %);
- time from the root's completion to the last leaf's start;
- release latency per edge: from a parent's completion to its child's work
  order being written (the same transaction, so ~0) and to the child's start;
- scheduling overhead per edge: (graph drain − baseline drain) / edges;
- creation time per task of each (the graph's locks its parents and writes edges).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import setup_django, start_worker, stop_worker, wait_until  # noqa: E402


def _completed(ids):
    from tasks_app.models import Task, TaskStatus

    return Task.objects.filter(pk__in=ids, status=TaskStatus.COMPLETED).count()


def _drain(ids, started, timeout):
    count = len(ids)
    wait_until(lambda: _completed(ids) == count, timeout, f"{count} tasks completed", interval=0.2)
    from queue_app.models import Execution

    last = max(Execution.objects.filter(task_id__in=ids).values_list("completed_at", flat=True))
    return last.timestamp() - started


def independent_round(count, timeout):
    from tasks_app.services import tasks_create

    t0 = time.time()
    tasks = tasks_create(specs=[{"title": f"solo {n}", "executor": "noop"} for n in range(count)])
    created = time.time() - t0
    seconds = _drain([t.pk for t in tasks], t0, timeout)
    return {"created_ms_per_task": 1000 * created / count, "drain_s": seconds, "tasks": count}


def graph_round(fanout, depth, timeout):
    from tasks_app.services import task_create, tasks_create

    t0 = time.time()
    root = task_create(title="root", executor="noop")
    levels, edges = [[root]], 0
    for level in range(1, depth + 1):
        specs = [
            {"title": f"L{level} {n}", "executor": "noop", "depends_on": [str(parent.pk)]}
            for n, parent in enumerate(p for p in levels[-1] for _ in range(fanout))
        ]
        levels.append(tasks_create(specs=specs))
        edges += len(specs)
    created = time.time() - t0
    ids = [t.pk for level in levels for t in level]
    seconds = _drain(ids, t0, timeout)
    return {**_graph_timings(levels), "created_ms_per_task": 1000 * created / len(ids), "drain_s": seconds}, edges


def _graph_timings(levels):
    from queue_app.models import Execution, WorkOrder
    from tasks_app.models import TaskDependency

    ids = [t.pk for level in levels for t in level]
    runs = {
        task_id: (started, completed)
        for task_id, started, completed in Execution.objects.filter(task_id__in=ids).values_list(
            "task_id", "started_at", "completed_at"
        )
    }
    enqueued = dict(WorkOrder.objects.filter(task_id__in=ids).values_list("task_id", "enqueued_at"))
    written, started = [], []
    for parent, child in TaskDependency.objects.filter(child_id__in=ids).values_list("parent_id", "child_id"):
        parent_done = runs[parent][1]
        written.append((enqueued[child] - parent_done).total_seconds())
        started.append((runs[child][0] - parent_done).total_seconds())
    root_done = runs[levels[0][0].pk][1]
    last_leaf_start = max(runs[t.pk][0] for t in levels[-1])
    started.sort()
    return {
        "root_to_last_leaf_s": (last_leaf_start - root_done).total_seconds(),
        "release_written_ms_median": 1000 * statistics.median(written),
        "release_written_ms_max": 1000 * max(written),
        "release_started_ms_min": 1000 * started[0],
        "release_started_ms_median": 1000 * statistics.median(started),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fanout", type=int, default=10)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    setup_django()
    count = sum(args.fanout**level for level in range(args.depth + 1))
    worker = start_worker(args.concurrency, "graph")
    ratios = []
    try:
        for round_ in range(1, args.rounds + 1):
            solo = independent_round(count, args.timeout)
            tree, edges = graph_round(args.fanout, args.depth, args.timeout)
            solo_rate, tree_rate = count / solo["drain_s"], count / tree["drain_s"]
            ratio = 100 * tree_rate / solo_rate
            ratios.append(ratio)
            overhead = 1000 * (tree["drain_s"] - solo["drain_s"]) / edges
            print(f"round {round_}: {count} tasks, {edges} edges, {args.concurrency} slots")
            print(
                f"  independent: {solo_rate:.1f} tasks/s (drain {solo['drain_s']:.1f} s;"
                f" created in {solo['created_ms_per_task']:.2f} ms/task)"
            )
            print(
                f"  graph:       {tree_rate:.1f} tasks/s (drain {tree['drain_s']:.1f} s;"
                f" created in {tree['created_ms_per_task']:.2f} ms/task) = {ratio:.1f} % of independent"
            )
            print(f"  root completed → last leaf started: {tree['root_to_last_leaf_s']:.2f} s")
            print(
                "  parent completed → child's work order (same transaction; between their timestamps):"
                f" median {tree['release_written_ms_median']:.2f} ms, max {tree['release_written_ms_max']:.2f} ms;"
                f" → child started: min"
                f" {tree['release_started_ms_min']:.1f} ms, median {tree['release_started_ms_median']:.0f} ms"
            )
            print(f"  scheduling overhead per edge: {overhead:.2f} ms of drain time")
            from tasks_app.models import Task

            Task.objects.all().delete()
    finally:
        stop_worker(worker)
    if len(ratios) > 1:
        print(f"median ratio {statistics.median(ratios):.1f} % ({', '.join(f'{r:.1f}' for r in ratios)})")


if __name__ == "__main__":
    main()
