"""Results reach the server as a git bundle through the API and are served
back read-only over git's smart HTTP: real git on both sides, a real HTTP
server (pytest-django's live server) and PostgreSQL."""

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from queue_app import lifecycle
from tasks_app.models import Task
from tasks_app.results import results_repository_path
from tasks_app.services import task_create
from tests.workers_app.conftest import git
from workers_app.services import api_token_create, worker_register_with_token
from workers_app.workspaces import workspace_prepare, workspace_snapshot

EDITOR = Path(__file__).resolve().parents[1] / "agents" / "editor.py"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def roots(settings, tmp_path):
    settings.AGENTVINE_WORKSPACE_ROOT = tmp_path / "worker-workspaces"
    settings.AGENTVINE_RESULTS_ROOT = tmp_path / "server-results"


def running_execution(operator, worker):
    task = task_create(title="Write notes", executor="noop", created_by=operator)
    order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    _, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    return Task.objects.get(pk=task.pk), execution


def worked_branch(task, tmp_path):
    """The worker's side: the agent edits its workspace, the run is
    committed, and the branch is bundled."""
    path = workspace_prepare(task=task)
    (path / "README.md").write_text("project\n")
    (path / "obsolete.txt").write_text("old\n")
    (path / "notes.txt").write_text("".join(f"note {n}\n" for n in range(20)))
    subprocess.run([sys.executable, str(EDITOR)], cwd=path, check=True, capture_output=True)
    snapshot = workspace_snapshot(task=task, message="Write notes (attempt 1)")
    bundle = tmp_path / f"{uuid.uuid4().hex}.bundle"
    git("bundle", "create", "--quiet", str(bundle), f"agentvine/{task.id}", cwd=path)
    return snapshot, bundle, path


def upload(client, execution, bundle, base, *, auth):
    client.credentials(HTTP_AUTHORIZATION=auth)
    return client.post(
        f"/api/v1/executions/{execution.pk}/bundle/?base={base}",
        data=Path(bundle).read_bytes(),
        content_type="application/octet-stream",
    )


def independent_numstat(repository, base, head):
    changed = {}
    for line in git("diff", "--numstat", "--find-renames", base, head, cwd=repository).splitlines():
        added, deleted, path = line.split("\t")
        path = path.split(" => ")[1] if " => " in path else path
        changed[path] = (None, None) if added == "-" else (int(added), int(deleted))
    return changed


