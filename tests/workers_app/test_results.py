"""Every run's workspace is committed on its task's branch when it ends, and
its execution records what changed: against real git repositories and, end to
end, a real Celery worker running a command-profile agent."""

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from queue_app.models import ExecutionStatus
from tasks_app.models import Task, TaskStatus
from tasks_app.results import results_repository_path
from tasks_app.services import task_create
from tests.conftest import wait_for
from tests.workers_app.conftest import editable_source, git
from workers_app.workspaces import _cache_path, workspace_prepare, workspace_snapshot

EDITOR = Path(__file__).resolve().parents[1] / "agents" / "editor.py"


@pytest.fixture
def source(tmp_path):
    return editable_source(tmp_path / "source")


def independent_numstat(repository, base, head, tmp_path):
    """What a fresh clone of ``repository`` says ``base..head`` changed, in the
    shape an execution records."""
    clone = tmp_path / f"clone-{uuid.uuid4().hex[:6]}"
    subprocess.run(["git", "clone", "--quiet", "--mirror", f"file://{repository}", str(clone)], check=True)
    lines = git("diff", "--numstat", "--find-renames", base, head, cwd=clone).splitlines()
    changed = {}
    for line in lines:
        added, deleted, path = line.split("\t")
        if " => " in path:
            path = path.split(" => ")[1]
        changed[path] = (None, None) if added == "-" else (int(added), int(deleted))
    return changed


def recorded_numstat(files):
    return {entry["path"]: (entry["insertions"], entry["deletions"]) for entry in files}


def test_a_snapshot_commits_edits_additions_deletions_and_renames(settings, tmp_path, source):
    settings.AGENTVINE_WORKSPACE_ROOT = tmp_path / "workspaces"
    settings.AGENTVINE_GIT_AUTHOR_NAME = "Result Bot"
    task = Task(id=uuid.uuid4(), title="Tidy up", repository_url=str(source))
    path = workspace_prepare(task=task)
    start = git("rev-parse", "HEAD", cwd=path)
    subprocess.run([sys.executable, str(EDITOR)], cwd=path, check=True, capture_output=True)

    snapshot = workspace_snapshot(task=task, message="Tidy up (attempt 1)")

    assert snapshot.base_commit == start == git("rev-parse", "main", cwd=source)
    assert snapshot.head_commit != start
    assert git("status", "--porcelain", cwd=path) == ""
    assert git("log", "-1", "--format=%an|%cn|%s", cwd=path) == "Result Bot|Result Bot|Tidy up (attempt 1)"
    by_path = {entry["path"]: entry for entry in snapshot.files}
    assert {path: entry["status"] for path, entry in by_path.items()} == {
        "README.md": "M",
        "src/added.py": "A",
        "payload.html": "A",
        "logo.bin": "A",
        "obsolete.txt": "D",
        "docs-notes.txt": "R",
    }
    assert by_path["docs-notes.txt"]["old_path"] == "notes.txt"
    assert by_path["logo.bin"]["binary"] is True
    cache = _cache_path(task.repository_url)
    assert recorded_numstat(snapshot.files) == independent_numstat(
        cache, snapshot.base_commit, snapshot.head_commit, tmp_path
    )

    # Nothing new: no empty commit, the same head, still the branch's changes.
    again = workspace_snapshot(task=task, message="Tidy up (attempt 2)")
    assert again.head_commit == snapshot.head_commit
    assert again.files == snapshot.files


def test_a_task_without_a_repository_has_a_diff_too(settings, tmp_path):
    settings.AGENTVINE_WORKSPACE_ROOT = tmp_path / "workspaces"
    task = Task(id=uuid.uuid4(), title="Write notes")
    path = workspace_prepare(task=task)

    untouched = workspace_snapshot(task=task, message="Write notes (attempt 1)")
    assert untouched.files == [] and untouched.head_commit == untouched.base_commit
    # A repository git itself finds sound, on the task's branch, at the empty first commit.
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=path) == f"agentvine/{task.id}"
    assert git("log", "--format=%s", cwd=path) == "Workspace created by AgentVine"
    git("fsck", "--strict", "--no-dangling", cwd=path)

    (path / "NOTES.md").write_text("one\ntwo\n")
    snapshot = workspace_snapshot(task=task, message="Write notes (attempt 2)")
    assert snapshot.base_commit == untouched.base_commit
    assert snapshot.files == [
        {"path": "NOTES.md", "old_path": "NOTES.md", "status": "A", "insertions": 2, "deletions": 0, "binary": False}
    ]


