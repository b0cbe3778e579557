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
