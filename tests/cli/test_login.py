"""login stores a checked token privately; reads against a live server."""

import json
import socket
import stat

import pytest

from tasks_app.services import task_create

pytestmark = pytest.mark.e2e


def _closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_login_stores_the_token_0600_and_tasks_list_shows_tasks(cli, live_server, operator, operator_token):
    task_create(created_by=operator, title="Fix the flaky login page")

    result = cli("login", "--server", live_server.url, "--token", operator_token)

    assert result.code == 0, result.err
    config = cli.home / "config" / "agentvine" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text()) == {"server": live_server.url, "token": operator_token}
    listed = cli("tasks", "list")
    assert listed.code == 0, listed.err
    assert "Fix the flaky login page" in listed.out


def test_a_bad_token_is_a_one_line_error_and_stores_nothing(cli, live_server, operator_token):
    result = cli("login", "--server", live_server.url, "--token", operator_token + "x")

    assert result.code == 1
    assert result.err == "error: invalid or revoked token\n"
    assert not (cli.home / "config" / "agentvine" / "config.json").exists()


def test_reads_say_the_server_is_offline(cli, operator_token):
    server = _closed_port_url()
    saved = cli("login", "--server", server, "--token", operator_token)
    assert saved.code == 0
    assert "unreachable" in saved.out

    result = cli("tasks", "list")

    assert result.code == 3
    assert result.err == f"error: server {server} is offline (connection refused)\n"


def test_commands_before_login_say_how_to_log_in(cli):
    result = cli("tasks", "list")

    assert result.code == 1
    assert result.err.count("\n") == 1
    assert "agentvine login" in result.err
