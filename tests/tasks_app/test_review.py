"""The review loop of a task's results, against real git repositories, the
real runner on in-process slots (two of them, each with its own workspace
root, like two hosts) uploading through a live HTTP server, and the REST API
and pages an operator uses."""

import json
import shutil
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chat_app.models import ChatMessage
from queue_app.models import Execution, ExecutionStatus, WorkOrderKind, WorkOrderStatus
from tasks_app import forges
from tasks_app.models import ReviewStatus, Task, TaskReview
from tasks_app.results import results_bundle_ingest, results_repository_path
from tasks_app.services import task_create
from tests.workers_app.conftest import git
from workers_app import slots
from workers_app.runner import work_order_run
from workers_app.services import api_token_create, worker_register
from workers_app.workspaces import workspace_bundle, workspace_path

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def origin(tmp_path):
    """A bare origin (``file://``) whose main branch has a README."""
    seed = tmp_path / "seed"
    seed.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=seed)
    (seed / "README.md").write_text("project\n")
    git("add", ".", cwd=seed)
    git("-c", "user.name=Dev", "-c", "user.email=dev@example.com", "commit", "--quiet", "-m", "initial", cwd=seed)
    bare = tmp_path / "origin.git"
    git("clone", "--quiet", "--bare", str(seed), str(bare), cwd=tmp_path)
    return bare


def origin_commit(origin, tmp_path, path, text, message):
    """Someone else pushes a commit to the origin's main branch."""
    clone = tmp_path / f"dev-{uuid.uuid4().hex[:6]}"
    git("clone", "--quiet", str(origin), str(clone), cwd=tmp_path)
    (clone / path).write_text(text)
    git("add", ".", cwd=clone)
    git("-c", "user.name=Dev", "-c", "user.email=dev@example.com", "commit", "--quiet", "-m", message, cwd=clone)
    git("push", "--quiet", "origin", "main", cwd=clone)
    return git("rev-parse", "HEAD", cwd=clone)


@pytest.fixture
def hosts(live_server, settings, tmp_path):
    """Two slots on two "hosts" (workspace roots); the server is the live server."""
    settings.AGENTVINE_API_URL = live_server.url
    settings.AGENTVINE_RESULTS_ROOT = tmp_path / "server-results"
    settings.AGENTVINE_GIT_AUTHOR_NAME = "Review Bot"
    settings.AGENTVINE_GIT_AUTHOR_EMAIL = "bot@example.com"
    made = {
        "a": (worker_register(name="host-a:1", hostname="host-a"), tmp_path / "host-a"),
        "b": (worker_register(name="host-b:1", hostname="host-b"), tmp_path / "host-b"),
    }

    def run_on(host, work_order):
        worker, root = made[host]
        settings.AGENTVINE_WORKSPACE_ROOT = root
        slots._state["worker"] = worker
        try:
            return work_order_run(work_order_id=str(work_order.pk))
        finally:
            slots._state["worker"] = None

    run_on.hosts = made
    yield run_on
    slots._state["worker"] = None


@pytest.fixture
def api(client, operator):
    key = api_token_create(user=operator, name="review")[1]

    def post(task, body):
        return client.post(
            f"/api/v1/tasks/{task.pk}/review/",
            data=json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Token {key}",
        )

    return post


def first_run(hosts, operator, origin, title="Write revisions"):
    task = task_create(
        title=title,
        description="Start a revisions log.",
        executor="reviser",
        repository_url=f"file://{origin}",
        created_by=operator,
    )
    assert hosts("a", task.work_orders.get()) == "completed"
    task.refresh_from_db()
    execution = task.executions.get()
    assert execution.has_changes is True and task.review_status == ReviewStatus.IN_REVIEW
    return task, execution


