"""OpenAI Codex CLI, non-interactive, JSON lines on stdout.

    codex exec --json --skip-git-repo-check --cd <workspace> [resume <thread_id>]

The prompt goes on stdin, which is then closed (how the Codex SDK drives it).
Codex picks its own thread id and reports it in ``thread.started``; the
executor passes it on as a ``session`` event so a later run can resume it.
Codex reports tokens, not money: a profile may set ``usd_per_million_input``
and ``usd_per_million_output`` to turn them into a cost.
"""

import re

from workers_app.executors.agent_tools import codex_mcp_args
from workers_app.executors.base import ExecutorConfigError, ExecutorEvent, usage_event
from workers_app.executors.jsonl import JsonLinesExecutor, binary_argv, clip

# A failed turn that says the account is out of its allowance for now.
USAGE_LIMIT = re.compile(r"usage limit|rate limit|too many requests", re.IGNORECASE)
ERR_TURN_FAILED = "codex turn failed: {message}"
ERR_NO_TURN = "codex exited with code {code} before completing a turn"
ERR_EXIT = "codex exited with code {code}"
ERR_BAD_SESSION_ID = "stored codex session id is not a thread id; refusing to pass it to codex"
# Codex names threads with UUIDs. The stored id comes back from the agent (and
# the sessions API), so it must never be able to read as an option of codex.
THREAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class CodexExecutor(JsonLinesExecutor):
    agent_name = "codex"

    def __init__(self, context):
        super().__init__(context)
        self.thread_id = ""
        self.turn_completed = False
        self.failure = ""
        # Codex also reports transient problems (a reconnect) as ``error``;
        # they only decide the outcome when no turn completed.
        self.last_error = ""

    def argv(self):
        profile = self.context.profile
        argv = binary_argv(profile, "codex") + [
            "exec",
            "--json",
            "--skip-git-repo-check",
            "--cd",
            str(self.context.workspace),
        ]
        if profile.get("model"):
            argv += ["--model", profile["model"]]
        # The platform's MCP server (ask_human), registered codex's way.
        argv += codex_mcp_args()
        argv += list(profile.get("args", [])) + list(self.context.extra_args)
        if self.context.resume and self.context.session_id:
            if not THREAD_ID.fullmatch(self.context.session_id):
                raise ExecutorConfigError(ERR_BAD_SESSION_ID)
            argv += ["resume", self.context.session_id]
        return argv

    def on_start(self):
        self.process.write_line(self.context.prompt)
        self.process.close_stdin()

    def translate(self, message):
        kind = message.get("type")
        if kind == "thread.started":
            self.thread_id = message.get("thread_id", "")
            yield ExecutorEvent("session", data={"session_id": self.thread_id})
            yield ExecutorEvent("output", f"[codex] thread {self.thread_id}\n")
        elif kind == "item.started":
            yield from self._item_started(message.get("item") or {})
        elif kind == "item.completed":
            yield from self._item_completed(message.get("item") or {})
        elif kind == "turn.completed":
            self.turn_completed = True
            yield self._usage(message.get("usage") or {})
        elif kind == "turn.failed":
            detail = (message.get("error") or {}).get("message", "no detail")
            self.failure = ERR_TURN_FAILED.format(message=detail)
            yield ExecutorEvent("output", f"[codex] {self.failure}\n")
            if USAGE_LIMIT.search(detail):
                # Codex names no reset time: the key waits out the backoff (queue_app.rate_limits).
                yield ExecutorEvent("rate_limited", data={"resets_at": None, "reason": f"codex: {detail}"[:200]})
        elif kind == "error":
            detail = message.get("message", "")
            self.last_error = f"codex error: {detail}"
            yield ExecutorEvent("output", f"[codex] error: {detail}\n")

    def _item_started(self, item):
        item_type = item.get("type")
        if item_type == "command_execution":
            command = item.get("command", "")
            yield ExecutorEvent("tool_use", f"[command] {command}\n", data={"name": "command", "input": command})
        elif item_type == "mcp_tool_call":
            name = f"{item.get('server', '')}.{item.get('tool', '')}"
            yield ExecutorEvent("tool_use", f"[tool] {name}\n", data={"name": name, "input": item.get("arguments")})

    def _item_completed(self, item):
        item_type = item.get("type")
        if item_type == "agent_message":
            text = item.get("text", "")
            yield ExecutorEvent("output", text if text.endswith("\n") else text + "\n")
        elif item_type == "command_execution":
            output = clip(item.get("aggregated_output", ""))
            yield ExecutorEvent("output", f"[command exit {item.get('exit_code')}] {output}\n")
        elif item_type == "file_change":
            changes = ", ".join(f"{c.get('kind', '?')} {c.get('path', '?')}" for c in item.get("changes") or [])
            yield ExecutorEvent("output", f"[files] {changes}\n")
        elif item_type == "mcp_tool_call":
            yield ExecutorEvent(
                "output", f"[tool {item.get('status', 'done')}] {item.get('server')}.{item.get('tool')}\n"
            )
        elif item_type == "web_search":
            yield ExecutorEvent("output", f"[search] {item.get('query', '')}\n")
        elif item_type == "error":
            yield ExecutorEvent("output", f"[codex] error: {item.get('message', '')}\n")

    def _usage(self, usage):
        # input_tokens already includes cached_input_tokens (a subset).
        return usage_event(
            self.context.profile,
            input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0),
        )

    def outcome(self, exit_code):
        data = {"exit_code": exit_code, "thread_id": self.thread_id}
        if self.failure:
            return ExecutorEvent("error", self.failure + self.stderr_suffix(), data=data)
        if not self.turn_completed:
            error = self.last_error or ERR_NO_TURN.format(code=exit_code)
            return ExecutorEvent("error", error + self.stderr_suffix(), data=data)
        if exit_code != 0:
            return ExecutorEvent("error", ERR_EXIT.format(code=exit_code) + self.stderr_suffix(), data=data)
        return ExecutorEvent("completed", data=data)
