"""Operator console v2 in a real Chromium against a real daphne: live regions
re-render without taking away what the operator is doing, and the task page
shows every attempt of every work order."""

import re

import pytest
from playwright.sync_api import expect

from chat_app.services import question_ask, system_notice
from queue_app import lifecycle
from tasks_app.services import task_create
from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _running(task, worker):
    order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    order, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    return order, execution


def test_a_half_typed_answer_survives_twenty_live_updates(page, daphne_server, operator, worker):
    task = task_create(title="Needs an answer")
    order, execution = _running(task, worker)
    question_ask(work_order=order, execution=execution, text="Which database should I use?")

    sign_in(page, daphne_server.url, operator)
    page.goto(f"{daphne_server.url}/tasks/{task.id}/")
    expect(page.locator("#live-state.on")).to_have_count(1)
    page.evaluate("window.__stillHere = true")
    answer = page.locator("[data-testid=answer-form] textarea")
    answer.click()
    page.keyboard.type("PostgreSQL, becau")
    # The caret sits in the middle of the text, where the operator put it.
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    textarea_id = answer.get_attribute("id")

    for n in range(20):
        system_notice(task=task, text=f"notice {n}")

    # The conversation region really re-rendered around the textarea.
    expect(page.locator("[data-testid=chat]")).to_contain_text("notice 19")
    page.wait_for_timeout(700)  # let a trailing debounced refresh land too
    state = page.evaluate(
        """() => { const a = document.activeElement;
           return {id: a && a.id, value: a && a.value, start: a && a.selectionStart, end: a && a.selectionEnd,
                   stillHere: window.__stillHere === true}; }"""
    )
    assert state == {"id": textarea_id, "value": "PostgreSQL, becau", "start": 14, "end": 14, "stillHere": True}
    # Typing goes on where it stopped.
    page.keyboard.type("X")
    assert answer.input_value() == "PostgreSQL, beXcau"
    assert re.search("Which database", page.locator("#conversation").inner_text())


def test_attempts_browser_numbers_every_attempt_of_the_task_and_keeps_every_output(
    page, daphne_server, operator, worker
):
    """A run preempted and resumed, then a message turn: three attempts over two
    work orders, numbered 1-2-3 for the task, each with its own output."""
    from chat_app.services import agent_next_turn, operator_message_send
    from queue_app.models import WorkOrderKind
    from queue_app.outputs import execution_output_append
    from workers_app.runner import ERR_PREEMPTED

    task = task_create(title="Preempted then asked again")
    order, first = _running(task, worker)
    execution_output_append(execution=first, seq=0, text="the answer is 42\n", tail="the answer is 42\n")
    lifecycle.work_order_requeue(work_order=order, reason=ERR_PREEMPTED, preempted=True)
    order = lifecycle.work_order_claim(worker=worker, work_order_id=order.id)
    order, second = lifecycle.work_order_start(work_order=order, worker=worker)
    execution_output_append(execution=second, seq=0, text="resumed and done\n", tail="resumed and done\n")
    lifecycle.work_order_complete(work_order=order, worker=worker, execution=second)
    operator_message_send(user=operator, conversation_id=str(task.id), text="One more thing")
    turn = agent_next_turn(task=task) or task.work_orders.get(kind=WorkOrderKind.DELIVER_MESSAGE)
    turn = lifecycle.work_order_claim(worker=worker, work_order_id=turn.id)
    turn, third = lifecycle.work_order_start(work_order=turn, worker=worker)
    execution_output_append(execution=third, seq=0, text="turn reply\n", tail="turn reply\n")

    sign_in(page, daphne_server.url, operator)
    page.goto(f"{daphne_server.url}/tasks/{task.id}/")
    # The task is completed, but its agent is busy again: the header says so.
    expect(page.locator("[data-testid=task-activity]")).to_have_text("agent working on a message turn")
    rows = page.locator("[data-testid=attempt]")
    expect(rows).to_have_count(3)
    numbers = [rows.nth(i).locator("[data-testid=attempt-number]").inner_text() for i in range(3)]
    labels = [rows.nth(i).locator("[data-testid=attempt-kind]").inner_text() for i in range(3)]
    assert numbers == ["#1", "#2", "#3"]
    assert labels == ["run", "resumed after preemption", "message turn"]
    for row in range(3):
        assert rows.nth(row).locator("[data-testid=attempt-worker]").inner_text() == worker.name
    # Every attempt's output is one click away; the latest is shown first.
    output = page.locator("[data-testid=output]")
    expect(output).to_have_text("turn reply\n")
    for number, text in ((1, "the answer is 42\n"), (2, "resumed and done\n"), (3, "turn reply\n")):
        page.click(f"[data-testid=attempt] >> nth={number - 1} >> [data-testid=attempt-output]")
        expect(output).to_have_text(text)
        expect(page.locator("[data-testid=output-heading]")).to_contain_text(f"attempt {number}")
    # An error opened for reading stays open while the attempts re-render live.
    error = page.locator("[data-testid=attempt] >> nth=0 >> [data-testid=attempt-error]")
    error.locator("summary").click()
    expect(error).to_have_attribute("open", "")
    lifecycle.work_order_complete(work_order=turn, worker=worker, execution=third)
    expect(rows.nth(2)).to_contain_text("completed")
    expect(page.locator("[data-testid=task-activity]")).to_have_count(0)
    expect(error).to_have_attribute("open", "")
    # An attempt the task does not have is a clear 404, not someone else's output.
    response = page.goto(f"{daphne_server.url}/tasks/{task.id}/?attempt=4")
    assert response.status == 404


