"""Budgets and spend over the API: a task's budget set and raised, bad
figures refused with nothing changed, and spend per day, operator, executor
and repository (GET spend/)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from queue_app import lifecycle
from queue_app.models import Execution, ExecutionStatus
from tasks_app.services import task_create
from tests.api.conftest import token_client
from tests.factories import run_that_spends
from workers_app.services import worker_register

pytestmark = [pytest.mark.django_db, pytest.mark.sqlite]


def test_budgets_over_the_api(operator_client, operator):
    created = operator_client.post("/api/v1/tasks/", {"title": "Budgeted", "budget_usd": "0.05"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["budget_usd"] == "0.0500"
    task_id = created.json()["id"]
    for bad in ("-1", "lots", "1e20"):
        refused = operator_client.patch(f"/api/v1/tasks/{task_id}/", {"budget_usd": bad}, format="json")
        assert refused.status_code == 400, (bad, refused.content)
        assert "budget_usd" in refused.content.decode()
    assert operator_client.get(f"/api/v1/tasks/{task_id}/").json()["budget_usd"] == "0.0500"
    raised = operator_client.patch(f"/api/v1/tasks/{task_id}/", {"budget_usd": "2.5"}, format="json")
    assert raised.status_code == 200 and raised.json()["budget_usd"] == "2.5000"
    removed = operator_client.patch(f"/api/v1/tasks/{task_id}/", {"budget_usd": None}, format="json")
    assert removed.status_code == 200 and removed.json()["budget_usd"] is None


def test_spend_per_day_operator_executor_and_repository(operator_client, operator, django_user_model, settings):
    settings.AGENTVINE_DAILY_BUDGET_USD = 100.0
    slot = worker_register(name="slot-a", hostname="test")
    colleague = django_user_model.objects.create_user(username="colleague")
    mine = task_create(title="Mine", created_by=operator, repository_url="https://git.example.com/a.git")
    run_that_spends(mine, "0.30", worker=slot)
    theirs = task_create(title="Theirs", created_by=colleague, executor="noop")
    lifecycle.work_order_cancel(work_order=mine.work_orders.get())
    # A run of three days ago counts on its day, and not in today's total.
    run_that_spends(theirs, "0.12", worker=slot, started_at=timezone.now() - timedelta(days=3))

    by_operator = operator_client.get("/api/v1/spend/?group=operator").json()
    assert [(row["key"], row["cost_usd"]) for row in by_operator["rows"]] == [
        (operator.username, "0.300000"),
        ("colleague", "0.120000"),
    ]
    assert by_operator["total_usd"] == "0.420000"
    assert by_operator["budgets"]["daily_usd"] == 100.0
    assert by_operator["budgets"]["spent_today_usd"] == "0.300000"
    by_day = operator_client.get("/api/v1/spend/?group=day").json()["rows"]
    assert [row["cost_usd"] for row in by_day] == ["0.300000", "0.120000"]
    assert by_day[0]["key"] > by_day[1]["key"]
    by_executor = {
        row["key"]: row["cost_usd"] for row in operator_client.get("/api/v1/spend/?group=executor").json()["rows"]
    }
    assert by_executor == {settings.AGENTVINE_DEFAULT_EXECUTOR: "0.300000", "noop": "0.120000"}
    by_repository = operator_client.get("/api/v1/spend/?group=repository").json()["rows"]
    assert by_repository[0]["key"] == "https://git.example.com/a.git" and by_repository[0]["runs"] == 1
    # Only the last day: the old run is out.
    assert operator_client.get("/api/v1/spend/?group=operator&days=1").json()["total_usd"] == "0.300000"

    assert operator_client.get("/api/v1/spend/?group=planet").status_code == 400
    assert operator_client.get("/api/v1/spend/?days=0").status_code == 400
    assert token_client("not-a-key").get("/api/v1/spend/").status_code in (401, 403)
    assert Execution.objects.filter(status=ExecutionStatus.INTERRUPTED).count() == 2
