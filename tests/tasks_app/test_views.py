"""Operator pages: access, rendering, forms, actions and pinned query counts."""

from decimal import Decimal

import pytest
from django.urls import reverse

from queue_app import lifecycle
from queue_app.outputs import execution_output_append
from tasks_app.models import Priority, Task, TaskStatus
from tasks_app.services import task_cancel
from tests.factories import make_task

pytestmark = pytest.mark.django_db

PAGES = ["overview", "task-list", "worker-list", "session-list", "message-list"]


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


def _run(task, worker, text="hello from the agent\n"):
    order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    order, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    execution_output_append(execution=execution, seq=0, text=text, tail=text)
    return order, execution


@pytest.mark.parametrize("name", PAGES)
def test_pages_send_anonymous_users_to_login(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("name", PAGES)
def test_pages_refuse_signed_in_non_operators(client, django_user_model, name):
    client.force_login(django_user_model.objects.create_user(username="visitor", password="x" * 12))
    assert client.get(reverse(name)).status_code == 403


def test_task_detail_and_actions_need_an_operator(client):
    task = make_task()
    detail = reverse("task-detail", kwargs={"task_id": task.id})
    assert client.get(detail).status_code == 302
    cancel = reverse("task-action", kwargs={"task_id": task.id, "action": "cancel"})
    assert client.post(cancel).status_code == 302
    task.refresh_from_db()
    assert task.status == TaskStatus.QUEUED


def _seed(n, worker):
    for i in range(n):
        task = make_task(title=f"seeded {i}", priority=[Priority.HIGH, Priority.NORMAL, Priority.LOW][i % 3])
        if i % 3 == 0:
            _run(task, worker)
        elif i % 3 == 1:
            task_cancel(task=task)


@pytest.mark.parametrize("name", PAGES)
def test_page_query_count_does_not_grow_with_rows(operator_client, django_assert_max_num_queries, worker, name):
    # The Overview reads two more: its spend panel's aggregate (queue_app.budgets)
    # and the concurrency keys' seats (a row per limited key).
    most = 16 if name == "overview" else 14
    _seed(6, worker)
    with django_assert_max_num_queries(most):
        assert operator_client.get(reverse(name)).status_code == 200
    _seed(30, worker)
    with django_assert_max_num_queries(most):
        assert operator_client.get(reverse(name)).status_code == 200


def test_task_detail_query_count_is_pinned(operator_client, django_assert_max_num_queries, worker):
    task = make_task(title="pinned")
    _run(task, worker)
    with django_assert_max_num_queries(16):
        response = operator_client.get(reverse("task-detail", kwargs={"task_id": task.id}))
    assert response.status_code == 200
    assert "hello from the agent" in response.content.decode()


def test_overview_shows_queue_running_work_and_escapes_agent_text(operator_client, worker):
    make_task(title="waiting high", priority=Priority.HIGH)
    running = make_task(title="busy one")
    _run(running, worker, text="step 1\n<script>alert('x')</script>\n")
    page = operator_client.get(reverse("overview")).content.decode()
    assert 'data-testid="depth-high">1<' in page
    assert "busy one" in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<script>alert('x')</script>" not in page
    assert worker.name in page


def test_task_list_filters_and_searches(operator_client):
    make_task(title="Fix the login bug", task_type="bugfix")
    make_task(title="Write docs for the API", task_type="docs")
    cancelled = make_task(title="Old idea")
    task_cancel(task=cancelled)

    page = operator_client.get(reverse("task-list"), {"q": "login"}).content.decode()
    assert "Fix the login bug" in page and "Write docs" not in page
    page = operator_client.get(reverse("task-list"), {"task_type": "docs"}).content.decode()
    assert "Write docs for the API" in page and "Fix the login bug" not in page
    page = operator_client.get(reverse("task-list"), {"status": "cancelled"}).content.decode()
    assert "Old idea" in page and "Fix the login bug" not in page


def test_task_list_paginates(operator_client):
    for i in range(30):
        make_task(title=f"bulk task {i:02d}")
    first = operator_client.get(reverse("task-list")).content.decode()
    second = operator_client.get(reverse("task-list"), {"page": 2}).content.decode()
    assert "bulk task 29" in first and "bulk task 00" not in first
    assert "bulk task 00" in second and "page 2 of 2" in second


def test_create_task_form_queues_a_task(operator_client, operator):
    response = operator_client.post(
        reverse("task-list"),
        {
            "title": "Add dark mode",
            "description": "CSS only",
            "task_type": "feature",
            "priority": "high",
            "repository_url": "file:///srv/repo",
            "branch_name": "dark-mode",
            "executor": "",
        },
    )
    task = Task.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("task-detail", kwargs={"task_id": task.id})
    assert (task.title, task.priority, task.branch_name, task.created_by) == (
        "Add dark mode",
        "high",
        "dark-mode",
        operator,
    )
    assert task.work_orders.get().queue_name == "high"


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"title": "  "}, "title", "Give the task a title."),
        ({"title": "x", "priority": "urgent"}, "priority", "Select a valid choice"),
        ({"title": "x", "branch_name": "main"}, "repository_url", "A branch needs a repository."),
        ({"title": "x", "executor": "rm-rf"}, "executor", "Select a valid choice"),
    ],
)
def test_create_task_form_shows_errors_and_creates_nothing(operator_client, data, field, message):
    form = {"title": "", "task_type": "feature", "priority": "normal", "executor": "", **data}
    response = operator_client.post(reverse("task-list"), form)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert f'data-testid="error-{field}"' in response.content.decode()
    assert Task.objects.count() == 0


