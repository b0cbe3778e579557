"""Workspaces against real local git repositories."""

import threading
import uuid

import pytest

from tasks_app.models import Task
from tests.workers_app.conftest import git
from workers_app.workspaces import (
    ERR_BRANCH_BUSY,
    ERR_FETCH,
    WorkspaceError,
    workspace_path,
    workspace_prepare,
    workspace_remove,
)


@pytest.fixture(autouse=True)
def workspace_root(settings, tmp_path):
    settings.AGENTVINE_WORKSPACE_ROOT = tmp_path / "workspaces"
    return settings.AGENTVINE_WORKSPACE_ROOT


def make_task(repository_url="", branch_name=""):
    # Workspaces only read these fields; no database needed.
    return Task(id=uuid.uuid4(), title="t", repository_url=str(repository_url), branch_name=branch_name)


def test_existing_branch_is_checked_out_from_a_file_url(origin):
    task = make_task(f"file://{origin}", "feature/login")

    path = workspace_prepare(task=task)

    assert path == workspace_path(task.id)
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=path) == "feature/login"
    assert (path / "login.py").exists()


def test_new_branch_starts_from_the_default_branch_and_the_clone_is_shared(origin, workspace_root):
    first = workspace_prepare(task=make_task(origin, "fix/typo"))
    second = workspace_prepare(task=make_task(origin, "feature/login"))

    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=first) == "fix/typo"
    assert git("rev-parse", "HEAD", cwd=first) == git("rev-parse", "main", cwd=origin)
    assert not (first / "login.py").exists()
    assert (second / "login.py").exists()
    assert len(list((workspace_root / "_repos").glob("*.git"))) == 1


def test_concurrent_tasks_get_isolated_workspaces(origin):
    tasks = [make_task(origin, f"task/{n}") for n in range(4)]
    paths, errors = {}, []

    def prepare(task):
        try:
            paths[task.id] = workspace_prepare(task=task)
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=prepare, args=(task,)) for task in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(set(paths.values())) == 4
    (paths[tasks[0].id] / "scratch.txt").write_text("mine")
    for n, task in enumerate(tasks):
        assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=paths[task.id]) == f"task/{n}"
        if n:
            assert not (paths[task.id] / "scratch.txt").exists()


def test_two_tasks_cannot_share_a_branch(origin):
    workspace_prepare(task=make_task(origin, "feature/login"))

    with pytest.raises(WorkspaceError) as raised:
        workspace_prepare(task=make_task(origin, "feature/login"))

    assert str(raised.value) == ERR_BRANCH_BUSY.format(branch="feature/login")


def test_follow_up_reuses_the_workspace_and_removal_keeps_the_branch(origin, workspace_root):
    task = make_task(origin, "feature/login")
    path = workspace_prepare(task=task)
    (path / "notes.txt").write_text("work in progress")
    git("add", ".", cwd=path)
    git("commit", "--quiet", "-m", "agent work", cwd=path)
    (path / "uncommitted.txt").write_text("still here")
    agent_commit = git("rev-parse", "HEAD", cwd=path)

    assert workspace_prepare(task=task) == path
    assert (path / "uncommitted.txt").read_text() == "still here"

    assert workspace_remove(task=task) is True
    assert not path.exists()
    cache = next((workspace_root / "_repos").glob("*.git"))
    assert str(path) not in git("worktree", "list", cwd=cache)

    again = workspace_prepare(task=task)
    assert git("rev-parse", "HEAD", cwd=again) == agent_commit
    assert workspace_remove(task=make_task(origin, "never/prepared")) is False


def test_unreachable_repository_is_a_clear_error(tmp_path):
    missing = f"file://{tmp_path}/nowhere"
    with pytest.raises(WorkspaceError, match="^" + ERR_FETCH.format(url=missing, detail="").rstrip()):
        workspace_prepare(task=make_task(missing, "main"))


def test_task_without_repository_gets_a_repository_of_its_own():
    task = make_task()

    path = workspace_prepare(task=task)

    # One empty commit on the task's branch: the base of every later diff.
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=path) == f"agentvine/{task.id}"
    assert git("rev-list", "--count", "HEAD", cwd=path) == "1"
    assert git("ls-tree", "HEAD", cwd=path) == ""
    assert workspace_prepare(task=task) == path
    assert git("rev-list", "--count", "HEAD", cwd=path) == "1"
    assert workspace_remove(task=task) is True and not path.exists()
