"""What a task changed: GET tasks/{id}/changes/ and the console's Changes
page, read from the server's real results repository (real git on the
worker's and the server's side, PostgreSQL), compared with what an
independent ``git diff`` of the server's bare repository says."""

import math
import re
import subprocess
import uuid

import pytest
from rest_framework.test import APIClient

from queue_app import lifecycle
from tasks_app.changes import compare_url
from tasks_app.changes_views import DIFF_LINES_PER_PAGE, FILES_PER_PAGE, LARGE_FILE_LINES
from tasks_app.models import Task
from tasks_app.results import results_bundle_ingest, results_repository_path
from tasks_app.services import task_create
from tests.tasks_app.test_results_server import independent_numstat
from tests.workers_app.conftest import git
from workers_app.services import api_token_create, worker_register_with_token
from workers_app.workspaces import workspace_bundle, workspace_prepare, workspace_snapshot

pytestmark = pytest.mark.django_db(transaction=True)

PAYLOAD = '<script>window.__pwned=1</script>\n<img src=x onerror="window.__pwned=2">\n'


@pytest.fixture
def roots(settings, tmp_path):
    settings.AGENTVINE_WORKSPACE_ROOT = tmp_path / "worker-workspaces"
    settings.AGENTVINE_RESULTS_ROOT = tmp_path / "server-results"


@pytest.fixture
def worker():
    return worker_register_with_token(name=f"w-{uuid.uuid4().hex[:6]}")[0]


@pytest.fixture
def operator_api(operator):
    _, key = api_token_create(user=operator, name="changes")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def run_attempt(task, worker, edit, tmp_path):
    """One attempt as a slot runs it: the agent edits the workspace, the run
    is committed, bundled and taken in by the server."""
    order = task.work_orders.order_by("-enqueued_at").first()
    order = lifecycle.work_order_claim(worker=worker, work_order_id=order.id)
    order, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    path = workspace_prepare(task=task)
    edit(path)
    snapshot = workspace_snapshot(task=task, message=f"{task.title} (attempt {execution.attempt})")
    bundle = tmp_path / f"{uuid.uuid4().hex}.bundle"
    workspace_bundle(task=task, destination=bundle)
    results_bundle_ingest(execution=execution, bundle_file=bundle, base_commit=snapshot.base_commit)
    execution.refresh_from_db()
    return order, execution


def first_edit(path):
    (path / "README.md").write_text("project\nEdited.\n")
    (path / "app.py").write_text("def main():\n    return 'hello'\n")
    (path / "payload.html").write_text(PAYLOAD)
    (path / "logo.bin").write_bytes(bytes(range(256)))


def second_edit(path):
    (path / "app.py").write_text("def main():\n    return 'hello, world'\n")
    (path / "README.md").rename(path / "README.txt")


