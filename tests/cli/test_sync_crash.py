"""1,000 writes queued offline; the syncing CLI is SIGKILLed; each applies exactly once, in order."""

import os
import signal
import subprocess
import time

import pytest

from chat_app.models import ChatMessage, MessageKind
from tasks_app.services import task_create
from tests.conftest import wait_for

pytestmark = pytest.mark.e2e

COMMANDS = 1000
TARGETS = 4


def _applied(tasks):
    return ChatMessage.objects.filter(task__in=tasks, kind=MessageKind.CHAT).count()


def test_a_sync_killed_midway_applies_every_command_exactly_once_in_order(logged_in, server, operator, tmp_path):
    cli = logged_in
    tasks = [task_create(created_by=operator, title=f"target {n}") for n in range(TARGETS)]
    expected = {task.pk: [] for task in tasks}
    lines = []
    for n in range(COMMANDS):
        task = tasks[n % TARGETS]
        text = f"message {n:04d}"
        expected[task.pk].append(text)
        lines.append(f"!{task.pk} {text}")

    server.stop()
    queued = cli("shell", stdin="\n".join(lines) + "\n", timeout=120)
    assert queued.code == 0, queued.err
    assert queued.out.count("— will sync when online") == COMMANDS
    assert _applied(tasks) == 0

    server.start()
    syncing = cli.popen("sync", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(lambda: _applied(tasks) >= COMMANDS // 4, timeout=60)
    os.kill(syncing.pid, signal.SIGKILL)
    syncing.wait(10)
    applied_at_kill = _applied(tasks)
    time.sleep(0.2)
    assert applied_at_kill < COMMANDS, "the sync finished before it could be killed"

    resumed = cli("sync", timeout=120)

    assert resumed.code == 0, resumed.err
    assert resumed.out.strip().endswith("0 failed, 0 pending")
    assert _applied(tasks) == COMMANDS
    for task in tasks:
        texts = ChatMessage.objects.filter(task=task, kind=MessageKind.CHAT).order_by("created_at")
        assert list(texts.values_list("text", flat=True)) == expected[task.pk]
