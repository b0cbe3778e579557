"""The review loop's git work on a big branch: a later turn's incremental
upload, a follow-up fetching the branch onto an empty host, and approval.

A first run writes ``--files`` files of ``--lines`` lines (sent whole, as
``bench/results.py`` measures); a second turn edits ``--edits`` of them.
Timed in this process, through the API views (Django's test client, the
run's own token) and the services: the second turn's snapshot and bundle of
only its new commits (against the whole branch's bundle), its upload and
ingest; on a host with an empty workspace root, ``GET
executions/{id}/bundle/`` and bringing the workspace to the server's head;
``approve`` (a fast-forward of ``main`` in the server's repository).

    BENCH_DATABASE_URL=… .venv/bin/python bench/review.py [--files 1000 --lines 20 --edits 10]
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
    parser.add_argument("--edits", type=int, default=10)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="agentvine-bench-review-"))
    os.environ["AGENTVINE_WORKSPACE_ROOT"] = str(scratch / "host-a")
    os.environ["AGENTVINE_RESULTS_ROOT"] = str(scratch / "results")
    os.environ.setdefault("DEBUG", "false")
    setup_django()
    from django.contrib.auth import get_user_model
    from django.test import Client, override_settings

    from queue_app import lifecycle
    from queue_app.models import WorkOrderKind
    from tasks_app.review import review_approve
    from tasks_app.services import task_create
    from workers_app.services import worker_register
    from workers_app.workspaces import (
        workspace_bundle,
        workspace_head,
        workspace_prepare,
        workspace_snapshot,
        workspace_update_from_bundle,
    )

    client = Client(HTTP_HOST="localhost")
    worker = worker_register(name="bench-review", hostname="bench")
    user = get_user_model().objects.create_user(username="bench-reviewer", is_staff=True)
    task = task_create(title="Bench review", executor="noop", created_by=user)

    def start(work_order):
        order = lifecycle.work_order_claim(worker=worker, work_order_id=work_order.pk)
        return lifecycle.work_order_start(work_order=order, worker=worker)

    def upload(execution, bundle, base):
        response = client.post(
            f"/api/v1/executions/{execution.pk}/bundle/?base={base}",
            data=bundle.read_bytes(),
            content_type="application/octet-stream",
            HTTP_AUTHORIZATION=f"Agent {execution.agent_token}",
        )
        if response.status_code != 201:
            raise RuntimeError(f"upload refused: {response.status_code} {response.content[:300]!r}")

    order, first = start(task.work_orders.get())
    workspace = workspace_prepare(task=task)
    for n in range(args.files):
        folder = workspace / f"pkg{n % 20}"
        folder.mkdir(exist_ok=True)
        (folder / f"module{n}.py").write_text("".join(f"value_{n}_{line} = {line}\n" for line in range(args.lines)))
    snapshot = workspace_snapshot(task=task, message="Bench review (attempt 1)")
    workspace_bundle(task=task, destination=scratch / "first.bundle")
    upload(first, scratch / "first.bundle", snapshot.base_commit)
    lifecycle.work_order_complete(work_order=order, worker=worker, execution=first)
    first.refresh_from_db()

    # A second turn edits a few files: only its commit travels.
    turn_order = lifecycle.work_order_enqueue(task=task, kind=WorkOrderKind.DELIVER_MESSAGE)
    turn_order, turn = start(turn_order)
    for n in range(args.edits):
        with open(workspace / f"pkg{n % 20}" / f"module{n}.py", "a") as module:
            module.write(f"edited_{n} = True\n")
    t0 = time.perf_counter()
    snapshot = workspace_snapshot(task=task, message="Bench review (attempt 2)")
    t1 = time.perf_counter()
    workspace_bundle(task=task, destination=scratch / "turn.bundle", known=first.head_commit)
    t2 = time.perf_counter()
    upload(turn, scratch / "turn.bundle", snapshot.base_commit)
    t3 = time.perf_counter()
    workspace_bundle(task=task, destination=scratch / "whole.bundle")
    lifecycle.work_order_complete(work_order=turn_order, worker=worker, execution=turn)
    incremental, whole = (scratch / "turn.bundle").stat().st_size, (scratch / "whole.bundle").stat().st_size
    print(f"second turn: {args.edits} files edited on a branch of {args.files} files ({args.files * args.lines} lines)")
    print(f"  snapshot {1000 * (t1 - t0):.0f} ms, incremental bundle {1000 * (t2 - t1):.0f} ms")
    print(f"  bundle {incremental / 1024:.1f} KiB (the whole branch: {whole / 1024:.0f} KiB)")
    print(f"  upload + ingest {1000 * (t3 - t2):.0f} ms")

    # A follow-up on a host with an empty workspace root starts from the server's branch.
    next_order = lifecycle.work_order_enqueue(task=task, kind=WorkOrderKind.DELIVER_MESSAGE)
    next_order, follow_up = start(next_order)
    with override_settings(AGENTVINE_WORKSPACE_ROOT=scratch / "host-b"):
        t0 = time.perf_counter()
        workspace_prepare(task=task)
        local = workspace_head(task=task)
        response = client.get(
            f"/api/v1/executions/{follow_up.pk}/bundle/",
            {"have": local},
            HTTP_AUTHORIZATION=f"Agent {follow_up.agent_token}",
        )
        fetched = scratch / "fetched.bundle"
        fetched.write_bytes(b"".join(response.streaming_content))
        t1 = time.perf_counter()
        head = workspace_update_from_bundle(task=task, bundle=fetched)
        t2 = time.perf_counter()
    assert head == snapshot.head_commit, (head, snapshot.head_commit)
    lifecycle.work_order_complete(work_order=next_order, worker=worker, execution=follow_up)
    print("follow-up on an empty host:")
    print(f"  fetch (server bundle + download, {fetched.stat().st_size / 1024:.0f} KiB) {1000 * (t1 - t0):.0f} ms")
    print(f"  workspace to the server's head {1000 * (t2 - t1):.0f} ms")

    t0 = time.perf_counter()
    _, decision = review_approve(task=task, user=user)
    t1 = time.perf_counter()
    print(f"approve ({decision.outcome} of main) {1000 * (t1 - t0):.0f} ms")


if __name__ == "__main__":
    main()
