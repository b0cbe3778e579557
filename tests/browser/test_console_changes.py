"""The Changes page of a real run in a real Chromium: a real Celery worker
runs a command-profile agent whose files are HTML/script payloads, the slot
sends its commits to a real daphne, and the page served by that daphne shows
the payload as text. The daphne here runs with a Content-Security-Policy that
allows inline script and event handlers, so only escaping stands between the
payload and the page: if any of it ran, ``window.__pwned`` would be set."""

import re

import pytest
from playwright.sync_api import expect

from tasks_app.models import Task, TaskStatus
from tasks_app.services import task_create
from tests.browser.conftest import PASSWORD, sign_in
from tests.browser.test_console_layout import _axe_serious
from tests.chat_app.conftest import DaphneServer
from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PERMISSIVE_POLICY = "default-src * 'unsafe-inline' 'unsafe-eval' data:"


@pytest.fixture
def console_operator(django_user_model):
    return django_user_model.objects.create_user(username="olivia", password=PASSWORD, is_staff=True)


@pytest.fixture
def permissive_daphne(transactional_db, tmp_path):
    server = DaphneServer(
        tmp_path / "daphne.log",
        extra_env={
            "AGENTVINE_CONTENT_SECURITY_POLICY": PERMISSIVE_POLICY,
            "AGENTVINE_RESULTS_ROOT": str(tmp_path / "server-results"),
        },
    )
    yield server
    server.stop()


def test_the_changes_view_of_a_real_run_shows_html_payloads_as_text(
    page, permissive_daphne, celery_worker_factory, console_operator, tmp_path
):
    server = permissive_daphne
    celery_worker_factory(
        extra_env={"AGENTVINE_API_URL": server.url, "AGENTVINE_WORKSPACE_ROOT": str(tmp_path / "workspaces")}
    )
    task = task_create(title="Write the payload", executor="payload-writer", created_by=console_operator)
    wait_for(lambda: Task.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, timeout=60, message="the run")
    execution = task.executions.get()
    assert execution.has_changes and execution.head_commit

    sign_in(page, server.url, console_operator)
    page.goto(f"{server.url}/tasks/{task.pk}/")
    page.click("[data-testid=changes-link]")
    page.wait_for_url(re.compile(rf"/tasks/{task.pk}/changes/$"))

    expect(page.locator("[data-testid=change-summary]")).to_contain_text("4 files changed, +6 −0")
    expect(page.locator("[data-testid=change-branch]")).to_have_text(f"agentvine/{task.pk}")
    expect(page.locator("[data-testid=change-head]")).to_have_text(execution.head_commit[:12])
    payload = page.locator("[data-testid=file-diff][data-path='payload.html'] [data-testid=diff-table]")
    expect(payload).to_contain_text("+<script>window.__pwned=1</script>")
    expect(payload).to_contain_text('+<img src=x onerror="window.__pwned=2">')
    notes = page.locator("[data-testid=file-diff][data-path='notes.txt'] [data-testid=diff-table]")
    expect(notes).to_contain_text('+<script>window.__pwned=4</script><img src=x onerror="window.__pwned=5">')
    files = page.locator("[data-testid=file-list]")
    expect(files).to_contain_text("<svg onload=window.__pwned=3>.txt")
    # Highlighted (Pygments' token classes), yet nothing of the payload is markup.
    assert page.locator("[data-testid=file-diff][data-path='tool.py'] .code span.k").count() >= 1
    elements = page.evaluate(
        "Array.from(document.querySelectorAll('main script, main img, main svg')).map(e => e.outerHTML)"
    )
    assert elements == []
    page.wait_for_timeout(300)  # an onerror would have fired by now
    assert page.evaluate("window.__pwned") is None

    # The patch download is the diff as text/x-diff, never a page.
    href = page.locator("[data-testid=patch-download]").get_attribute("href")
    patch = page.request.get(f"{server.url}{href}")
    assert patch.status == 200 and patch.headers["content-type"].startswith("text/x-diff")
    assert "+<script>window.__pwned=1</script>" in patch.text()

    # On a 390 px phone the page does not scroll sideways (the diff scrolls
    # in its own box), and axe-core finds nothing serious.
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert _axe_serious(page) == []
