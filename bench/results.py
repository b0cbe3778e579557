"""A run that changes many files: snapshot, bundle, upload and server ingest.

Writes ``--files`` files of ``--lines`` lines each into a fresh task workspace
(the agent's work), then times, in this process: the snapshot (``git add -A``
and commit), the bundle of the task branch, and the upload through the API
view (Django's test client with the run's own token, so the request goes
through the real view, parser and service) including the server's ingest and
diff record. Not yet measured: the console's changes page (not built).

    .venv/bin/python bench/results.py [--files 1000 --lines 20]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import setup_django  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--lines", type=int, default=20)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="agentvine-bench-results-"))
    os.environ["AGENTVINE_WORKSPACE_ROOT"] = str(scratch / "workspaces")
    os.environ["AGENTVINE_RESULTS_ROOT"] = str(scratch / "results")
    os.environ.setdefault("DEBUG", "false")
    setup_django()
    from django.test import Client

    from queue_app import lifecycle
    from tasks_app.services import task_create
    from workers_app.services import worker_register
    from workers_app.workspaces import workspace_bundle, workspace_prepare, workspace_snapshot

    worker = worker_register(name="bench-results", hostname="bench")
    task = task_create(title="Bench results", executor="noop")
    order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    _, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    workspace = workspace_prepare(task=task)
    for n in range(args.files):
        folder = workspace / f"pkg{n % 20}"
        folder.mkdir(exist_ok=True)
        (folder / f"module{n}.py").write_text("".join(f"value_{n}_{line} = {line}\n" for line in range(args.lines)))

    started = time.perf_counter()
    snapshot = workspace_snapshot(task=task, message="Bench results (attempt 1)")
    snapshotted = time.perf_counter()
    bundle = scratch / "results.bundle"
    workspace_bundle(task=task, destination=bundle)
    bundled = time.perf_counter()
    response = Client(HTTP_HOST="localhost").post(
        f"/api/v1/executions/{execution.pk}/bundle/?base={snapshot.base_commit}",
        data=bundle.read_bytes(),
        content_type="application/octet-stream",
        HTTP_AUTHORIZATION=f"Agent {execution.agent_token}",
    )
    uploaded = time.perf_counter()
    if response.status_code != 201:
        raise RuntimeError(f"upload refused: {response.status_code} {response.content[:300]!r}")
    files = len(response.json()["changed_files"])
    print(f"{files} files, {args.files * args.lines} changed lines; bundle {bundle.stat().st_size / 1024:.0f} KiB")
    print(f"  snapshot (git add -A + commit + diff record) {1000 * (snapshotted - started):.0f} ms")
    print(f"  bundle {1000 * (bundled - snapshotted):.0f} ms")
    print(f"  upload + server ingest (verify, fetch, diff record) {1000 * (uploaded - bundled):.0f} ms")
    print(f"  total {1000 * (uploaded - started):.0f} ms")

    from django.contrib.auth import get_user_model

    operator = get_user_model().objects.create_user(username="bench-operator", password="x", is_staff=True)
    client = Client(HTTP_HOST="localhost")
    client.force_login(operator)
    for label, url in (
        ("changes page, first page", f"/tasks/{task.pk}/changes/"),
        ("changes page, page 5", f"/tasks/{task.pk}/changes/?page=5"),
        ("GET tasks/{id}/changes/ (JSON)", f"/api/v1/tasks/{task.pk}/changes/"),
    ):
        timings = []
        for n in range(args.requests + 3):
            began = time.perf_counter()
            answer = client.get(url)
            if answer.status_code != 200:
                raise RuntimeError(f"{url}: {answer.status_code}")
            if n >= 3:  # the first few warm caches (templates, lexers)
                timings.append(1000 * (time.perf_counter() - began))
        timings.sort()
        p95 = timings[min(len(timings) - 1, int(round(0.95 * len(timings))) - 1)]
        size = len(answer.content) / 1024
        print(f"  {label}: p50 {timings[len(timings) // 2]:.0f} ms, p95 {p95:.0f} ms ({size:.0f} KiB)")


if __name__ == "__main__":
    main()
