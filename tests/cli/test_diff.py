"""``agentvine diff ID``: the task's diff (and ``--stat``) from a real daphne
serving the server's real results repository, the CLI a real subprocess."""

import subprocess
import uuid

import pytest

from queue_app import lifecycle
from tasks_app.results import results_bundle_ingest, results_repository_path
from tasks_app.services import task_create
from workers_app.workspaces import workspace_bundle, workspace_prepare, workspace_snapshot

pytestmark = pytest.mark.e2e


@pytest.fixture
def results_root(tmp_path, monkeypatch, settings):
    # The daphne the CLI talks to and this test process share the root.
    root = tmp_path / "server-results"
    monkeypatch.setenv("AGENTVINE_RESULTS_ROOT", str(root))
    settings.AGENTVINE_RESULTS_ROOT = root
    settings.AGENTVINE_WORKSPACE_ROOT = tmp_path / "workspaces"
    return root


def finished_run(task, worker, tmp_path):
    order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    _, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    path = workspace_prepare(task=task)
    (path / "hello.py").write_text("print('[bold]hi[/bold]')\n")
    (path / "data.bin").write_bytes(bytes(range(256)))
    snapshot = workspace_snapshot(task=task, message="run")
    bundle = tmp_path / f"{uuid.uuid4().hex}.bundle"
    workspace_bundle(task=task, destination=bundle)
    results_bundle_ingest(execution=execution, bundle_file=bundle, base_commit=snapshot.base_commit)
    execution.refresh_from_db()
    return execution


def test_diff_prints_the_tasks_patch_and_its_stat(results_root, logged_in, server, operator, worker, tmp_path):
    cli = logged_in
    task = task_create(title="Greet", executor="noop", created_by=operator)

    waiting = cli("diff", str(task.pk))
    assert waiting.code == 1 and waiting.err.strip() == (
        "error: this task has no results yet: no attempt has ended with a snapshot"
    )

    execution = finished_run(task, worker, tmp_path)
    shown = cli("diff", str(task.pk))
    stat = cli("diff", "--stat", str(task.pk))
    missing = uuid.uuid4()
    unknown = cli("diff", str(missing))

    independent = subprocess.run(
        ["git", "diff", "--find-renames", execution.base_commit, execution.head_commit],
        cwd=results_repository_path(task), capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert shown.code == 0, shown.err
    assert shown.out == independent and "+print('[bold]hi[/bold]')" in shown.out
    assert stat.code == 0, stat.err
    assert stat.out.splitlines() == [
        " data.bin | binary",
        " hello.py | +1 -0",
        f" 2 files changed, 1 insertions(+), 0 deletions(-)  agentvine/{task.pk} @ {execution.head_commit[:12]}",
    ]
    assert unknown.code == 1 and unknown.err.strip() == f"error: unknown task {missing}"
    no_attempt = cli("diff", "--attempt", "2", str(task.pk))
    assert no_attempt.code == 1 and no_attempt.err.strip() == "error: this task has no attempt 2 with results"

    # Reads need the server: offline is a clear error, never a stale diff.
    server.stop()
    offline = cli("diff", str(task.pk))
    assert offline.code == 3 and "is offline" in offline.err and offline.out == ""
