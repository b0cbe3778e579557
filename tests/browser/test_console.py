"""The operator console in a real Chromium, against a real daphne and a real
Celery worker: pages update live over the WebSocket, without reloading."""

import json
import re
import time

import pytest
from playwright.sync_api import expect

from tasks_app.models import Task, TaskStatus
from tasks_app.services import task_create
from tests.browser.conftest import PASSWORD, sign_in
from tests.chat_app.conftest import frame_events
from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def console_operator(django_user_model):
    return django_user_model.objects.create_user(username="olivia", password=PASSWORD, is_staff=True)


@pytest.fixture
def platform(daphne_server, celery_worker_factory):
    # The demo agent's ask command reaches the API through the real web server.
    celery_worker_factory(concurrency=1, extra_env={"AGENTVINE_API_URL": daphne_server.url})
    return daphne_server


def _mark_page(page):
    """Anything that survives until the end proves the page never reloaded."""
    page.evaluate("window.__agentvineNoReload = 'still here'")


def _not_reloaded(page):
    return page.evaluate("window.__agentvineNoReload") == "still here"


def _pump_until(page, predicate, message, timeout=10):
    """Wait while Playwright delivers the page's events (a plain sleep would not)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        page.wait_for_timeout(50)


def test_create_a_task_and_watch_it_complete_live(page, platform, console_operator):
    sign_in(page, platform.url, console_operator)
    page.click("nav >> text=Tasks")
    page.fill("#id_title", "Browser-made task")
    page.fill("#id_description", "Created by an operator in the form")
    page.select_option("#id_priority", "high")
    page.click("text=Queue task")

    task = Task.objects.get(title="Browser-made task")
    page.wait_for_url(re.compile(rf"/tasks/{task.id}/$"))
    assert task.created_by == console_operator
    _mark_page(page)
    status = page.locator("[data-testid=task-status]")
    expect(status).to_contain_text(re.compile("Queued|In progress"))

    expect(status).to_contain_text("Completed", timeout=45_000)
    expect(page.locator("[data-testid=output]")).to_contain_text("wrote AGENTVINE_RESULT.md; done")
    assert _not_reloaded(page)
    assert Task.objects.get(pk=task.pk).status == TaskStatus.COMPLETED


def test_form_errors_are_shown_and_nothing_is_created(page, platform, console_operator):
    sign_in(page, platform.url, console_operator)
    page.goto(f"{platform.url}/tasks/")
    page.fill("#id_branch_name", "feature/x")
    page.click("text=Queue task")
    expect(page.locator("[data-testid=error-title]")).to_have_text("Give the task a title.")
    expect(page.locator("[data-testid=error-repository_url]")).to_have_text("A branch needs a repository.")
    assert Task.objects.count() == 0


def test_agent_asks_operator_answers_in_the_page(page, platform, console_operator):
    sign_in(page, platform.url, console_operator)
    _mark_page(page)
    inbox = page.locator("[data-testid=inbox]")
    expect(inbox).to_have_count(0)

    task = task_create(title="Needs a decision", description="ASK: Which database should I use?")

    # The question arrives live on the overview: badge in the navigation and the list.
    try:
        expect(inbox).to_have_text("📬 Questions (1)", timeout=45_000)
    except AssertionError:
        from tasks_app.selectors import execution_output

        order = task.work_orders.get()
        raise AssertionError(
            f"no question; work order {order.status}: {order.last_error}\n"
            + "\n".join(execution_output(execution=e) for e in order.executions.all())
        ) from None
    expect(page.locator("#questions")).to_contain_text("Which database should I use?")
    assert _not_reloaded(page)

    page.click("#questions >> text=Needs a decision")
    page.fill("[data-testid=answer-form] textarea", "PostgreSQL, please")
    page.click("[data-testid=answer-form] >> text=Send answer")

    expect(page.locator("[data-testid=task-status]")).to_contain_text("Completed", timeout=45_000)
    expect(page.locator("[data-testid=output]")).to_contain_text("PostgreSQL, please")
    expect(page.locator("[data-testid=chat]")).to_contain_text("PostgreSQL, please")
    expect(inbox).to_have_count(0)
    wait_for(lambda: Task.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, message="task completed")


def test_output_committed_together_arrives_in_one_batch_frame_and_is_appended_in_order(
    page, daphne_server, console_operator, worker
):
    from django.db import transaction

    from queue_app import lifecycle
    from queue_app.outputs import execution_output_append

    task = task_create(title="Chatty agent")
    order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    _, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    execution_output_append(execution=execution, seq=0, text="line 0\n", tail="line 0\n")

    frames = []
    page.on("websocket", lambda socket: socket.on("framereceived", lambda frame: frames.append(frame)))
    refreshes = []
    page.on("request", lambda request: refreshes.append(request.url) if "x-live-refresh" in request.headers else None)
    sign_in(page, daphne_server.url, console_operator)
    page.goto(f"{daphne_server.url}/tasks/{task.id}/")
    output = page.locator("[data-testid=output]")
    expect(output).to_have_text("line 0\n")
    expect(page.locator("#live-state.on")).to_have_count(1)
    _mark_page(page)

    lines = [f"line {seq}\n" for seq in range(6)]
    with transaction.atomic():
        for seq in range(1, 6):
            execution_output_append(execution=execution, seq=seq, text=lines[seq], tail="")

    expect(output).to_have_text("".join(lines))
    # The heading's count follows the appended output too.
    expect(page.locator("[data-testid=output-heading]")).to_contain_text(f"{len(''.join(lines))} chars")
    received = [json.loads(frame) for frame in frames]
    assert any(frame["type"] == "batch" for frame in received), received
    seqs = [e["payload"]["seq"] for frame in received for e in frame_events(frame) if e["type"] == "execution.output"]
    assert seqs == [1, 2, 3, 4, 5]
    # Appended from the frames themselves: the page neither re-fetched nor reloaded.
    assert refreshes == []
    assert _not_reloaded(page)


def test_a_page_snapshot_older_than_the_output_heard_does_not_hide_it(page, daphne_server, console_operator, worker):
    """A refresh that left before the first output and returns after it must not blank the pane."""
    from queue_app import lifecycle
    from queue_app.outputs import execution_output_append

    task = task_create(title="Slow page")
    held = []

    def hold_first_refresh(route):
        if "x-live-refresh" in route.request.headers and not held:
            # Rendered now, before there is any output; handed back later.
            held.append((route, route.fetch()))
        else:
            route.continue_()

    frames = []
    page.on("websocket", lambda socket: socket.on("framereceived", lambda frame: frames.append(frame)))
    sign_in(page, daphne_server.url, console_operator)
    page.route(re.compile(rf"/tasks/{task.id}/$"), hold_first_refresh)
    page.goto(f"{daphne_server.url}/tasks/{task.id}/")
    expect(page.locator("#live-state.on")).to_have_count(1)
    _mark_page(page)

    order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    _, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    _pump_until(page, lambda: held, "the page's refresh")
    execution_output_append(execution=execution, seq=0, text="first words\n", tail="first words\n")
    _pump_until(page, lambda: any("first words" in frame for frame in frames), "the output event")
    route, stale = held[0]
    route.fulfill(response=stale)

    expect(page.locator("[data-testid=output]")).to_have_text("first words\n", timeout=10_000)
    assert _not_reloaded(page)
