"""Every console page in a real Chromium against a real daphne: it fits a
390 px phone without sideways scrolling, axe-core (vendored from npm in
tests/browser/vendor/) finds no serious or critical violation, and dark mode
follows the operating system's preference."""

import base64
from pathlib import Path

import pytest
from playwright.sync_api import expect

from chat_app.services import question_ask
from queue_app import lifecycle
from queue_app.outputs import execution_output_append
from tasks_app.services import task_create
from tests.browser.conftest import PASSWORD, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text()
# A megabyte of description: one unbroken token and a very long line of words.
HUGE_DESCRIPTION = "x" * 400_000 + " " + "word " * 120_000


@pytest.fixture
def admin_operator(django_user_model):
    return django_user_model.objects.create_user(username="rhea", password=PASSWORD, is_staff=True, is_superuser=True)


@pytest.fixture
def busy_console(worker, admin_operator):
    task = task_create(title="A task with a very long title " * 4, description=HUGE_DESCRIPTION)
    order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    order, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    execution_output_append(execution=execution, seq=0, text="y" * 3000 + "\nworking\n", tail="working\n")
    question_ask(work_order=order, execution=execution, text="Which database should I use?")
    task_create(title="Waiting in line", priority="low")
    return task


def _axe_serious(page):
    page.evaluate(AXE)
    result = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => v.id + ': ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', '))"
    )
    return result


def test_every_page_fits_390_px_and_has_no_serious_accessibility_violation(
    browser, daphne_server, admin_operator, busy_console
):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        sign_in(page, daphne_server.url, admin_operator)
        report = {}
        for path in ("/", "/tasks/", f"/tasks/{busy_console.id}/", "/workers/", "/sessions/", "/messages/"):
            assert page.goto(daphne_server.url + path).status == 200, path
            widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            problems = []
            if widths[0] > widths[1]:
                problems.append(f"scrollWidth {widths[0]} > innerWidth {widths[1]}")
            problems += _axe_serious(page)
            problems += page.evaluate(
                "(() => { const seen = {};"
                " document.querySelectorAll('[id]').forEach(e => seen[e.id] = (seen[e.id] || 0) + 1);"
                " return Object.keys(seen).filter(id => seen[id] > 1).map(id => 'duplicate id ' + id); })()"
            )
            if problems:
                report[path] = problems
        assert report == {}, "\n".join(f"{k}: {v}" for k, v in report.items())
        # The 📬 badge says what it counts in words, glyph or no glyph.
        expect(page.locator("[data-testid=inbox]")).to_contain_text("Questions (1)")
        # A task id that is not one is an error, not "No messages match".
        page.goto(f"{daphne_server.url}/messages/?task=not-a-task")
        expect(page.locator("[data-testid=filter-error]")).to_contain_text("not-a-task")
        expect(page.get_by_label("Text contains")).to_be_visible()
        page.goto(f"{daphne_server.url}/")
        page.click("text=New task")
        expect(page.locator("#id_title")).to_be_focused()
    finally:
        context.close()


def _mean_luminance(browser, png):
    """Mean luminance (0-255) of a screenshot, measured by Chromium's canvas."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_content(f'<img id="shot" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
        return page.evaluate(
            """async () => { const img = document.getElementById('shot'); await img.decode();
               const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
               const g = c.getContext('2d'); g.drawImage(img, 0, 0);
               const d = g.getImageData(0, 0, c.width, c.height).data; let sum = 0;
               for (let i = 0; i < d.length; i += 4) sum += 0.2126 * d[i] + 0.7152 * d[i + 1] + 0.0722 * d[i + 2];
               return sum / (d.length / 4); }"""
        )
    finally:
        context.close()


def test_dark_mode_follows_the_color_scheme_preference(browser, daphne_server, admin_operator, busy_console, tmp_path):
    shots = {}
    for scheme in ("light", "dark"):
        context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme=scheme)
        page = context.new_page()
        try:
            sign_in(page, daphne_server.url, admin_operator)
            page.goto(f"{daphne_server.url}/tasks/")
            shots[scheme] = page.screenshot(path=tmp_path / f"tasks-{scheme}.png")
            if scheme == "dark":
                assert _axe_serious(page) == []
        finally:
            context.close()
    light, dark = _mean_luminance(browser, shots["light"]), _mean_luminance(browser, shots["dark"])
    assert light > 180, light
    assert dark < 80, dark