def test_actions_cancel_retry_and_priority(operator_client):
    task = make_task(priority=Priority.NORMAL)
    url = lambda action: reverse("task-action", kwargs={"task_id": task.id, "action": action})  # noqa: E731

    operator_client.post(url("raise"))
    task.refresh_from_db()
    assert task.priority == Priority.HIGH
    assert operator_client.post(url("raise")).status_code == 302  # already highest: refused, unchanged
    task.refresh_from_db()
    assert task.priority == Priority.HIGH
    operator_client.post(url("lower"))
    task.refresh_from_db()
    assert task.priority == Priority.NORMAL

    operator_client.post(url("cancel"))
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED
    response = operator_client.post(url("cancel"), follow=True)
    assert "Cannot cancel: task is already finished." in response.content.decode()
    operator_client.post(url("retry"))
    task.refresh_from_db()
    assert task.status == TaskStatus.QUEUED


def test_action_get_is_not_allowed(operator_client):
    task = make_task()
    url = reverse("task-action", kwargs={"task_id": task.id, "action": "cancel"})
    assert operator_client.get(url).status_code == 405


@pytest.mark.parametrize(
    "data",
    [
        {"action": "delete", "task": []},
        {"action": "priority", "priority": "urgent"},
        {"action": "cancel", "task": ["not-a-uuid"]},
    ],
    ids=["unknown-action", "unknown-priority", "bad-id"],
)
def test_bulk_action_refuses_bad_input_and_changes_nothing(operator_client, data):
    task = make_task(title="Untouched")
    data = {**data, "task": [*data.get("task", []), str(task.id)]}
    response = operator_client.post(reverse("task-bulk"), data)
    assert response.status_code == 400
    assert b"Unknown bulk action" in response.content
    task.refresh_from_db()
    assert (task.status, task.priority) == (TaskStatus.QUEUED, Priority.NORMAL)