def independent_diff(repository, base, head, *paths):
    return subprocess.run(
        ["git", "diff", "--find-renames", base, head, "--", *paths],
        cwd=repository, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def as_numstat(files):
    return {f["path"]: (f["insertions"], f["deletions"]) for f in files}


def test_changes_api_per_attempt_and_whole_task(roots, operator, operator_api, worker, tmp_path):
    task = task_create(title="Greet", executor="noop", created_by=operator)
    order, first = run_attempt(task, worker, first_edit, tmp_path)
    # The run is requeued (its host went away) and a second attempt goes on.
    lifecycle.work_order_requeue(work_order=order, reason="host lost", lost=True)
    _, second = run_attempt(Task.objects.get(pk=task.pk), worker, second_edit, tmp_path)
    server = results_repository_path(task)

    answer = operator_api.get(f"/api/v1/tasks/{task.pk}/changes/")

    assert answer.status_code == 200, answer.content
    data = answer.json()
    assert data["branch"] == f"agentvine/{task.pk}" and data["git_path"] == f"/git/{task.pk}.git"
    assert [a["attempt"] for a in data["attempts"]] == [1, 2]
    assert [a["head_commit"] for a in data["attempts"]] == [first.head_commit, second.head_commit]
    assert data["whole"]["base_commit"] == first.base_commit
    assert data["whole"]["head_commit"] == second.head_commit == git("rev-parse", data["branch"], cwd=server)
    assert as_numstat(data["whole"]["files"]) == independent_numstat(server, first.base_commit, second.head_commit)
    assert as_numstat(data["attempts"][0]["files"]) == independent_numstat(server, first.base_commit, first.head_commit)
    whole = data["whole"]
    assert whole["files_total"] == 4 and whole["binary_files"] == 1 and not whole["files_truncated"]
    assert {f["path"]: f["binary"] for f in whole["files"]}["logo.bin"] is True
    assert whole["insertions"] == sum(
        n for n, _ in independent_numstat(server, first.base_commit, second.head_commit).values() if n
    )
    # README.md, written in attempt 1 and renamed in attempt 2, is new
    # against the base (the empty first commit of a task without a repository).
    assert {f["path"]: f["status"] for f in whole["files"]} == dict.fromkeys(
        ("README.txt", "app.py", "logo.bin", "payload.html"), "A"
    )

    # The diff as text: the whole task, or one attempt, equal to git's own.
    patch = operator_api.get(f"/api/v1/tasks/{task.pk}/changes/", HTTP_ACCEPT="text/x-diff")
    assert patch.status_code == 200 and patch["Content-Type"].startswith("text/x-diff")
    assert patch.content.decode() == independent_diff(server, first.base_commit, second.head_commit)
    one = operator_api.get(f"/api/v1/tasks/{task.pk}/changes/?format=diff&attempt=1")
    assert one.content.decode() == independent_diff(server, first.base_commit, first.head_commit)
    assert "window.__pwned=1" in one.content.decode()

    # A cap on every file list: offset and limit page through them.
    paged = operator_api.get(f"/api/v1/tasks/{task.pk}/changes/?limit=2&offset=1&attempt=2").json()
    assert [a["attempt"] for a in paged["attempts"]] == [2]
    assert paged["whole"]["files"] == data["whole"]["files"][1:3]
    assert paged["whole"]["files_truncated"] is True and paged["whole"]["files_total"] == 4
    assert operator_api.get(f"/api/v1/tasks/{task.pk}/changes/?limit=100000").status_code == 400
    missing = operator_api.get(f"/api/v1/tasks/{task.pk}/changes/?attempt=7")
    assert missing.status_code == 404 and "no attempt 7" in missing.json()["detail"]


def test_changes_api_refuses_without_credentials_and_says_when_nothing_is_there(
    roots, operator, operator_api, worker, tmp_path
):
    task = task_create(title="Not yet", executor="noop", created_by=operator)
    url = f"/api/v1/tasks/{task.pk}/changes/"

    assert APIClient().get(url).status_code in (401, 403)
    worker_client = APIClient()
    worker_client.credentials(HTTP_AUTHORIZATION=f"Token {worker_register_with_token(name='wk')[1]}")
    assert worker_client.get(url).status_code == 403, "a worker token is not an operator's"

    waiting = operator_api.get(url)
    assert waiting.status_code == 404
    assert waiting.json()["detail"] == "this task has no results yet: no attempt has ended with a snapshot"
    assert operator_api.get(f"/api/v1/tasks/{uuid.uuid4()}/changes/").status_code == 404

    run_attempt(task, worker, first_edit, tmp_path)
    assert APIClient().get(url).status_code in (401, 403)
    assert operator_api.get(url).status_code == 200


def test_changes_are_in_the_openapi_schema(operator_api):
    schema = operator_api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operation = schema["paths"]["/api/v1/tasks/{task_id}/changes/"]["get"]
    assert operation["operationId"] == "tasks_changes"
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/x-diff"}


def test_the_changes_page_escapes_the_agents_text_and_offers_the_patch(roots, operator, client, worker, tmp_path):
    task = task_create(
        title="<b>Greet</b>", executor="noop", created_by=operator, repository_url="",
    )  # fmt: skip
    _, execution = run_attempt(task, worker, first_edit, tmp_path)
    client.force_login(operator)

    page = client.get(f"/tasks/{task.pk}/changes/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "<script>window.__pwned" not in html and "<img src=x" not in html
    text = re.sub(r'<span class="[a-z0-9]+">|</span>', "", html)
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in text
    assert '&lt;img src=x onerror="window.__pwned=2"&gt;' in text
    assert "<b>Greet</b>" not in html and "&lt;b&gt;Greet&lt;/b&gt;" in html
    assert "Binary file, not shown." in html
    assert execution.head_commit[:12] in html and f"agentvine/{task.pk}" in html
    assert 'class="k">def</span>' in html, "Python is highlighted"

    patch = client.get(f"/tasks/{task.pk}/changes/patch/")
    assert patch["Content-Type"].startswith("text/x-diff") and "attachment" in patch["Content-Disposition"]
    server = results_repository_path(task)
    assert patch.content.decode() == independent_diff(server, execution.base_commit, execution.head_commit)

    detail = client.get(f"/tasks/{task.pk}/").content.decode()
    assert f'href="/tasks/{task.pk}/changes/"' in detail
    assert f'href="/tasks/{task.pk}/changes/?attempt=1">4 files</a>' in detail


def test_the_changes_page_before_any_results_and_for_a_wrong_attempt(roots, operator, client):
    task = task_create(title="Nothing yet", executor="noop", created_by=operator)
    client.force_login(operator)
    page = client.get(f"/tasks/{task.pk}/changes/")
    assert page.status_code == 200 and b'data-testid="no-changes"' in page.content
    assert client.get(f"/tasks/{task.pk}/changes/?attempt=x").status_code == 404
    assert client.get(f"/tasks/{task.pk}/changes/patch/").status_code == 404
    client.logout()
    assert client.get(f"/tasks/{task.pk}/changes/").status_code == 302


def test_a_big_change_is_paged_and_large_files_collapsed(roots, operator, client, worker, tmp_path):
    many = FILES_PER_PAGE + 30

    def edit(path):
        for n in range(many):
            (path / f"m{n:04}.py").write_text("".join(f"v{n}_{i} = {i}\n" for i in range(30)))
        (path / "zz-huge.txt").write_text("".join(f"line {i}\n" for i in range(LARGE_FILE_LINES + 1)))

    task = task_create(title="Big", executor="noop", created_by=operator)
    run_attempt(task, worker, edit, tmp_path)
    client.force_login(operator)

    with_queries = client.get(f"/tasks/{task.pk}/changes/")
    html = with_queries.content.decode()
    assert html.count('data-testid="changed-file"') == FILES_PER_PAGE
    assert "page 1 of 2" in html
    shown = html.count('data-testid="diff-table"')
    assert shown == math.ceil(DIFF_LINES_PER_PAGE / 30), "the page stops rendering diffs past its line budget"
    assert 'data-testid="collapsed-file"' in html

    last = client.get(f"/tasks/{task.pk}/changes/?page=2").content.decode()
    assert last.count('data-testid="changed-file"') == many + 1 - FILES_PER_PAGE
    assert "zz-huge.txt" in last and "Large diff (401 lines), collapsed." in last
    index = many  # zz-huge.txt sorts after the m*.py files
    alone = client.get(f"/tasks/{task.pk}/changes/?file={index}").content.decode()
    assert alone.count('data-testid="diff-table"') == 1 and f"line {LARGE_FILE_LINES}" in alone


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("https://github.com/acme/app.git", "https://github.com/acme/app/compare/abc...agentvine/t1"),
        ("git@github.com:acme/app.git", "https://github.com/acme/app/compare/abc...agentvine/t1"),
        ("https://user:secret@github.com/acme/app", "https://github.com/acme/app/compare/abc...agentvine/t1"),
        ("https://gitlab.com/group/sub/app.git", "https://gitlab.com/group/sub/app/-/compare/abc...agentvine/t1"),
        ("git@gitlab.example.org:team/app.git", "https://gitlab.example.org/team/app/-/compare/abc...agentvine/t1"),
        ("ssh://git@codeberg.org:22/me/app.git", "https://codeberg.org/me/app/compare/abc...agentvine/t1"),
        ("https://gitea.example.org/me/app", "https://gitea.example.org/me/app/compare/abc...agentvine/t1"),
        ("/srv/git/app", None),
        ("file:///srv/git/app", None),
        ("https://example.org/me/app", None),
        ("https://github.com/", None),
        ("", None),
    ],
)
def test_compare_links(origin, expected):
    assert compare_url(repository_url=origin, base_commit="abc", branch="agentvine/t1") == expected


def test_results_the_server_never_received_are_listed_without_a_diff(roots, operator, operator_api, client, worker):
    """A slot whose upload failed records the diff itself: the file list is
    shown, marked, and no diff is claimed."""
    from queue_app.outputs import execution_record_result

    task = task_create(title="Offline host", executor="noop", created_by=operator)
    order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    _, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    files = [{"path": "a.txt", "old_path": "a.txt", "status": "A", "insertions": 2, "deletions": 0, "binary": False}]
    execution_record_result(execution=execution, base_commit="1" * 40, head_commit="2" * 40, changed_files=files)

    data = operator_api.get(f"/api/v1/tasks/{task.pk}/changes/").json()
    assert data["whole"]["on_server"] is False and data["whole"]["files"] == files
    patch = operator_api.get(f"/api/v1/tasks/{task.pk}/changes/?format=diff")
    assert patch.status_code == 404
    assert "the server does not have these commits" in patch.content.decode()
    client.force_login(operator)
    page = client.get(f"/tasks/{task.pk}/changes/").content.decode()
    assert 'data-testid="not-on-server"' in page and "a.txt" in page and 'data-testid="patch-download"' not in page
