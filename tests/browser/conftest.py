"""A real headless Chromium (Debian's package) driving pages served by a real
daphne, with a real Celery worker behind them."""

import os
import shutil

import pytest

CHROMIUM = os.environ.get("AGENTVINE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "operator-pass-123"


@pytest.fixture(scope="module")
def browser(django_db_setup):
    # Module scope: Playwright's loop must be gone before tests that run
    # their own asyncio loops.
    if not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium is needed for the browser tests: apt-get install chromium (looked for {CHROMIUM})")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; the
    # tests' own ORM calls are plain synchronous code between page actions.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def sign_in(page, base_url, user):
    page.goto(f"{base_url}/")
    assert "/accounts/login/" in page.url, "pages must send anonymous users to the login form"
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")


@pytest.fixture
def daphne_server(transactional_db, tmp_path):
    from tests.chat_app.conftest import DaphneServer

    server = DaphneServer(tmp_path / "daphne.log")
    yield server
    server.stop()
