"""Settings for the test suite: PostgreSQL and Redis over real connections.

Defaults only; the environment still wins, so CI or a parallel run can point
at another database or Redis DB. Worker subprocesses started by the tests use
these settings too, so both sides agree on executor profiles and timings.
"""

import json
import os
import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent / "tests"

# DEBUG stays off, as in production, so the suite needs a key of its own
# (processes it starts, daphne and workers, use these settings too).
os.environ.setdefault("SECRET_KEY", "agentvine-test-suite-key-not-a-secret-" + "x" * 20)
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/agentvine")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/9")
os.environ.setdefault("AGENTVINE_DEMO_STEP_SECONDS", "0.1")
os.environ.setdefault("AGENTVINE_RETRY_BACKOFF_BASE", "0.2")
os.environ.setdefault("AGENTVINE_RETRY_BACKOFF_MAX", "1.0")
os.environ.setdefault("AGENTVINE_HEARTBEAT_SECONDS", "1.0")
os.environ.setdefault("AGENTVINE_VAR_DIR", "/tmp/agentvine-test-var")


def _own_shard(worker_id):
    """Under pytest-xdist (scripts/test runs the suite in several processes)
    each pytest process ``gwN`` gets its own Redis DB (the base DB + N) and
    var dir; pytest-django gives it its own test database. Done once, in the
    pytest process: the workers and servers it starts inherit the shifted
    environment (and the marker), so they do not shift again."""
    if not worker_id.startswith("gw") or os.environ.get("AGENTVINE_TEST_SHARD") == worker_id:
        return
    index = int(worker_id[2:])
    base, _, db = os.environ["REDIS_URL"].rpartition("/")
    shifted = int(db or 0) + index
    if shifted > 15:
        raise RuntimeError(f"REDIS_URL's DB + {index} (pytest-xdist process {worker_id}) is past Redis's 16 DBs")
    os.environ["REDIS_URL"] = f"{base}/{shifted}"
    os.environ["AGENTVINE_VAR_DIR"] = f"{os.environ['AGENTVINE_VAR_DIR']}-{worker_id}"
    os.environ["AGENTVINE_TEST_SHARD"] = worker_id


_own_shard(os.environ.get("PYTEST_XDIST_WORKER", ""))
# Tests clone local repositories they make (tests/workers_app); the refusal
# of local paths is tested by turning this off (tests/api/test_repositories.py).
os.environ.setdefault("AGENTVINE_REPOSITORY_ALLOW_LOCAL", "true")
_VAR = Path(os.environ["AGENTVINE_VAR_DIR"])
os.environ.setdefault(
    "AGENTVINE_EXECUTORS_JSON",
    json.dumps(
        {
            # A command that fails, for retry and dead-letter paths.
            "fail": {"type": "command", "command": ["sh", "-c", "echo working; echo boom >&2; exit 3"]},
            # Prints a line every 0.1 s for N seconds (tests/agents/ticker.py).
            "ticker": {
                "type": "command",
                "command": [sys.executable, str(_TESTS / "agents" / "ticker.py"), "{prompt}"],
            },
            "missing": {"type": "command", "command": ["/nonexistent/agent-binary"]},
            # Does nothing and succeeds: for throughput and draining tests.
            "noop": {"type": "command", "command": ["true"]},
            # Replays of the Claude Code and Codex CLIs speaking their real
            # protocols (tests/agents/*_replay.py); their session stores live
            # under the var dir, as ~/.claude and ~/.codex would.
            "claude-replay": {
                "type": "claude",
                "binary": [sys.executable, str(_TESTS / "agents" / "claude_replay.py")],
                "env": {"CLAUDE_CONFIG_DIR": str(_VAR / "claude-replay")},
            },
            "codex-replay": {
                "type": "codex",
                "binary": [sys.executable, str(_TESTS / "agents" / "codex_replay.py")],
                "env": {"CODEX_HOME": str(_VAR / "codex-replay")},
                "usd_per_million_input": 1.25,
                "usd_per_million_output": 10.0,
            },
            # Reports the length and digest of its prompt, read from a file.
            "measure": {
                "type": "command",
                "command": [sys.executable, str(_TESTS / "agents" / "measure_prompt.py"), "{prompt_file}"],
            },
            # The same replay with its permission prompts asked of a human.
            "claude-replay-prompts": {
                "type": "claude",
                "binary": [sys.executable, str(_TESTS / "agents" / "claude_replay.py")],
                "env": {"CLAUDE_CONFIG_DIR": str(_VAR / "claude-replay")},
                "permission_prompts": True,
            },
            "claude-missing": {"type": "claude", "binary": "/nonexistent/claude"},
            # Finishes at once, for throughput and redelivery tests.
            "quick": {"type": "command", "command": ["sh", "-c", "echo done"]},
            # Tries what a prompt-injected agent would (tests/agents/hostile.py);
            # names one secret, which the worker must have.
            "hostile": {
                "type": "command",
                "command": [sys.executable, str(_TESTS / "agents" / "hostile.py"), "{prompt}"],
                "secrets": ["HOSTILE_NAMED_SECRET"],
            },
            # The same in a bubblewrap sandbox (workers_app/executors/sandbox.py).
            "hostile-bwrap": {
                "type": "command",
                "command": [sys.executable, str(_TESTS / "agents" / "hostile.py"), "{prompt}"],
                "secrets": ["HOSTILE_NAMED_SECRET"],
                "sandbox": "bwrap",
                "network": False,
                "sandbox_read_only": [str(_TESTS / "agents")],
            },
            # Asks a human from a sandbox without network (tests/agents/offline_asker.py).
            "ask-offline": {
                "type": "command",
                "command": [sys.executable, str(_TESTS / "agents" / "offline_asker.py")],
                "sandbox": "bwrap",
                "network": False,
                "sandbox_read_only": [str(_TESTS / "agents")],
            },
            # Edits, adds, deletes and renames files (tests/agents/editor.py).
            "editor": {"type": "command", "command": [sys.executable, str(_TESTS / "agents" / "editor.py")]},
            # Writes HTML/script payloads into its workspace (tests/agents/payload_writer.py).
            "payload-writer": {
                "type": "command",
                "command": [sys.executable, str(_TESTS / "agents" / "payload_writer.py")],
            },
            # Appends one line per turn to REVISIONS.md (tests/agents/reviser.py).
            "reviser": {
                "type": "command",
                "command": [sys.executable, str(_TESTS / "agents" / "reviser.py"), "{prompt_file}"],
            },
            # Prints its whole environment.
            "printenv": {"type": "command", "command": ["printenv"]},
            # SIGKILLs the worker process running it, every time (poison work).
            "poison": {"type": "command", "command": ["sh", "-c", "echo crashing my worker; kill -9 $PPID"]},
        }
    ),
)

from agentvine.settings import *  # noqa: E402,F403

# Fixtures create users with passwords; the production hasher's deliberate
# slowness only costs suite time here.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
