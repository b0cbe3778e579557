"""Attention in a real Chromium against a real daphne: the 📬 count reaches
every page from one source, and a browser shows one notification per new
question however many console tabs are open."""

import pytest
from playwright.sync_api import expect

from chat_app.services import question_ask
from queue_app import lifecycle
from tasks_app.services import task_create
from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Counts the notifications a page shows, and the permission requests it makes,
# around the browser's own Notification.
WATCH_NOTIFICATIONS = """
(() => {
  const Real = window.Notification;
  window.__shown = [];
  window.__asked = 0;
  function Watched(title, options) { window.__shown.push(title + ' | ' + ((options && options.body) || ''));
    return new Real(title, options); }
  Watched.prototype = Real.prototype;
  Object.defineProperty(Watched, 'permission', { get: () => Real.permission });
  Watched.requestPermission = function () {
    window.__asked += 1; return Real.requestPermission.apply(Real, arguments);
  };
  window.Notification = Watched;
})();
"""


def test_one_notification_with_two_tabs_open_and_the_count_on_every_page(browser, daphne_server, operator, worker):
    quiet_task = task_create(title="Nothing to ask")
    asking = task_create(title="Has a question")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.grant_permissions(["notifications"], origin=daphne_server.url)
    context.add_init_script(WATCH_NOTIFICATIONS)
    try:
        first = context.new_page()
        sign_in(first, daphne_server.url, operator)
        first.goto(f"{daphne_server.url}/tasks/{quiet_task.id}/")
        second = context.new_page()
        second.goto(f"{daphne_server.url}/workers/")
        for tab in (first, second):
            expect(tab.locator("#live-state.on")).to_have_count(1)
            # Permission is granted: no "Enable notifications" control to offer.
            expect(tab.locator("[data-testid=enable-notifications]")).to_be_hidden()

        order = lifecycle.work_order_claim(worker=worker, work_order_id=asking.work_orders.get().id)
        order, execution = lifecycle.work_order_start(work_order=order, worker=worker)
        question_ask(work_order=order, execution=execution, text="Which database should I use?")

        # Another task's question reaches a task page and the workers page alike.
        for tab in (first, second):
            expect(tab.locator("[data-testid=inbox]")).to_have_text("📬 Questions (1)")
        first.wait_for_timeout(1000)
        shown = first.evaluate("window.__shown") + second.evaluate("window.__shown")
        assert len(shown) == 1, shown
        assert "Has a question" in shown[0]
        assert first.evaluate("window.__asked") + second.evaluate("window.__asked") == 0
    finally:
        context.close()


def test_permission_is_asked_only_from_the_enable_notifications_control(browser, daphne_server, operator):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(WATCH_NOTIFICATIONS)
    try:
        page = context.new_page()
        sign_in(page, daphne_server.url, operator)
        if page.evaluate("Notification.permission") != "default":
            pytest.skip("this Chromium decides notification permission without asking")
        page.click("h1")
        page.click("nav >> text=Tasks")
        assert page.evaluate("window.__asked") == 0
        enable = page.locator("[data-testid=enable-notifications]")
        expect(enable).to_be_visible()
        enable.click()
        page.wait_for_function("window.__asked === 1")
    finally:
        context.close()
