"""The claude executor against a replay of the CLI's stream-json protocol (a real subprocess)."""

import ast
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import ROOT
from tests.workers_app.conftest import interrupt_when
from workers_app.executors import ExecutorConfigError
from workers_app.executors.agent_tools import claude_mcp_config_path
from workers_app.executors.claude import ERR_NO_RESULT, ERR_RESULT
from workers_app.executors.jsonl import MAX_JSON_LINE_CHARS, MSG_OVERSIZED

PROFILE = "claude-replay"


def test_runs_to_success_with_tools_usage_and_cost(run_agent, tmp_path):
    (tmp_path / "README.md").write_text("hello")
    session_id = str(uuid.uuid4())

    run = run_agent(PROFILE, "Fix the login bug\n\nType: Bug fix", session_id=session_id)

    assert run.outcome.kind == "completed"
    assert run.outcome.data["exit_code"] == 0
    assert run.outcome.data["num_turns"] == 1
    assert run.of("session")[0].data["session_id"] == session_id
    [tool] = run.of("tool_use")
    assert tool.data["name"] == "Bash" and tool.data["input"] == {"command": "ls"}
    assert "Looking at the workspace." in run.output
    assert "[tool result] README.md" in run.output
    assert run.output.rstrip().endswith("Done: Fix the login bug")
    [usage] = run.of("usage")
    assert usage.data == {"input_tokens": 150, "output_tokens": 50, "cost_usd": pytest.approx(0.0123)}


def test_follow_up_message_is_answered_in_the_same_process(run_agent):
    def follow_up(run, event):
        if event.kind == "tool_use":
            assert run.executor.send_message("also update the changelog")

    run = run_agent(PROFILE, "Add a feature", on_event=follow_up)

    assert run.outcome.kind == "completed"
    assert "Follow-up received: also update the changelog" in run.output
    # total_cost_usd is cumulative per process: each turn adds its own share once.
    assert [u.data["cost_usd"] for u in run.of("usage")] == [pytest.approx(0.0123), pytest.approx(0.0123)]
    # Input closed after the last answer, so the agent can no longer take messages.
    assert run.executor.send_message("too late") is False


def test_interrupt_uses_the_control_request_and_stops_quickly(run_agent):
    interrupt, asked = interrupt_when("working step 3")

    run = run_agent(PROFILE, "Long job scenario:slow", on_event=interrupt)

    # The replay only stops for a well-formed control_request; it would
    # otherwise answer with an error control_response and keep working.
    assert time.monotonic() - asked["at"] < 3
    assert "control request failed" not in run.output
    assert "working step 50" not in run.output
    assert run.outcome.kind == "error"
    assert run.outcome.text == ERR_RESULT.format(subtype="error_during_execution", detail="interrupted by the user")
    assert run.outcome.data["exit_code"] == 0


def test_malformed_lines_are_kept_and_do_not_end_the_run(run_agent):
    run = run_agent(PROFILE, "Tidy up scenario:malformed")

    assert run.outcome.kind == "completed"
    assert "[claude] unparsed output: this line is not json" in run.output
    assert '[claude] unparsed output: {"type":"assistant","message":' in run.output
    assert "[claude] unparsed output: [1, 2, 3]" in run.output
    assert MSG_OVERSIZED.format(agent="claude", limit=MAX_JSON_LINE_CHARS) in run.output
    assert "x" * 1000 not in run.output


def test_crash_mid_stream_is_an_error_with_the_agents_stderr(run_agent):
    run = run_agent(PROFILE, "Doomed scenario:crash")

    assert "about to crash" in run.output
    assert run.outcome.kind == "error"
    assert run.outcome.data["exit_code"] == 3
    assert run.outcome.text.startswith(ERR_NO_RESULT.format(code=3))
    assert "fatal: replay crashed on purpose" in run.outcome.text


def test_error_result_and_non_zero_exit(run_agent):
    run = run_agent(PROFILE, "Too big scenario:error")

    assert run.outcome.kind == "error"
    assert run.outcome.text == ERR_RESULT.format(
        subtype="error_max_turns", detail="Reached maximum number of turns (3)"
    )
    assert run.outcome.data["exit_code"] == 1
    assert run.outcome.data["num_turns"] == 3


def test_rate_limit_is_reported(run_agent):
    run = run_agent(PROFILE, "Anything scenario:ratelimit")

    assert "[claude] rate limit rejected (five_hour), resets at 2030-03-17T17:46:40+00:00" in run.output
    assert run.outcome.kind == "error"
    assert "usage limit reached" in run.outcome.text


def test_resume_continues_the_session_in_the_same_workspace(run_agent, tmp_path):
    session_id = str(uuid.uuid4())
    first = run_agent(PROFILE, "Start the work", session_id=session_id)
    assert first.outcome.kind == "completed"

    again = run_agent(PROFILE, "Continue the work", session_id=session_id, resume=True)

    assert again.outcome.kind == "completed"
    assert f"Resumed session {session_id} with 2 earlier messages" in again.output

    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    lost = run_agent(PROFILE, "Continue", session_id=session_id, resume=True, workspace=elsewhere)
    assert lost.outcome.kind == "error"
    assert f"No conversation found with session ID: {session_id}" in lost.outcome.text


def test_missing_binary_is_one_clear_configuration_error(run_agent):
    with pytest.raises(ExecutorConfigError, match=r"^agent command not found: /nonexistent/claude$"):
        run_agent("claude-missing", "Anything")


def test_claude_args_are_split_like_a_shell_so_inline_json_stays_whole():
    inline = '{"mcpServers": {"docs": {"command": "docs-mcp", "args": ["a", "b"]}}}'
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.AGENTVINE_EXECUTORS['claude']['args'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "AGENTVINE_CLAUDE_ARGS": f"--permission-mode acceptEdits --mcp-config '{inline}'"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert ast.literal_eval(out) == ["--permission-mode", "acceptEdits", "--mcp-config", inline]


def test_the_mcp_config_names_the_server_with_an_absolute_interpreter_and_is_removed_after_the_run(run_agent):
    seen = {}

    def capture(run, event):
        if event.kind == "session" and not seen:
            path = claude_mcp_config_path(run.executor.context)
            seen["mode"] = path.stat().st_mode & 0o777
            seen["path"] = path
            seen["config"] = json.loads(path.read_text())

    run = run_agent(PROFILE, "Anything", on_event=capture)

    assert run.outcome.kind == "completed"
    server = seen["config"]["mcpServers"]["agentvine"]
    assert server["command"] == sys.executable and server["args"] == ["-m", "chat_app.mcp_server"]
    assert server["env"]["PYTHONPATH"] == str(ROOT)
    assert seen["mode"] == 0o600
    assert not seen["path"].exists()