def test_workspaces_without_a_repository_share_only_their_empty_first_commit(settings, tmp_path):
    settings.AGENTVINE_WORKSPACE_ROOT = tmp_path / "workspaces"
    first, second = Task(id=uuid.uuid4(), title="First"), Task(id=uuid.uuid4(), title="Second")
    first_path = workspace_prepare(task=first)
    (first_path / "first.txt").write_text("mine\n")
    first_snapshot = workspace_snapshot(task=first, message="First (attempt 1)")
    # The first task's commit, even a rewrite of its objects, stays in its own repository.
    for loose in (first_path / ".git" / "objects").rglob("*"):
        if loose.is_file():
            loose.chmod(0o644)
            loose.write_bytes(b"garbage")

    second_path = workspace_prepare(task=second)
    untouched = workspace_snapshot(task=second, message="Second (attempt 1)")
    assert untouched.base_commit == first_snapshot.base_commit  # the same empty first commit
    assert untouched.head_commit == untouched.base_commit and untouched.files == []
    assert not (second_path / "first.txt").exists()
    git("fsck", "--strict", "--no-dangling", cwd=second_path)
    assert git("branch", "--list", cwd=second_path) == f"* agentvine/{second.id}"


def test_a_hook_planted_in_the_workspace_does_not_run_at_snapshot(settings, tmp_path):
    settings.AGENTVINE_WORKSPACE_ROOT = tmp_path / "workspaces"
    task = Task(id=uuid.uuid4(), title="Hostile")
    path = workspace_prepare(task=task)
    marker = tmp_path / "hook-ran"
    hook = path / ".git" / "hooks" / "pre-commit"
    hook.parent.mkdir(exist_ok=True)  # a workspace's repository starts without a hooks directory
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    (path / "file.txt").write_text("x\n")

    snapshot = workspace_snapshot(task=task, message="Hostile (attempt 1)")

    assert snapshot.files and not marker.exists()


def test_a_filter_planted_in_the_workspaces_own_repository_does_not_run(settings, tmp_path):
    """The repository of a task without one lives in the (sandbox-writable)
    workspace: a filter driver planted in its config must not run when the
    worker commits."""
    settings.AGENTVINE_WORKSPACE_ROOT = tmp_path / "workspaces"
    task = Task(id=uuid.uuid4(), title="Hostile")
    path = workspace_prepare(task=task)
    marker = tmp_path / "filter-ran"
    with open(path / ".git" / "config", "a") as config:
        config.write(f'[filter "evil"]\n\tclean = touch {marker}; cat\n')
    (path / ".gitattributes").write_text("* filter=evil\n")
    (path / "file.txt").write_text("x\n")

    snapshot = workspace_snapshot(task=task, message="Hostile (attempt 1)")

    assert not marker.exists()
    assert {entry["path"] for entry in snapshot.files} == {".gitattributes", "file.txt"}


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_command_agent_run_is_committed_and_its_diff_recorded(
    celery_worker_factory, operator, source, tmp_path, live_server, settings
):
    """The slot commits the run and sends it, with the run's own token, to
    the server (pytest-django's live server here), whose repository then
    holds the branch the recorded diff describes."""
    root = tmp_path / "worker-workspaces"
    settings.AGENTVINE_RESULTS_ROOT = tmp_path / "server-results"
    celery_worker_factory(extra_env={"AGENTVINE_WORKSPACE_ROOT": str(root), "AGENTVINE_API_URL": live_server.url})
    task = task_create(title="Tidy up", executor="editor", repository_url=str(source), created_by=operator)

    wait_for(lambda: Task.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, message="editor task completion")

    execution = task.executions.get()
    assert execution.status == ExecutionStatus.COMPLETED
    assert execution.has_changes is True
    assert execution.base_commit == git("rev-parse", "main", cwd=source)
    # The branch on the server's repository holds the recorded head, and its
    # independent diff is the recorded file list.
    server = results_repository_path(task)
    assert git("rev-parse", f"agentvine/{task.id}", cwd=server) == execution.head_commit
    assert git("log", "-1", "--format=%s", execution.head_commit, cwd=server) == "Tidy up (attempt 1)"
    assert recorded_numstat(execution.changed_files) == independent_numstat(
        server, execution.base_commit, execution.head_commit, tmp_path
    )
    assert len(execution.changed_files) == 6
