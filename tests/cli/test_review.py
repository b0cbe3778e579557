"""``agentvine review``: request changes and approve, online and queued
offline then synced, against a real daphne whose results a real runner (an
in-process slot) sent it."""

import pytest

from queue_app.models import WorkOrderKind
from tasks_app.models import ReviewStatus, Task, TaskReview
from tasks_app.results import results_repository_path
from tasks_app.services import task_create
from tests.workers_app.conftest import git
from workers_app import slots
from workers_app.runner import work_order_run
from workers_app.services import worker_register

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def results_root(tmp_path, monkeypatch, settings):
    """The daphne (started after this) and this process share the server's repositories."""
    root = tmp_path / "server-results"
    monkeypatch.setenv("AGENTVINE_RESULTS_ROOT", str(root))
    settings.AGENTVINE_RESULTS_ROOT = root
    return root


def run(work_order, worker):
    slots._state["worker"] = worker
    try:
        return work_order_run(work_order_id=str(work_order.pk))
    finally:
        slots._state["worker"] = None


def test_review_requests_changes_online_and_approves_offline_then_synced(
    results_root, logged_in, server, operator, settings, tmp_path
):
    settings.AGENTVINE_API_URL = server.url
    settings.AGENTVINE_WORKSPACE_ROOT = tmp_path / "workspaces"
    worker = worker_register(name="cli-slot:1", hostname="cli")
    task = task_create(title="Notes", description="Begin the log.", executor="reviser", created_by=operator)
    assert run(task.work_orders.get(), worker) == "completed"
    assert Task.objects.get(pk=task.pk).review_status == ReviewStatus.IN_REVIEW

    refused = logged_in("review", str(task.pk))
    assert refused.code != 0 and "give one of --approve or --changes" in refused.err

    online = logged_in("review", str(task.pk), "--changes", "Mention the tests")
    assert online.code == 0, online.err
    assert online.out.strip() == f"changes requested on {task.pk}: its agent's next turn starts with them"
    turn = task.work_orders.get(kind=WorkOrderKind.DELIVER_MESSAGE)
    assert run(turn, worker) == "completed"
    head = git("rev-parse", f"agentvine/{task.pk}", cwd=results_repository_path(task))
    assert git("show", f"{head}:REVISIONS.md", cwd=results_repository_path(task)).endswith("turn 2: Mention the tests")

    server.stop()
    queued = logged_in("review", str(task.pk), "--approve")
    assert queued.code == 0, queued.err
    assert "queued (#" in queued.out
    assert Task.objects.get(pk=task.pk).review_status == ReviewStatus.IN_REVIEW  # nothing reached the server
    server.start()
    synced = logged_in("sync")
    assert synced.code == 0, synced.err

    task.refresh_from_db()
    assert task.review_status == ReviewStatus.MERGED
    assert git("rev-parse", "main", cwd=results_repository_path(task)) == head == task.merged_commit
    approval = TaskReview.objects.get(task=task, action="approve")
    assert (approval.outcome, approval.by) == ("fast_forward", operator)
    # Approving again is refused online with the server's reason, exit 1.
    again = logged_in("review", str(task.pk), "--approve")
    assert again.code == 1 and "already merged" in again.err