def test_bulk_priority_goes_through_the_service_and_reports_each_refusal(operator_client):
    queued = make_task(title="Waiting")
    cancelled = make_task(title="Gone")
    task_cancel(task=cancelled)
    response = operator_client.post(
        reverse("task-bulk"), {"action": "retry", "task": [str(queued.id), str(cancelled.id)]}, follow=True
    )
    shown = [str(m) for m in response.context["messages"]]
    assert "Queued 1 tasks again." in shown
    assert any(m.startswith("Not retried: “Waiting”:") for m in shown), shown
    assert Task.objects.get(pk=cancelled.pk).status == TaskStatus.QUEUED


def test_bulk_requires_an_operator(client, django_user_model):
    task = make_task(title="Safe")
    assert client.post(reverse("task-bulk"), {"action": "cancel", "task": [str(task.id)]}).status_code == 302
    client.force_login(django_user_model.objects.create_user(username="visitor2", password="x" * 12))
    assert client.post(reverse("task-bulk"), {"action": "cancel", "task": [str(task.id)]}).status_code == 403
    assert Task.objects.get(pk=task.pk).status == TaskStatus.QUEUED


def test_overview_shows_throughput_axes_and_per_worker_and_executor_stats(operator_client, worker):
    from datetime import timedelta

    from django.utils import timezone

    from queue_app.models import Execution

    done, broken = make_task(title="Done"), make_task(title="Broken")
    order, execution = _run(done, worker)
    lifecycle.work_order_complete(work_order=order, worker=worker, execution=execution)
    Execution.objects.filter(pk=execution.pk).update(started_at=timezone.now() - timedelta(minutes=3), cost_usd="0.25")
    order, execution = _run(broken, worker)
    lifecycle.work_order_fail(work_order=order, worker=worker, execution=execution, error="boom", retryable=False)
    # Two days old: outside the day.
    old_order, old_execution = _run(make_task(title="Old"), worker)
    lifecycle.work_order_complete(work_order=old_order, worker=worker, execution=old_execution)
    Execution.objects.filter(pk=old_execution.pk).update(completed_at=timezone.now() - timedelta(days=2))

    response = operator_client.get(reverse("overview"))
    html = response.content.decode()
    for label in ("60 min ago", "30 min ago", "now", "completed per minute"):
        assert f">{label}</text>" in html
    workers = response.context["fleet"]["workers"]
    assert [(r["name"], r["completed_day"], r["failed_day"], r["completed_hour"]) for r in workers] == [
        (worker.name, 1, 1, 1)
    ]
    executors = response.context["fleet"]["executors"]
    assert [(r["name"], r["completed_day"], r["failed_day"]) for r in executors] == [("demo", 1, 1)]
    assert str(workers[0]["cost_usd"]) == "0.250000"
    assert 0 < workers[0]["median_seconds"] < 200


def test_overview_and_queue_api_show_a_rate_limited_key_until_its_reset(operator_client):
    from datetime import timedelta

    from django.utils import timezone

    from queue_app import rate_limits

    reset = timezone.now() + timedelta(minutes=30)
    rate_limits.key_pause(key="claude-replay", resets_at=reset.timestamp(), reason="claude <five_hour>")
    waiting = make_task(title="claude work", executor="claude-replay")
    assert waiting.work_orders.get().not_before is not None  # waits for the reset

    page = operator_client.get(reverse("overview")).content.decode()
    assert f"rate-limited until {timezone.localtime(reset):%H:%M}" in page
    assert "claude &lt;five_hour&gt;" in page
    status = operator_client.get("/api/v1/queue/").json()
    assert [(row["key"], row["reason"]) for row in status["rate_limited"]] == [("claude-replay", "claude <five_hour>")]