def test_request_changes_starts_the_agents_next_turn_on_another_host_from_the_branch(hosts, api, operator, origin):
    task, first = first_run(hosts, operator, origin)
    server = results_repository_path(task)
    branch = f"agentvine/{task.id}"
    assert git("rev-parse", branch, cwd=server) == first.head_commit

    # Bad input changes nothing.
    assert api(task, {"action": "request_changes", "comment": "   "}).status_code == 400
    assert api(task, {"action": "merge-it"}).status_code == 400
    assert not TaskReview.objects.exists() and task.work_orders.count() == 1

    answer = api(task, {"action": "request_changes", "comment": "Also describe the tests"})

    assert answer.status_code == 200, answer.content
    assert answer.json()["outcome"] == "changes_requested" and answer.json()["by"] == operator.username
    message = ChatMessage.objects.get(task=task, text__contains="Also describe the tests")
    assert message.sender.key == f"operator:{operator.pk}" or operator.username in message.sender.display_name
    turn_order = task.work_orders.get(kind=WorkOrderKind.DELIVER_MESSAGE)
    # The agent is busy with its turn: no second decision meanwhile.
    assert api(task, {"action": "approve"}).status_code == 409

    host_b_root = hosts.hosts["b"][1]
    assert not host_b_root.exists()  # nothing of the task on host b
    assert hosts("b", turn_order) == "completed"

    turn = Execution.objects.get(work_order=turn_order)
    assert turn.status == ExecutionStatus.COMPLETED and turn.worker.name == "host-b:1"
    # It started from the branch: turn 1's line is there, turn 2's added.
    lines = (host_b_root / str(task.id) / "REVISIONS.md").read_text().splitlines()
    assert lines == ["turn 1: Start a revisions log.", "turn 2: Also describe the tests"]
    # One new commit on top of the first turn's, now the server's branch.
    assert git("rev-parse", f"{turn.head_commit}^", cwd=server) == first.head_commit
    assert git("rev-parse", branch, cwd=server) == turn.head_commit
    assert Task.objects.get(pk=task.pk).review_status == ReviewStatus.IN_REVIEW


def test_a_later_bundle_carries_only_the_new_commits_and_the_server_checks_its_prerequisites(
    hosts, operator, origin, settings, tmp_path
):
    task, first = first_run(hosts, operator, origin)
    settings.AGENTVINE_WORKSPACE_ROOT = hosts.hosts["a"][1]
    workspace = workspace_path(task.id)
    (workspace / "more.txt").write_text("more\n")
    git("add", ".", cwd=workspace)
    git("-c", "user.name=A", "-c", "user.email=a@example.com", "commit", "--quiet", "-m", "more", cwd=workspace)
    head = git("rev-parse", "HEAD", cwd=workspace)

    bundle = tmp_path / "later.bundle"
    assert workspace_bundle(task=task, destination=bundle, known=first.head_commit) is True
    verified = git("bundle", "verify", str(bundle), cwd=workspace)
    # Only the new commit travels: the first run's head is a prerequisite.
    assert first.head_commit in verified and "requires" in verified
    assert git("bundle", "list-heads", str(bundle), cwd=workspace).split()[0] == head
    whole = tmp_path / "whole.bundle"
    workspace_bundle(task=task, destination=whole)
    assert bundle.stat().st_size < whole.stat().st_size

    later = Execution.objects.create(task=task, work_order=task.work_orders.get(), attempt=2)
    assert results_bundle_ingest(execution=later, bundle_file=bundle, base_commit=first.base_commit)[0] == head

    # A server without the prerequisite refuses the bundle and keeps its branch.
    other = Task.objects.create(
        title="Other", branch_name=f"agentvine/{task.id}", repository_url=f"file://{tmp_path / 'elsewhere'}"
    )
    other_execution = Execution.objects.create(task=other, work_order=task.work_orders.get(), attempt=3)
    from agentvine.errors import ValidationFailed

    with pytest.raises(ValidationFailed, match="needs commits the server does not have"):
        results_bundle_ingest(execution=other_execution, bundle_file=bundle, base_commit=first.base_commit)


def test_approve_merges_into_the_moved_base_and_pushes_to_the_origin(hosts, api, operator, origin, settings, tmp_path):
    settings.AGENTVINE_RESULTS_PUSH = ["file://*"]
    task, first = first_run(hosts, operator, origin)
    moved = origin_commit(origin, tmp_path, "CHANGELOG.md", "1.0\n", "changelog")

    answer = api(task, {"action": "approve"})

    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert (body["outcome"], body["base_branch"], body["pushed"], body["by"]) == (
        "merged", "main", True, operator.username,
    )  # fmt: skip
    merged = git("rev-parse", "main", cwd=origin)
    assert merged == body["result_commit"] == Task.objects.get(pk=task.pk).merged_commit
    assert git("rev-parse", f"{merged}^1", f"{merged}^2", cwd=origin).split() == [moved, first.head_commit]
    assert git("log", "-1", "--format=%an <%ae>|%s", merged, cwd=origin) == (
        f"Review Bot <bot@example.com>|Merge agentvine/{task.id} into main"
    )
    assert git("show", f"{merged}:REVISIONS.md", cwd=origin) == "turn 1: Start a revisions log."
    assert Task.objects.get(pk=task.pk).review_status == ReviewStatus.MERGED
    assert TaskReview.objects.get(task=task).by == operator
    # Approving again has nothing to merge.
    again = api(task, {"action": "approve"})
    assert again.status_code == 409 and "already merged" in again.json()["detail"]


