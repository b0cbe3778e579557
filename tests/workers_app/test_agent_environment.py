"""What an agent process gets of the worker's environment: an allowlist, its
profile's env and named secrets; secrets masked in what it prints. Real
agent processes through the real executors."""

import json
import sys

import pytest

from workers_app.executors.environment import (
    ERR_SECRET_MISSING,
    ERR_SECRET_PLATFORM,
    MASK,
    PASSED_THROUGH,
)
from workers_app.executors.process import MAX_LINE_CHARS

DUMP_ENV = [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]
PROVIDER_KEY = "sk-ant-provider-key-0123456789"


@pytest.fixture
def worker_environment(monkeypatch):
    """What a worker holds: the platform's secrets and a provider key."""
    monkeypatch.setenv("SECRET_KEY", "worker-secret-key-value")
    monkeypatch.setenv("DATABASE_URL", "postgres://platform:hunter2@db/agentvine")
    monkeypatch.setenv("AGENTVINE_WORKER_TOKEN", "avw_worker_token_value")
    monkeypatch.setenv("ANTHROPIC_API_KEY", PROVIDER_KEY)
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("UNRELATED_WORKER_SETTING", "1")


def _dumped(run):
    return json.loads(run.output.strip().splitlines()[-1])


def test_agent_gets_only_the_allowlist_its_home_and_what_its_profile_declares(run_agent, worker_environment, settings):
    run = run_agent({"type": "command", "command": DUMP_ENV, "env": {"FEATURE_FLAG": "on"}}, "dump")

    assert run.outcome.kind == "completed"
    env = _dumped(run)
    assert env["FEATURE_FLAG"] == "on"
    assert env["LANG"] == env["LC_ALL"] == "C.UTF-8"
    assert env["PATH"]
    for name in (
        "SECRET_KEY",
        "DATABASE_URL",
        "AGENTVINE_WORKER_TOKEN",
        "ANTHROPIC_API_KEY",
        "UNRELATED_WORKER_SETTING",
    ):
        assert name not in env
    # The run's marker and where its ask client reports giving up: no secrets.
    platform = {"AGENTVINE_RUN_MARKER", "AGENTVINE_ASK_REPORT", "AGENTVINE_PROMPT_FILE"}
    assert set(env) - PASSED_THROUGH - platform - {"LC_ALL", "HOME", "PYTHONUNBUFFERED", "FEATURE_FLAG"} == set()
    # Its own HOME, beside the workspaces, not the worker user's.
    assert env["HOME"].startswith(str(settings.AGENTVINE_WORKSPACE_ROOT / "_homes"))


def test_provider_key_reaches_only_a_profile_that_names_it_and_is_masked(run_agent, worker_environment):
    printing = [sys.executable, "-c", "import os; print('key:', os.environ.get('ANTHROPIC_API_KEY'))"]

    unnamed = run_agent({"type": "command", "command": printing}, "x")
    named = run_agent({"type": "command", "command": printing, "secrets": ["ANTHROPIC_API_KEY"]}, "x")

    assert unnamed.output == "key: None\n"
    # The agent had the real key (it printed it); what left the executor is masked.
    assert named.output == f"key: {MASK.format(name='ANTHROPIC_API_KEY')}\n"
    assert PROVIDER_KEY not in named.output


def test_secret_from_a_file_is_read_at_run_time_and_masked_even_across_a_cut_line(run_agent, monkeypatch, tmp_path):
    secret = "file-secret-" + "x" * 20
    (tmp_path / "key").write_text(secret + "\n")
    monkeypatch.setenv("VENDOR_TOKEN_FILE", str(tmp_path / "key"))
    # The value straddles the point where a long line is handed over in pieces.
    pad = MAX_LINE_CHARS - 10
    script = f"import os; v = os.environ['VENDOR_TOKEN']; print('a' * {pad} + v + 'b'); print('again', v)"
    profile = {"type": "command", "command": [sys.executable, "-c", script], "secrets": ["VENDOR_TOKEN"]}

    run = run_agent(profile, "x")

    assert run.outcome.kind == "completed"
    assert secret not in run.output
    assert run.output == "a" * pad + "[secret VENDOR_TOKEN]b\nagain [secret VENDOR_TOKEN]\n"


def test_missing_secret_fails_at_once_with_one_sentence(run_agent, monkeypatch):
    from workers_app.executors import ExecutorConfigError

    monkeypatch.delenv("NOT_ON_THIS_WORKER", raising=False)
    monkeypatch.delenv("NOT_ON_THIS_WORKER_FILE", raising=False)

    with pytest.raises(ExecutorConfigError) as missing:
        run_agent({"type": "command", "command": ["true"], "secrets": ["NOT_ON_THIS_WORKER"]}, "x")
    with pytest.raises(ExecutorConfigError) as platform:
        run_agent({"type": "command", "command": ["true"], "secrets": ["DATABASE_URL"]}, "x")

    assert str(missing.value) == ERR_SECRET_MISSING.format(name="NOT_ON_THIS_WORKER")
    assert str(platform.value) == ERR_SECRET_PLATFORM.format(name="DATABASE_URL")


def test_claude_agent_gets_the_same_environment_and_its_stderr_is_masked(run_agent, worker_environment):
    """JSON-lines agents (claude, codex) go through the same environment and mask."""
    script = (
        "import os, sys; sys.stderr.write('key ' + os.environ['ANTHROPIC_API_KEY'] + '\\n');"
        " sys.stderr.write('db ' + os.environ.get('DATABASE_URL', 'none') + '\\n'); sys.exit(3)"
    )
    profile = {"type": "claude", "binary": [sys.executable, "-c", script], "secrets": ["ANTHROPIC_API_KEY"]}

    run = run_agent(profile, "x")

    assert run.outcome.kind == "error"
    assert "key [secret ANTHROPIC_API_KEY]" in run.outcome.text
    assert "db none" in run.outcome.text
    assert PROVIDER_KEY not in run.outcome.text