def test_overview_and_queue_api_show_each_limited_keys_seats(operator_client, worker, settings):
    settings.AGENTVINE_CONCURRENCY_LIMITS = {"repo:*": 1, "ticker": 2}
    make_task(title="a 1", executor="ticker", repository_url="https://git.example.com/<a>.git")
    make_task(title="a 2", executor="ticker", repository_url="https://git.example.com/<a>.git")
    lifecycle.work_order_claim(worker=worker)

    page = operator_client.get(reverse("overview")).content.decode()
    table = page.split('data-testid="concurrency-keys"')[1].split("</table>")[0]
    assert "repo:https://git.example.com/&lt;a&gt;.git</td><td>1 of 1 <span" in table
    assert "full: its work waits" in table.split("ticker")[0]
    assert "ticker</td><td>1 of 2</td>" in table
    keys = operator_client.get("/api/v1/queue/").json()["concurrency_keys"]
    assert keys == [
        {"key": "repo:https://git.example.com/<a>.git", "running": 1, "max_running": 1},
        {"key": "ticker", "running": 1, "max_running": 2},
    ]


def test_overview_shows_spend_per_day_operator_executor_and_repository(operator_client, operator, worker, settings):
    from tests.factories import run_that_spends

    settings.AGENTVINE_DAILY_BUDGET_USD = 20.0
    task = make_task(title="<b>costly</b>", repository_url="https://git.example.com/<team>/a.git", executor="noop")

    # Runs that reported no cost (the demo agent's) spend nothing.
    assert "No spend reported in the last 7 days." in operator_client.get(reverse("overview")).content.decode()
    Task.objects.filter(pk=task.pk).update(created_by=operator)
    run_that_spends(task, "1.25", worker=worker)

    page = operator_client.get(reverse("overview")).content.decode()
    assert "Today <strong>$1.25</strong> of a $20.00 daily budget" in page
    for group, key in (
        ("operator", operator.username),
        ("executor", "noop"),
        ("repository", "https://git.example.com/&lt;team&gt;/a.git"),
    ):
        table = page.split(f'data-testid="spend-{group}"')[1].split("</table>")[0]
        assert key in table and "$1.2500" in table, group
    assert 'data-testid="spend-paused"' not in page


def test_a_paused_task_shows_why_and_raising_its_budget_on_the_page_resumes_it(operator_client, operator, worker):
    from tests.factories import run_that_spends

    task = make_task(title="Port the parser", budget_usd="0.05")
    run_that_spends(task, "0.06", worker=worker)
    assert lifecycle.work_order_claim_start(worker=worker, work_order_id=None) is None  # paused at the claim

    page = operator_client.get(reverse("task-detail", kwargs={"task_id": task.id})).content.decode()
    assert "Paused: budget spent" in page
    assert "Paused: budget $0.05 spent ($0.0600)" in page
    assert "1 paused on a spent budget" in operator_client.get(reverse("overview")).content.decode()

    url = reverse("task-action", kwargs={"task_id": task.id, "action": "budget"})
    refused = operator_client.post(url, {"budget_usd": "-3"}, follow=True).content.decode()
    assert "Cannot budget: a budget is a dollar figure" in refused
    task.refresh_from_db()
    assert task.budget_usd == Decimal("0.05") and task.status == TaskStatus.PAUSED_BUDGET
    still = operator_client.post(url, {"budget_usd": "0.06"}, follow=True).content.decode()
    assert "it stays paused" in still
    resumed = operator_client.post(url, {"budget_usd": "1"}, follow=True).content.decode()
    assert "the task resumes in its session" in resumed
    task.refresh_from_db()
    assert task.status == TaskStatus.QUEUED and task.budget_usd == Decimal("1")


def test_the_new_task_form_takes_a_budget_or_leaves_the_types_default(operator_client, settings):
    settings.AGENTVINE_TASK_BUDGET_USD = "feature=4"
    form = {"title": "With a budget", "task_type": "feature", "priority": "normal", "budget_usd": "2.5"}
    operator_client.post(reverse("task-list"), form)
    operator_client.post(reverse("task-list"), {**form, "title": "Default", "budget_usd": ""})
    assert Task.objects.get(title="With a budget").budget_usd == Decimal("2.5")
    assert Task.objects.get(title="Default").budget_usd == Decimal("4")