def test_a_runs_bundle_reaches_the_server_and_is_cloned_over_http(roots, operator, live_server, tmp_path):
    worker, worker_key = worker_register_with_token(name=f"remote-{uuid.uuid4().hex[:6]}")
    task, execution = running_execution(operator, worker)
    snapshot, bundle, _ = worked_branch(task, tmp_path)

    answer = upload(APIClient(), execution, bundle, snapshot.base_commit, auth=f"Token {worker_key}")

    assert answer.status_code == 201, answer.content
    execution.refresh_from_db()
    server = results_repository_path(task)
    assert git("rev-parse", f"agentvine/{task.id}", cwd=server) == snapshot.head_commit == execution.head_commit
    assert execution.has_changes is True
    recorded = {entry["path"]: (entry["insertions"], entry["deletions"]) for entry in execution.changed_files}
    assert recorded == independent_numstat(server, execution.base_commit, execution.head_commit)
    assert len(recorded) == 5

    _, operator_key = api_token_create(user=operator, name="git")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {operator_key}")
    listed = client.get(f"/api/v1/executions/{execution.pk}/diff/")
    assert listed.status_code == 200 and listed.json()["changed_files"] == execution.changed_files
    patch = client.get(f"/api/v1/executions/{execution.pk}/diff/", HTTP_ACCEPT="text/x-diff")
    assert patch.status_code == 200 and patch["Content-Type"].startswith("text/x-diff")
    independent = subprocess.run(
        ["git", "diff", "--find-renames", execution.base_commit, execution.head_commit],
        cwd=server, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert patch.content.decode() == independent and "+<script>alert" in independent
    client.credentials(HTTP_AUTHORIZATION=f"Token {worker_key}")
    assert client.get(f"/api/v1/executions/{execution.pk}/diff/").status_code == 403

    url = f"{live_server.url}/git/{task.id}.git"
    clone = tmp_path / "clone"
    cloned = subprocess.run(
        ["git", "-c", f"http.extraHeader=Authorization: Token {operator_key}", "clone", "--quiet",
         "--branch", f"agentvine/{task.id}", url, str(clone)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cloned.returncode == 0, cloned.stderr
    assert git("rev-parse", "HEAD", cwd=clone) == execution.head_commit
    assert (clone / "payload.html").read_text() == '<script>alert("x")</script>\n'

    # Basic auth with the token as password works too, as git sends it.
    basic_url = url.replace("http://", f"http://operator:{operator_key}@")
    listed = subprocess.run(["git", "ls-remote", basic_url], capture_output=True, text=True, timeout=60)
    assert execution.head_commit in listed.stdout

    refused = subprocess.run(
        ["git", "-c", "credential.helper=", "ls-remote", url],
        capture_output=True, text=True, timeout=60, env={"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert refused.returncode != 0 and execution.head_commit not in refused.stdout
    wrong = subprocess.run(
        ["git", "-c", f"http.extraHeader=Authorization: Token {worker_key}", "ls-remote", url],
        capture_output=True, text=True, timeout=60, env={"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert wrong.returncode != 0, "a worker token is not an operator's"

    # Read-only: a push is refused and the branch stays where it was.
    (clone / "pushed.txt").write_text("x\n")
    git("add", ".", cwd=clone)
    git("-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "push attempt", cwd=clone)
    pushed = subprocess.run(
        ["git", "-c", f"http.extraHeader=Authorization: Token {operator_key}", "push", "origin", "HEAD"],
        cwd=clone, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert pushed.returncode != 0
    assert git("rev-parse", f"agentvine/{task.id}", cwd=server) == execution.head_commit


def test_bad_bundles_and_foreign_callers_are_refused_and_change_nothing(roots, operator, tmp_path):
    worker, worker_key = worker_register_with_token(name=f"remote-{uuid.uuid4().hex[:6]}")
    _, other_key = worker_register_with_token(name=f"other-{uuid.uuid4().hex[:6]}")
    task, execution = running_execution(operator, worker)
    snapshot, bundle, workspace = worked_branch(task, tmp_path)
    client = APIClient()

    not_bundle = tmp_path / "junk.bundle"
    not_bundle.write_bytes(b"PK\x03\x04 not a bundle")
    answer = upload(client, execution, not_bundle, snapshot.base_commit, auth=f"Token {worker_key}")
    assert answer.status_code == 400 and answer.json()["detail"] == "the upload is not a git bundle"

    git("branch", "main-too", cwd=workspace)
    extra = tmp_path / "extra.bundle"
    git("bundle", "create", "--quiet", str(extra), f"agentvine/{task.id}", "main-too", cwd=workspace)
    answer = upload(client, execution, extra, snapshot.base_commit, auth=f"Token {worker_key}")
    assert answer.status_code == 400 and "only carry the task's branch" in answer.json()["detail"]

    answer = upload(client, execution, bundle, "not-a-commit", auth=f"Token {worker_key}")
    assert answer.status_code == 400

    answer = upload(client, execution, bundle, snapshot.base_commit, auth=f"Token {other_key}")
    assert answer.status_code == 403
    answer = upload(client, execution, bundle, snapshot.base_commit, auth="")
    assert answer.status_code == 401

    execution.refresh_from_db()
    assert execution.has_changes is None and execution.head_commit == ""
    server = results_repository_path(task)
    assert git("for-each-ref", cwd=server) == ""

    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=operator, name='diff')[1]}")
    missing = client.get(f"/api/v1/executions/{execution.pk}/diff/", HTTP_ACCEPT="text/x-diff")
    assert missing.status_code == 404

    # The run's own agent token may send its execution's results.
    answer = upload(client, execution, bundle, snapshot.base_commit, auth=f"Agent {execution.agent_token}")
    assert answer.status_code == 201, answer.content
