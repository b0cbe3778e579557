"""The interactive shell in a real pseudo-terminal: its prompt follows the server going away and back."""

import pexpect
import pytest

from chat_app.models import ChatMessage, MessageKind
from tasks_app.services import task_create
from tests.conftest import wait_for

pytestmark = pytest.mark.e2e

# prompt_toolkit draws the prompt's trailing space as a cursor move.
ONLINE = "agentvine>"


def test_the_prompt_shows_offline_queues_and_syncs_in_the_background(logged_in, server, operator):
    cli = logged_in
    task = task_create(created_by=operator, title="Shell target")
    env = {
        **cli.env,
        "TERM": "xterm",
        # pexpect does not answer cursor-position requests.
        "PROMPT_TOOLKIT_NO_CPR": "1",
        "AGENTVINE_SHELL_PROBE_SECONDS": "0.3",
        "AGENTVINE_SHELL_BACKOFF_BASE": "0.2",
        "AGENTVINE_SHELL_BACKOFF_MAX": "1",
    }
    command = cli.command("shell")
    shell = pexpect.spawn(command[0], command[1:], env=env, cwd=str(cli.home), encoding="utf-8", timeout=20)
    try:
        shell.expect_exact(ONLINE)

        server.stop()
        shell.expect_exact("server unreachable: writes are queued until it is back")
        shell.expect_exact("agentvine [OFFLINE: 0 queued]>")
        shell.sendline(f"!{task.pk} written on the train")
        shell.expect_exact("queued (#1) — will sync when online")
        shell.sendline(f"!{task.pk} and a second thought")
        shell.expect_exact("agentvine [OFFLINE: 2 queued]>")
        shell.sendline("/queue")
        shell.expect_exact("pending (2)")
        shell.sendline("tasks list")
        shell.expect_exact("is offline (connection refused)")

        server.start()
        shell.expect_exact("server is back: synced 2 queued entries, 0 failed")
        shell.expect_exact(ONLINE)
        wait_for(lambda: ChatMessage.objects.filter(task=task, kind=MessageKind.CHAT).count() == 2)
        shell.sendline("tasks list")
        shell.expect_exact("Shell target")
        shell.sendline("/quit")
        shell.expect(pexpect.EOF)
    finally:
        shell.close(force=True)
    texts = ChatMessage.objects.filter(task=task, kind=MessageKind.CHAT).order_by("created_at")
    assert list(texts.values_list("text", flat=True)) == ["written on the train", "and a second thought"]
