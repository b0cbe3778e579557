"""End to end: a real Celery worker runs a command-profile agent that edits,
adds, deletes and renames files in a real git repository; its slot sends the
commits to the server (pytest-django's live server). What the server then
serves as the task's changes (the API's file list and diff, the console's
patch download) is exactly what an independent ``git diff base..head`` of a
fresh mirror of the server's bare repository says."""

import subprocess
import uuid

import pytest
from rest_framework.test import APIClient

from tasks_app.models import Task, TaskStatus
from tasks_app.results import results_repository_path
from tasks_app.services import task_create
from tests.conftest import wait_for
from tests.workers_app.conftest import editable_source, git
from workers_app.services import api_token_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def source(tmp_path):
    return editable_source(tmp_path / "source")


def test_the_served_diff_of_a_real_run_is_gits_own(
    celery_worker_factory, operator, source, tmp_path, live_server, settings
):
    settings.AGENTVINE_RESULTS_ROOT = tmp_path / "server-results"
    celery_worker_factory(
        extra_env={"AGENTVINE_WORKSPACE_ROOT": str(tmp_path / "workspaces"), "AGENTVINE_API_URL": live_server.url}
    )
    task = task_create(title="Tidy up", executor="editor", repository_url=str(source), created_by=operator)
    wait_for(lambda: Task.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, timeout=60, message="the run")
    execution = task.executions.get()
    base, head = execution.base_commit, execution.head_commit
    assert base == git("rev-parse", "main", cwd=source) and head != base

    # The independent view: a fresh mirror of the server's bare repository.
    mirror = tmp_path / f"mirror-{uuid.uuid4().hex[:6]}"
    subprocess.run(
        ["git", "clone", "--quiet", "--mirror", f"file://{results_repository_path(task)}", str(mirror)], check=True
    )
    independent = subprocess.run(
        ["git", "diff", "--find-renames", base, head], cwd=mirror, capture_output=True, text=True, check=True
    ).stdout
    statuses = {}
    for line in git("diff", "--find-renames", "--name-status", base, head, cwd=mirror).splitlines():
        status, *paths = line.split("\t")
        statuses[paths[-1]] = (status[0], paths[0])
    numstat = {}
    for line in git("diff", "--find-renames", "--numstat", base, head, cwd=mirror).splitlines():
        added, deleted, path = line.split("\t")
        path = path.split(" => ")[1] if " => " in path else path
        numstat[path] = (None, None) if added == "-" else (int(added), int(deleted))
    # Every kind of change is there: edit, add, delete, rename, binary.
    assert {s for s, _ in statuses.values()} == {"M", "A", "D", "R"}
    assert statuses["docs-notes.txt"] == ("R", "notes.txt")
    assert numstat["logo.bin"] == (None, None)

    _, key = api_token_create(user=operator, name="e2e")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    changes = api.get(f"/api/v1/tasks/{task.pk}/changes/").json()
    for change_set in (changes["whole"], changes["attempts"][0]):
        assert change_set["base_commit"] == base and change_set["head_commit"] == head and change_set["on_server"]
        assert {f["path"]: (f["status"], f["old_path"]) for f in change_set["files"]} == statuses
        assert {f["path"]: (f["insertions"], f["deletions"]) for f in change_set["files"]} == numstat
        assert {f["path"] for f in change_set["files"] if f["binary"]} == {"logo.bin"}
    served = api.get(f"/api/v1/tasks/{task.pk}/changes/", HTTP_ACCEPT="text/x-diff")
    assert served.content.decode() == independent
    assert api.get(f"/api/v1/executions/{execution.pk}/diff/?format=diff").content.decode() == independent

    console = APIClient()
    console.force_login(operator)
    assert console.get(f"/tasks/{task.pk}/changes/patch/?attempt=1").content.decode() == independent
    page = console.get(f"/tasks/{task.pk}/changes/").content.decode()
    assert page.count('data-testid="changed-file"') == len(statuses)
    assert "obsolete.txt" in page and "notes.txt → docs-notes.txt" in page and "Binary file, not shown." in page


def test_a_fresh_installs_demo_agent_leaves_a_diff(celery_worker_factory, operator, tmp_path, live_server, settings):
    """The default profile's demo agent changes files, so the first task of
    a fresh install has changes to show."""
    settings.AGENTVINE_RESULTS_ROOT = tmp_path / "server-results"
    celery_worker_factory(
        extra_env={
            "AGENTVINE_WORKSPACE_ROOT": str(tmp_path / "workspaces"),
            "AGENTVINE_API_URL": live_server.url,
            "AGENTVINE_DEMO_STEP_SECONDS": "0.01",
        }
    )
    task = task_create(title="Say hello", executor="demo", created_by=operator)
    wait_for(lambda: Task.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, timeout=60, message="the demo run")

    _, key = api_token_create(user=operator, name="demo")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    changes = api.get(f"/api/v1/tasks/{task.pk}/changes/").json()
    files = {f["path"]: (f["status"], f["insertions"]) for f in changes["whole"]["files"]}
    assert set(files) == {"AGENTVINE_RESULT.md", "NOTES.md"} and changes["whole"]["on_server"]
    assert files["NOTES.md"] == ("A", 3)
    patch = api.get(f"/api/v1/tasks/{task.pk}/changes/?format=diff").content.decode()
    assert "+- Say hello: " in patch