def test_overview_shows_each_running_agents_latest_line_and_elapsed_time_live(
    browser, daphne_server, operator, worker, other_worker
):
    from datetime import timedelta

    from django.utils import timezone

    from queue_app.models import Execution
    from queue_app.outputs import execution_output_append

    task = task_create(title="Busy agent")
    _, execution = _running(task, worker)
    silent = task_create(title="Silent agent")
    _, silent_run = _running(silent, other_worker)
    # Started 13 minutes ago and has printed nothing since (the default warning is 10 min).
    Execution.objects.filter(pk=silent_run.pk).update(started_at=timezone.now() - timedelta(minutes=13, seconds=5))
    # The operator's browser is in New York: absolute times are shown there.
    context = browser.new_context(viewport={"width": 1366, "height": 900}, timezone_id="America/New_York")
    page = context.new_page()
    try:
        sign_in(page, daphne_server.url, operator)
        expect(page.locator("#live-state.on")).to_have_count(1)
        busy_row = page.locator("[data-live=running] tr", has_text="Busy agent")
        silent_row = page.locator("[data-live=running] tr", has_text="Silent agent")
        expect(silent_row.locator("[data-testid=quiet]")).to_have_text("quiet for 13 min")
        expect(silent_row.locator("[data-testid=elapsed]")).to_contain_text("13m")
        elapsed = busy_row.locator("[data-testid=elapsed]")
        first = elapsed.inner_text()
        assert re.fullmatch(r"\d+s", first), first
        expect(elapsed).not_to_have_text(first, timeout=3000)  # it ticks
        expect(busy_row.locator("[data-testid=quiet]")).to_have_count(0)
        latest = busy_row.locator("[data-testid=latest-output]")
        execution_output_append(execution=execution, seq=0, text="cloning\nrunning the tests\n\n", tail="")
        expect(latest).to_have_text("running the tests")
        execution_output_append(execution=execution, seq=1, text="42 passed\n", tail="")
        expect(latest).to_have_text("42 passed")
        moment = page.locator("[data-live=recent] time").first
        assert re.search(r"E[SD]T", moment.get_attribute("title")), moment.get_attribute("title")
        assert re.search(r"ago|now", moment.inner_text())
        # The silent agent's task page says so too; its first words clear the flag live.
        page.goto(f"{daphne_server.url}/tasks/{silent.id}/")
        quiet = page.locator("[data-testid=quiet]")
        expect(quiet).to_have_text("attempt 1: quiet for 13 min")
        expect(page.locator("#live-state.on")).to_have_count(1)
        execution_output_append(execution=silent_run, seq=0, text="still here\n", tail="still here\n")
        expect(quiet).to_have_count(0)
    finally:
        context.close()
