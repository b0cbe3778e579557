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

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/agentvine")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/9")
os.environ.setdefault("AGENTVINE_DEMO_STEP_SECONDS", "0.1")
os.environ.setdefault("AGENTVINE_RETRY_BACKOFF_BASE", "0.2")
os.environ.setdefault("AGENTVINE_RETRY_BACKOFF_MAX", "1.0")
os.environ.setdefault("AGENTVINE_HEARTBEAT_SECONDS", "1.0")
os.environ.setdefault("AGENTVINE_VAR_DIR", "/tmp/agentvine-test-var")
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
        }
    ),
)

from agentvine.settings import *  # noqa: E402,F403