def test_approve_fast_forwards_an_unmoved_base(hosts, api, operator, origin, settings):
    settings.AGENTVINE_RESULTS_PUSH = ["file://*"]
    task, first = first_run(hosts, operator, origin)
    answer = api(task, {"action": "approve"})
    assert answer.status_code == 200 and answer.json()["outcome"] == "fast_forward"
    assert git("rev-parse", "main", cwd=origin) == first.head_commit


def test_a_conflicting_base_is_a_conflict_view_and_a_clear_answer_not_a_500(
    hosts, api, client, operator, origin, settings, tmp_path
):
    settings.AGENTVINE_RESULTS_PUSH = ["file://*"]
    task, first = first_run(hosts, operator, origin)
    moved = origin_commit(origin, tmp_path, "REVISIONS.md", "somebody else's line\n", "conflicting")

    answer = api(task, {"action": "approve"})

    assert answer.status_code == 409, answer.content
    body = answer.json()
    assert body["code"] == "merge_conflict" and body["conflicts"] == ["REVISIONS.md"]
    assert body["review"]["by"] == operator.username and body["review"]["outcome"] == "conflict"
    assert "REVISIONS.md" in body["detail"] and "nothing was merged" in body["detail"]
    assert git("rev-parse", "main", cwd=origin) == moved  # the origin untouched
    task.refresh_from_db()
    assert task.review_status == ReviewStatus.CONFLICT and task.merge_conflicts == ["REVISIONS.md"]

    client.force_login(operator)
    page = client.get(f"/tasks/{task.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-testid="review-conflict"' in html and "<li>REVISIONS.md</li>" in html
    # The page's own button gives the same answer, as a message on the page.
    clicked = client.post(f"/tasks/{task.pk}/review/", {"action": "approve"}, follow=True)
    assert clicked.status_code == 200
    assert "Not merged: the branch conflicts with main." in clicked.content.decode()

    # Handed to the agent: a turn whose message names the files.
    rebase = api(task, {"action": "rebase"})
    assert rebase.status_code == 200 and rebase.json()["outcome"] == "changes_requested"
    turn_order = task.work_orders.get(kind=WorkOrderKind.DELIVER_MESSAGE)
    assert turn_order.status == WorkOrderStatus.QUEUED
    assert ChatMessage.objects.filter(task=task, text__contains="- REVISIONS.md").exists()


def test_review_refuses_a_task_that_has_not_completed(api, operator):
    task = task_create(title="Still queued", executor="reviser", created_by=operator)
    answer = api(task, {"action": "approve"})
    assert answer.status_code == 409 and "once its run has completed" in answer.json()["detail"]
    assert api(task, {"action": "request_changes", "comment": "x"}).status_code == 409
    assert not TaskReview.objects.exists()


def move_to_repository(task, url):
    """Make ``task`` a task of ``url`` (unreachable from here), its results
    with it: the server keeps one repository per source repository."""
    before = results_repository_path(task)
    task.repository_url = url
    Task.objects.filter(pk=task.pk).update(repository_url=url)
    shutil.copytree(before, results_repository_path(task))


class FakeGitHub(BaseHTTPRequestHandler):
    """No GitHub is reachable from here: this local server speaks GitHub's
    REST JSON for the one endpoint the adapter uses (POST
    /repos/{owner}/{repo}/pulls), as documented, including its 422."""

    received = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeGitHub.received.append((self.path, dict(self.headers), body))
        parts = self.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "repos" or parts[3] != "pulls":
            return self._answer(404, {"message": "Not Found"})
        if self.headers.get("Authorization") not in ("Bearer ghp_fake_token", "token ghp_fake_token"):
            return self._answer(401, {"message": "Bad credentials"})
        if any(earlier["head"] == body["head"] for _, _, earlier in FakeGitHub.received[:-1]):
            already = {"resource": "PullRequest", "code": "custom", "message": "A pull request already exists"}
            return self._answer(422, {"message": "Validation Failed", "errors": [already]})
        number = len(FakeGitHub.received)
        return self._answer(
            201,
            {
                "number": number,
                "state": "open",
                "title": body["title"],
                "head": {"ref": body["head"]},
                "base": {"ref": body["base"]},
                "html_url": f"https://github.com/{parts[1]}/{parts[2]}/pull/{number}",
            },
        )

    def _answer(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_github(monkeypatch, settings):
    FakeGitHub.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGitHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.AGENTVINE_FORGE_API_URL = f"http://127.0.0.1:{server.server_address[1]}"
    settings.AGENTVINE_FORGE_TOKEN_SECRET = "FORGE_TEST_TOKEN"
    monkeypatch.setenv("FORGE_TEST_TOKEN", "ghp_fake_token")
    yield FakeGitHub
    server.shutdown()
    server.server_close()


def test_open_pull_request_creates_one_through_the_forge_api(hosts, api, operator, origin, fake_github):
    task, first = first_run(hosts, operator, origin, title="Add revisions log")
    # The results came from a local origin; the task's repository is on
    # GitHub as far as the forge adapter is concerned.
    move_to_repository(task, "https://github.com/acme/widgets.git")

    answer = api(task, {"action": "open_pull_request", "into": "main"})

    assert answer.status_code == 200, answer.content
    assert answer.json()["pull_request_url"] == "https://github.com/acme/widgets/pull/1"
    ((path, headers, body),) = fake_github.received
    assert path == "/repos/acme/widgets/pulls"
    assert headers["Authorization"] == "Bearer ghp_fake_token"
    assert headers["Accept"] == "application/vnd.github+json"
    assert (body["head"], body["base"], body["title"]) == (f"agentvine/{task.id}", "main", "Add revisions log")
    assert "REVISIONS.md" in body["body"]
    task.refresh_from_db()
    assert task.pull_request_url == "https://github.com/acme/widgets/pull/1"
    assert TaskReview.objects.get(task=task, action="open_pull_request").by == operator

    # GitHub's refusal (one already open) is a clear 409, not a 500.
    again = api(task, {"action": "open_pull_request", "into": "main"})
    assert again.status_code == 409 and "A pull request already exists" in again.json()["detail"]


def test_the_gitea_flavour_uses_its_token_scheme_and_api_path(fake_github, settings):
    settings.AGENTVINE_FORGE_TYPE = "gitea"
    url = forges.pull_request_open(
        repository_url="git@gitea.example:team/tool.git", head="feature", base="main", title="T", body="B"
    )
    assert url == "https://github.com/team/tool/pull/1"  # the fake's answer
    ((path, headers, _),) = fake_github.received
    assert path == "/repos/team/tool/pulls" and headers["Authorization"] == "token ghp_fake_token"


def test_without_the_token_secret_no_request_is_made(fake_github, monkeypatch):
    monkeypatch.delenv("FORGE_TEST_TOKEN")
    from agentvine.errors import IllegalTransition

    with pytest.raises(IllegalTransition, match="FORGE_TEST_TOKEN"):
        forges.pull_request_open(repository_url="https://github.com/a/b", head="x", base="main", title="t", body="")
    assert fake_github.received == []


def test_a_push_that_needs_a_secret_is_refused_cleanly_without_it(hosts, api, operator, origin, settings):
    """An HTTPS origin configured for pushing needs its token secret; without
    it approval answers why and moves nothing (no 500, no partial merge)."""
    settings.AGENTVINE_RESULTS_PUSH = ["https://*"]
    settings.AGENTVINE_RESULTS_PUSH_SECRET = "PUSH_TEST_TOKEN"
    settings.AGENTVINE_MERGE_BASE_BRANCH = "main"
    task, _ = first_run(hosts, operator, origin)
    move_to_repository(task, "https://git.example/acme/widgets.git")
    answer = api(task, {"action": "approve"})
    assert answer.status_code == 409 and "PUSH_TEST_TOKEN" in answer.json()["detail"]
    assert Task.objects.get(pk=task.pk).review_status == ReviewStatus.IN_REVIEW
