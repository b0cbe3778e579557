"""Regenerates the README's console screenshots (docs/*.png).

Seeds a scratch database through the services (tasks in every state, a run
preempted and resumed, a message turn, a question waiting), serves it with a
real daphne and photographs each page in Debian's Chromium. Install an emoji
font first (Debian: fonts-noto-color-emoji) or the 📬 badge draws as a box.

    SCREENSHOT_DATABASE_URL=postgres://postgres@127.0.0.1:5432/agentvine_screenshots \\
        python scripts/console_screenshots.py
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DOCS = ROOT / "docs"
PASSWORD = "screenshot-pass-123"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed():
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from chat_app.services import agent_next_turn, operator_message_send, question_ask
    from queue_app import lifecycle
    from queue_app.models import Execution, WorkOrderKind
    from queue_app.outputs import execution_output_append
    from tasks_app.services import task_create
    from workers_app.services import worker_register

    user = get_user_model().objects.create_user(username="olivia", password=PASSWORD, is_staff=True, is_superuser=True)
    slots = [worker_register(name=f"celery@build-{n}:{n}", hostname=f"build-{n}") for n in range(1, 4)]

    def start(task, slot):
        order = lifecycle.work_order_claim(worker=slot, work_order_id=task.work_orders.get().id)
        return lifecycle.work_order_start(work_order=order, worker=slot)

    def say(execution, seq, text):
        execution_output_append(execution=execution, seq=seq, text=text, tail=text)

    # A run preempted, resumed and finished, then a message turn that is running.
    flaky = task_create(
        title="Add retry with backoff to the webhook sender",
        description="Webhooks to slow receivers time out; retry them with exponential backoff.",
        repository_url="https://git.example.com/shop/api.git",
        branch_name="feature/webhook-retry",
        created_by=user,
    )
    order, first = start(flaky, slots[0])
    say(first, 0, "Reading webhooks/sender.py\nPlan: wrap send() in a retry loop\n")
    lifecycle.work_order_requeue(work_order=order, reason="preempted by higher-priority work", preempted=True)
    order = lifecycle.work_order_claim(worker=slots[0], work_order_id=order.id)
    order, second = lifecycle.work_order_start(work_order=order, worker=slots[0])
    say(second, 0, "Resuming: retry loop written\nRunning tests: 42 passed\nCommitted: Retry webhooks with backoff\n")
    lifecycle.work_order_complete(work_order=order, worker=slots[0], execution=second)
    operator_message_send(user=user, conversation_id=str(flaky.id), text="Cap the backoff at 5 minutes, please.")
    # Sending already gave the agent its turn (after commit); asking again is harmless.
    turn = agent_next_turn(task=flaky) or flaky.work_orders.get(kind=WorkOrderKind.DELIVER_MESSAGE)
    turn = lifecycle.work_order_claim(worker=slots[0], work_order_id=turn.id)
    turn, third = lifecycle.work_order_start(work_order=turn, worker=slots[0])
    say(third, 0, "Capping the delay at 300 s\nUpdating the tests\n")

    # An agent waiting for an answer, and one that has been quiet for a while.
    asking = task_create(title="Migrate the orders table to PostgreSQL", priority="high", created_by=user)
    order, execution = start(asking, slots[1])
    say(execution, 0, "Found 3 SQLite-specific queries\n")
    question_ask(work_order=order, execution=execution, text="Keep the old table for a week, or drop it now?")
    silent = task_create(title="Profile the nightly report job", priority="low", created_by=user)
    _, quiet = start(silent, slots[2])
    Execution.objects.filter(pk=quiet.pk).update(started_at=timezone.now() - timedelta(minutes=14))
    for n, (title, priority) in enumerate(
        [("Fix flaky checkout test", "high"), ("Document the API tokens", "low"), ("Upgrade Django", "normal")]
    ):
        task_create(title=title, priority=priority, task_type=["bugfix", "docs", "feature"][n], created_by=user)
    return user, flaky


def main():
    os.environ["DATABASE_URL"] = os.environ.get(
        "SCREENSHOT_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/agentvine_screenshots"
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentvine.settings_test")
    import psycopg

    admin_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    name = os.environ["DATABASE_URL"].rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        # A scratch database, made afresh each time.
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    user, task = seed()
    port = free_port()
    web = subprocess.Popen(
        ["daphne", "-b", "127.0.0.1", "-p", str(port), "agentvine.asgi:application"],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        from playwright.sync_api import sync_playwright

        base = f"http://127.0.0.1:{port}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.goto(f"{base}/accounts/login/")
            page.fill("#id_username", user.username)
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            shots = {
                "overview.png": "/",
                "tasks.png": "/tasks/?sort=queue",
                "task-detail.png": f"/tasks/{task.id}/",
                "workers.png": "/workers/",
                "messages.png": "/messages/",
            }
            for file, path in shots.items():
                page.goto(base + path)
                page.wait_for_selector("#live-state.on")
                page.wait_for_timeout(300)
                page.screenshot(path=DOCS / file, full_page=True)
                print("wrote", DOCS / file)
            browser.close()
    finally:
        web.terminate()
        web.wait(10)


if __name__ == "__main__":
    main()
