"""Steering the queue from the console in a real Chromium against a real
daphne: queue order and positions, bulk actions through the services with a
reason per task, and confirmation before anything destructive."""

import pytest
from playwright.sync_api import expect

from queue_app import lifecycle
from tasks_app.models import Task, TaskStatus
from tasks_app.services import task_create
from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_bulk_cancel_of_twenty_queued_tasks_in_queue_order_after_a_confirmation(page, daphne_server, operator, worker):
    queued = [task_create(title=f"Backlog {n:02d}", priority="low" if n % 2 else "normal") for n in range(20)]
    urgent = task_create(title="Urgent one", priority="high")
    done = task_create(title="Already done")
    order = lifecycle.work_order_claim(worker=worker, work_order_id=done.work_orders.get().id)
    order, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    lifecycle.work_order_complete(work_order=order, worker=worker, execution=execution)

    sign_in(page, daphne_server.url, operator)
    page.goto(f"{daphne_server.url}/tasks/?sort=queue")
    rows = page.locator("[data-testid=task-table] tr[data-task]")
    # Queue order: priority first, then age; the position of each queued task.
    expect(rows.first).to_contain_text("Urgent one")
    expect(rows.first.locator("[data-testid=position]")).to_have_text("1")
    expect(rows.nth(1)).to_contain_text("Backlog 00")
    expect(rows.nth(1).locator("[data-testid=position]")).to_have_text("2")
    expect(rows.nth(11)).to_contain_text("Backlog 01")  # the first low one, behind ten normal
    # The queue holds only what waits.
    expect(page.locator(f"tr[data-task='{done.id}']")).to_have_count(0)

    page.goto(f"{daphne_server.url}/tasks/")
    expect(page.locator(f"tr[data-task='{done.id}'] [data-testid=position]")).to_have_count(0)
    expect(page.locator(f"tr[data-task='{queued[0].id}'] [data-testid=position]")).to_have_text("2")
    # Only what is legal is offered: a completed task has no Cancel.
    expect(page.locator(f"tr[data-task='{done.id}'] >> text=Cancel")).to_have_count(0)

    for task in [*queued, done]:
        page.check(f"tr[data-task='{task.id}'] input[type=checkbox]")
    page.click("[data-testid=bulk-cancel]")
    dialog = page.locator("dialog[open]")
    expect(dialog).to_contain_text("Cancel 21 selected tasks?")
    dialog.locator("text=Keep them").click()
    expect(page.locator("dialog[open]")).to_have_count(0)
    assert Task.objects.filter(status=TaskStatus.CANCELLED).count() == 0

    page.click("[data-testid=bulk-cancel]")
    page.locator("dialog[open] >> text=Yes, cancel").click()
    flash = page.locator(".flash")
    expect(flash).to_contain_text("Cancelled 20 tasks.")
    # The one that could not be cancelled says why, by name.
    expect(flash).to_contain_text("Already done")
    assert Task.objects.filter(status=TaskStatus.CANCELLED).count() == 20
    assert Task.objects.get(pk=urgent.pk).status == TaskStatus.QUEUED
    assert Task.objects.get(pk=done.pk).status == TaskStatus.COMPLETED


def test_destructive_actions_ask_first_and_finished_tasks_offer_no_priority_change(page, daphne_server, operator):
    task = task_create(title="Maybe cancel me")
    sign_in(page, daphne_server.url, operator)
    page.goto(f"{daphne_server.url}/tasks/{task.id}/")
    page.click("[data-testid=task-actions] >> text=Cancel")
    dialog = page.locator("dialog[open]")
    expect(dialog).to_contain_text("Cancel this task?")
    page.keyboard.press("Escape")
    expect(page.locator("dialog[open]")).to_have_count(0)
    page.wait_for_timeout(300)
    assert Task.objects.get(pk=task.pk).status == TaskStatus.QUEUED

    page.click("[data-testid=task-actions] >> text=Cancel")
    page.locator("dialog[open] >> text=Yes, cancel").click()
    expect(page.locator("[data-testid=task-status]")).to_contain_text("Cancelled")
    assert Task.objects.get(pk=task.pk).status == TaskStatus.CANCELLED
    actions = page.locator("[data-testid=task-actions]")
    expect(actions).to_contain_text("Retry")
    expect(actions.locator("text=Raise priority")).to_have_count(0)
    expect(actions.locator("text=Lower priority")).to_have_count(0)
