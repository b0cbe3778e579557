"""Budgets in the console, in a real Chromium against a real daphne: a task
paused on its spent budget shows it live and why, raising its budget on the
task page resumes it, and the Overview shows the spend."""

import pytest
from playwright.sync_api import expect

from queue_app import lifecycle
from tasks_app.models import Task, TaskStatus
from tasks_app.services import task_create
from tests.browser.conftest import sign_in
from tests.factories import run_that_spends

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_task_paused_on_its_budget_shows_it_live_and_raising_the_budget_resumes_it(
    page, daphne_server, operator, worker
):
    task = task_create(title="Port the parser", created_by=operator, budget_usd="0.05")
    run_that_spends(task, "0.06", worker=worker)

    sign_in(page, daphne_server.url, operator)
    page.goto(f"{daphne_server.url}/tasks/{task.id}/")
    status = page.locator("[data-testid=task-status]")
    expect(status).to_contain_text("Queued")
    expect(page.locator("[data-testid=budget]")).to_contain_text("Budget $0.05: $0.0600 spent")

    # The next claim finds the budget spent: the page follows without a reload.
    assert lifecycle.work_order_claim_start(worker=worker, work_order_id=None) is None
    expect(status).to_contain_text("Paused: budget spent")
    expect(page.locator("[data-testid=paused-reason]")).to_contain_text("budget $0.05 spent ($0.0600)")

    page.fill("#budget-usd", "0.50")
    page.click("[data-testid=budget-form] >> text=Set budget")
    expect(page.locator(".flash")).to_contain_text("Budget set: the task resumes in its session.")
    expect(status).to_contain_text("Queued")
    assert Task.objects.get(pk=task.pk).status == TaskStatus.QUEUED

    page.goto(f"{daphne_server.url}/")
    expect(page.locator("[data-testid=spend-today]")).to_contain_text("Today $0.06")
    expect(page.locator("[data-testid=spend-operator]")).to_contain_text(operator.username)
