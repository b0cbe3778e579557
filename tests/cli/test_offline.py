"""Writes typed while the server is down wait in the outbox and sync once it is back."""

import json
import re
import uuid

import pytest

from chat_app.models import ChatMessage, MessageKind
from tasks_app.models import Task, TaskStatus
from tasks_app.services import task_create

pytestmark = pytest.mark.e2e

QUEUED = re.compile(r"^queued \(#(\d+)\) — will sync when online$")


def _chat_texts(task):
    messages = ChatMessage.objects.filter(task=task, kind=MessageKind.CHAT).order_by("created_at")
    return list(messages.values_list("text", flat=True))


def test_commands_queue_while_the_server_is_down_and_sync_when_it_is_back(logged_in, server, operator, tmp_path):
    cli = logged_in
    created = cli("tasks", "create", "Port the parser", "--priority", "high")
    assert created.code == 0, created.err
    task = Task.objects.get(title="Port the parser")
    assert created.out.startswith(f"created {task.pk}")
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps({"to": str(task.pk), "messages": ["second", "third"]}))
    unknown = uuid.uuid4()

    server.stop()
    queued = [
        cli("send", str(task.pk), "first"),
        cli("tasks", "cancel", str(unknown)),
        cli("send", "--batch", str(batch)),
        cli("tasks", "cancel", str(task.pk)),
    ]
    offline_read = cli("tasks", "list")
    outbox = cli("queue")

    assert [r.code for r in queued] == [0, 0, 0, 0], [r.err for r in queued]
    numbers = [int(QUEUED.match(r.out.strip()).group(1)) for r in queued]
    assert numbers == sorted(numbers) and len(set(numbers)) == 4
    assert offline_read.code == 3
    assert offline_read.err == f"error: server {server.url} is offline (connection refused)\n"
    assert "pending (4)" in outbox.out
    assert _chat_texts(task) == [] and Task.objects.get(pk=task.pk).status != TaskStatus.CANCELLED

    server.start()
    synced = cli("sync")
    again = cli("sync")
    outbox = cli("queue")

    assert synced.code == 0, synced.err
    assert synced.out.strip() == "synced 3 entries, 1 failed, 0 pending"
    assert again.out.strip() == "synced 0 entries, 0 failed, 0 pending"
    assert _chat_texts(task) == ["first", "second", "third"]
    assert Task.objects.get(pk=task.pk).status == TaskStatus.CANCELLED
    assert "failed (1)" in outbox.out and "pending" not in outbox.out
    assert f"cancel task {unknown}" in outbox.out and "HTTP 404" in outbox.out


def test_bad_input_is_one_line_non_zero_and_queues_nothing(logged_in, server, operator, tmp_path):
    cli = logged_in
    task = task_create(created_by=operator, title="Existing")
    missing = uuid.uuid4()
    malformed = tmp_path / "malformed.json"
    malformed.write_text('{"to": "x", "messages": ["a",')
    wrong_shape = tmp_path / "shape.json"
    wrong_shape.write_text(json.dumps({"to": str(task.pk), "messages": ["ok", ""]}))

    online = {
        "unknown task": cli("tasks", "cancel", str(missing)),
        "unknown target": cli("send", "no-such-agent", "hello"),
        "unknown question": cli("answer", str(missing), "yes"),
    }
    server.stop()
    offline = {
        "not a task id": cli("tasks", "retry", "42"),
        "malformed batch": cli("send", "--batch", str(malformed)),
        "empty batch message": cli("send", "--batch", str(wrong_shape)),
        "missing batch file": cli("send", "--batch", str(tmp_path / "nope.json")),
        "empty message": cli("send", str(task.pk), "   "),
    }
    outbox = cli("queue")

    for name, result in {**online, **offline}.items():
        assert result.code == 1, (name, result)
        assert result.out == "", (name, result)
        assert result.err.startswith("error: ") and result.err.count("\n") == 1, (name, result.err)
    assert online["unknown task"].err == f"error: unknown task {missing}\n"
    assert "unknown target no-such-agent" in online["unknown target"].err
    assert online["unknown question"].err == f"error: unknown question {missing}\n"
    assert "not valid JSON" in offline["malformed batch"].err
    assert outbox.out.strip() == "outbox is empty"


def test_a_bad_token_is_refused_without_queueing(cli, server, operator, operator_token):
    config = cli.home / "config" / "agentvine"
    config.mkdir(parents=True)
    (config / "config.json").write_text(json.dumps({"server": server.url, "token": "avo_not-a-real-token"}))

    result = cli("tasks", "create", "Never created")

    assert result.code == 1
    assert result.err == "error: invalid or revoked token\n"
    assert cli("queue").out.strip() == "outbox is empty"
    assert not Task.objects.filter(title="Never created").exists()


def test_queued_writes_wait_for_a_new_login_when_the_token_is_refused(cli, server, operator, operator_token):
    server.stop()
    assert cli("login", "--server", server.url, "--token", "avo_revoked").code == 0
    assert QUEUED.match(cli("tasks", "create", "Written offline").out.strip())
    server.start()

    refused = cli("sync")
    relogged = cli("login", "--server", server.url, "--token", operator_token)
    synced = cli("sync")

    assert refused.code == 1
    assert refused.err == "error: invalid or revoked token: 1 entries kept; run agentvine login\n"
    assert relogged.code == 0
    assert synced.out.strip() == "synced 1 entries, 0 failed, 0 pending"
    assert Task.objects.filter(title="Written offline").count() == 1
