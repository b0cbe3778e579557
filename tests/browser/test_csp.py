"""The console in a real Chromium under its Content-Security-Policy: every
page, the live WebSocket and the admin work with zero console errors."""

import pytest

from tasks_app.services import task_create
from tests.browser.conftest import PASSWORD, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_console_pages_run_under_the_csp_without_a_console_error(page, daphne_server, django_user_model):
    operator = django_user_model.objects.create_user(
        username="casey", password=PASSWORD, is_staff=True, is_superuser=True
    )
    task = task_create(title="Under the policy", created_by=operator)
    errors = []
    page.on(
        "console",
        lambda message: errors.append(f"{message.text} {message.location}") if message.type == "error" else None,
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("response", lambda response: errors.append(response.url) if response.status >= 400 else None)

    sign_in(page, daphne_server.url, operator)
    for path in ("/", "/tasks/", f"/tasks/{task.id}/", "/workers/", "/sessions/", "/messages/", "/admin/"):
        response = page.goto(daphne_server.url + path)
        assert response.status == 200, path
        assert response.headers["content-security-policy"].startswith("default-src 'self'")
        page.wait_for_load_state("networkidle")
    # The task page's live socket connected under connect-src 'self'.
    page.goto(f"{daphne_server.url}/tasks/{task.id}/")
    page.wait_for_timeout(500)

    assert errors == []
