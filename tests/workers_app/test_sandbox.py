"""``sandbox: bwrap``: a real agent process in a real bubblewrap sandbox."""

import json
import sys

import pytest

from workers_app.executors import sandbox
from workers_app.executors.base import ExecutorConfigError
from workers_app.executors.sandbox import ERR_NOT_INSTALLED, ERR_UNKNOWN_SANDBOX, PLATFORM_ROOT

LOOK_AROUND = """
import json, os, pathlib, shutil, sys
def readable(path):
    try:
        pathlib.Path(path).read_bytes()[:1]
        return True
    except OSError:
        return False
workspace = pathlib.Path.cwd()
(workspace / "written.txt").write_text("mine")
print(json.dumps({
    "root": sorted(os.listdir("/")),
    "processes": sorted(p for p in os.listdir("/proc") if p.isdigit()),
    "neighbour": readable(sys.argv[1]),
    "settings": readable(sys.argv[2]),
    "ask_on_path": shutil.which("agentvine-ask") is not None,
    "ask_client": readable(sys.argv[3]),
    "home_writable": os.access(os.environ["HOME"], os.W_OK),
    "platform": sorted(os.listdir(sys.argv[4])),
    "client": sorted(os.listdir(sys.argv[4] + "/chat_app")),
}))
"""


@pytest.fixture(autouse=True)
def fresh_probe():
    sandbox._probed.clear()
    yield
    sandbox._probed.clear()


def test_bwrap_agent_sees_its_workspace_and_toolchain_but_no_other_file(run_agent, tmp_path):
    from chat_app.agent_link import AGENT_BIN_DIR

    workspace = tmp_path / "task-a"
    workspace.mkdir()
    (workspace / "look.py").write_text(LOOK_AROUND)
    neighbour = tmp_path / "task-b" / "SECRET_PLAN.md"
    neighbour.parent.mkdir()
    neighbour.write_text("another task's work")
    argv = [
        sys.executable,
        str(workspace / "look.py"),
        str(neighbour),
        str(PLATFORM_ROOT / "agentvine" / "settings.py"),
        str(PLATFORM_ROOT / "chat_app" / "ask_client.py"),
        str(PLATFORM_ROOT),
    ]
    profile = {"type": "command", "command": argv, "sandbox": "bwrap", "env": {"PATH": f"{AGENT_BIN_DIR}:/usr/bin"}}

    run = run_agent(profile, "look around", workspace=workspace)

    assert run.outcome.kind == "completed", run.output
    seen = json.loads(run.output.strip().splitlines()[-1])
    assert (workspace / "written.txt").read_text() == "mine"
    assert seen["neighbour"] is False
    assert seen["settings"] is False
    assert seen["ask_on_path"] and seen["ask_client"] and seen["home_writable"]
    # Its own PID namespace: bwrap and the agent, nothing of the host.
    assert len(seen["processes"]) <= 3
    assert "var" not in seen["root"] and "home" not in seen["root"]
    # Of the platform's code, only the ask client (and the interpreter when it lives there).
    assert set(seen["platform"]) <= {"chat_app", ".venv"}
    assert seen["client"] == ["__init__.py", "agent_bin", "ask_client.py", "mcp_server.py"]


def test_unknown_sandbox_and_missing_bubblewrap_fail_at_once_with_one_sentence(run_agent, monkeypatch, tmp_path):
    with pytest.raises(ExecutorConfigError) as unknown:
        run_agent({"type": "command", "command": ["true"], "sandbox": "docker"}, "x")
    # A worker without bubblewrap on its PATH never runs the profile unsandboxed.
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ExecutorConfigError) as missing:
        run_agent({"type": "command", "command": ["/bin/true"], "sandbox": "bwrap"}, "x")

    assert str(unknown.value) == ERR_UNKNOWN_SANDBOX.format(name="docker")
    assert str(missing.value) == ERR_NOT_INSTALLED


def test_bwrap_agent_is_interrupted_cooperatively_like_any_other(run_agent):
    from tests.workers_app.conftest import interrupt_when

    agents = PLATFORM_ROOT / "tests" / "agents"
    profile = {
        "type": "command",
        "command": [sys.executable, str(agents / "ticker.py"), "{prompt}"],
        "sandbox": "bwrap",
        "sandbox_read_only": [str(agents)],
    }
    hook, asked = interrupt_when("tick 3")

    run = run_agent(profile, "ticker 10", on_event=hook)

    assert asked
    assert "ticker: interrupted" in run.output
    assert run.outcome.data["exit_code"] == 130
