"""The platform's MCP server (``ask_human``, ``report_progress``) as each agent
CLI registers it, so that asking a human needs no configuration.

The server is ``python -m chat_app.mcp_server`` run by this worker's own
interpreter (absolute: the agent runs in its workspace with an allowlisted
PATH, where ``python`` may be another one or none) with the platform's root
on ``PYTHONPATH``. The agent CLI starts it, so it needs the run's variables:

- ``claude`` gets a per-run ``--mcp-config`` file (mode 0600 in the agent's
  home: it holds the run's token; removed when the run ends) listing the
  server with its environment, and ``--allowedTools mcp__agentvine`` (in
  ``-p`` mode a tool no rule allows is refused);
- ``codex`` gets ``-c mcp_servers.agentvine.…`` overrides; the token is not
  put on its command line (every user of the host can read argv): codex
  forwards the variables ``env_vars`` names from its own environment.

The file is written after the sandbox decided the agent's environment (a
sandbox without network changes ``AGENTVINE_API_URL``), from that environment.
"""

import json
import os
import sys
from pathlib import Path

from workers_app.executors.sandbox import PLATFORM_ROOT

SERVER_NAME = "agentvine"
# What the MCP server needs of the agent's environment.
SERVER_VARIABLES = (
    "PATH",
    "HOME",
    "LANG",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "AGENTVINE_API_URL",
    "AGENTVINE_TOKEN",
    "AGENTVINE_TASK_ID",
    "AGENTVINE_WORK_ORDER_ID",
    "AGENTVINE_ASK_CONNECT_SECONDS",
    "AGENTVINE_ASK_REPORT",
    "AGENTVINE_RUN_MARKER",
)
CLAUDE_ALLOWED_TOOLS = f"mcp__{SERVER_NAME}"
# With a profile's "permission_prompts": a tool call no rule allows is asked
# of a human (chat_app/mcp_server.py approve_tool) instead of refused.
CLAUDE_PERMISSION_TOOL = f"mcp__{SERVER_NAME}__approve_tool"


def mcp_server_command():
    return sys.executable, ["-m", "chat_app.mcp_server"]


def mcp_server_environment(env):
    variables = {name: env[name] for name in SERVER_VARIABLES if env.get(name)}
    variables["PYTHONPATH"] = str(PLATFORM_ROOT)
    variables["PYTHONUNBUFFERED"] = "1"
    return variables


def claude_mcp_config_path(context):
    return Path(context.home) / ".agentvine" / f"mcp-{context.work_order_id}.json"


def claude_mcp_config_write(path, env):
    """Write the ``--mcp-config`` file for an agent whose environment is ``env``."""
    command, args = mcp_server_command()
    config = {
        "mcpServers": {
            SERVER_NAME: {"type": "stdio", "command": command, "args": args, "env": mcp_server_environment(env)}
        }
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(config, handle)


def codex_mcp_args():
    """``-c`` overrides registering the server with codex (TOML values)."""
    command, args = mcp_server_command()
    key = f"mcp_servers.{SERVER_NAME}"
    return [
        "-c",
        f"{key}.command={json.dumps(command)}",
        "-c",
        f"{key}.args={json.dumps(args)}",
        "-c",
        f'{key}.env={{PYTHONPATH = {json.dumps(str(PLATFORM_ROOT))}, PYTHONUNBUFFERED = "1"}}',
        "-c",
        f"{key}.env_vars={json.dumps([name for name in SERVER_VARIABLES if name != 'PATH'])}",
    ]
