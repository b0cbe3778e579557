"""Claude Code CLI in print mode with stream-json on both stdin and stdout.

    claude -p --output-format stream-json --verbose --input-format stream-json
           --session-id=<uuid> | --resume=<id> [--max-budget-usd=<what is left>]

The prompt is the first ``user`` message on stdin, not an argument, so that
follow-up messages can be written the same way while the agent works. The
CLI answers each user message with one ``result``; once every message sent
has its result, stdin is closed and the CLI exits. An interrupt is the
``control_request`` the Agent SDK sends (``{"subtype": "interrupt"}``): the
turn ends with an ``error_during_execution`` result and the session is saved,
so it can be resumed; SIGINT is the fallback when stdin is gone.

Every run gets the platform's MCP server (``ask_human``, ``report_progress``)
through a per-run ``--mcp-config`` and ``--allowedTools mcp__agentvine``
(executors/agent_tools.py), so the agent can ask a human without any setup.
"""

import json
import threading
import uuid
from datetime import UTC, datetime

from workers_app.executors.agent_tools import (
    CLAUDE_ALLOWED_TOOLS,
    CLAUDE_PERMISSION_TOOL,
    claude_mcp_config_path,
    claude_mcp_config_write,
)
from workers_app.executors.base import ExecutorEvent
from workers_app.executors.jsonl import JsonLinesExecutor, binary_argv, clip

ERR_NO_RESULT = "claude exited with code {code} before reporting a result"
ERR_RESULT = "claude ended with {subtype}: {detail}"
ERR_EXIT = "claude exited with code {code}"


def _tool_result_text(content):
    if isinstance(content, list):
        parts = [block.get("text", "") for block in content if isinstance(block, dict) and block.get("type") == "text"]
        return "\n".join(parts) if parts else json.dumps(content, ensure_ascii=False)
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)


class ClaudeExecutor(JsonLinesExecutor):
    agent_name = "claude"

    def __init__(self, context):
        super().__init__(context)
        # Messages written vs results received decide when stdin can close;
        # both change under this lock so a follow-up never races the close.
        self._turns_lock = threading.Lock()
        self._sent = 0
        self._results = 0
        self._cost_seen = 0.0
        self.last_result = None
        self.session_id = context.session_id
        # When the provider said its rejected limit resets (epoch seconds).
        self._rate_limit_reset = None

    def argv(self):
        profile = self.context.profile
        argv = binary_argv(profile, "claude") + [
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--input-format",
            "stream-json",
        ]
        if self.context.session_id:
            flag = "--resume" if self.context.resume else "--session-id"
            argv.append(f"{flag}={self.context.session_id}")
        if profile.get("model"):
            argv += ["--model", profile["model"]]
        if self.context.budget_usd is not None:
            # The CLI ends its turn once this much is spent (error_max_budget_usd).
            argv += ["--max-budget-usd", f"{self.context.budget_usd:.4f}"]
        argv += ["--mcp-config", str(claude_mcp_config_path(self.context)), "--allowedTools", CLAUDE_ALLOWED_TOOLS]
        if profile.get("permission_prompts"):
            argv += ["--permission-prompt-tool", CLAUDE_PERMISSION_TOOL]
        return argv + list(profile.get("args", [])) + list(self.context.extra_args)

    def write_agent_files(self, env):
        path = claude_mcp_config_path(self.context)
        claude_mcp_config_write(path, env)
        return [path]

    def on_start(self):
        self.send_message(self.context.prompt)

    def _user_message(self, text):
        return json.dumps(
            {
                "type": "user",
                "message": {"role": "user", "content": text},
                "parent_tool_use_id": None,
                "session_id": self.session_id or "default",
            }
        )

    def send_message(self, text):
        with self._turns_lock:
            if self.process is None or not self.process.write_line(self._user_message(text)):
                return False
            self._sent += 1
            return True

    def interrupt(self):
        self.interrupted = True
        if self.process is None:
            return
        request = {
            "type": "control_request",
            "request_id": f"req_{uuid.uuid4().hex}",
            "request": {"subtype": "interrupt"},
        }
        if not self.process.write_line(json.dumps(request)):
            self.process.interrupt()

    # --- protocol -> events ---------------------------------------------------
    def translate(self, message):
        kind = message.get("type")
        if kind == "system" and message.get("subtype") == "init":
            self.session_id = message.get("session_id") or self.session_id
            model = message.get("model", "")
            yield ExecutorEvent("session", data={"session_id": self.session_id, "model": model})
            yield ExecutorEvent("output", f"[claude] session {self.session_id} ({model})\n")
        elif kind == "assistant":
            yield from self._assistant(message.get("message") or {})
        elif kind == "user":
            yield from self._tool_results(message.get("message") or {})
        elif kind == "result":
            yield from self._result(message)
        elif kind == "rate_limit_event":
            info = message.get("rate_limit_info") or {}
            status = info.get("status", "")
            if status and status != "allowed":
                resets = info.get("resetsAt")
                when = datetime.fromtimestamp(resets, UTC).isoformat() if isinstance(resets, int | float) else "?"
                limit_type = info.get("rateLimitType", "")
                yield ExecutorEvent(
                    "output",
                    f"[claude] rate limit {status} ({limit_type}), resets at {when}\n",
                    data={"rate_limit": info},
                )
                if status == "rejected":
                    # The run stops; its key waits for the reset (queue_app.rate_limits).
                    self._rate_limit_reset = resets if isinstance(resets, int | float) else None
                    yield ExecutorEvent(
                        "rate_limited", data={"resets_at": self._rate_limit_reset, "reason": f"claude {limit_type}"}
                    )
        elif kind == "control_response":
            response = message.get("response") or {}
            if response.get("subtype") == "error":
                yield ExecutorEvent("output", f"[claude] control request failed: {response.get('error', '')}\n")

    def _assistant(self, body):
        content = body.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        for block in content or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and block.get("text"):
                text = block["text"]
                yield ExecutorEvent("output", text if text.endswith("\n") else text + "\n")
            elif block.get("type") == "tool_use":
                name = block.get("name", "?")
                tool_input = block.get("input") or {}
                yield ExecutorEvent(
                    "tool_use",
                    f"[tool] {name} {clip(tool_input, 300)}\n",
                    data={"id": block.get("id", ""), "name": name, "input": tool_input},
                )

    def _tool_results(self, body):
        content = body.get("content")
        if not isinstance(content, list):
            return
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                label = "tool error" if block.get("is_error") else "tool result"
                yield ExecutorEvent("output", f"[{label}] {clip(_tool_result_text(block.get('content', '')))}\n")

    def _result(self, message):
        self.last_result = message
        if message.get("api_error_status") in (429, 529):
            # Refused by the API itself (rate limited, or overloaded): as a rejected limit.
            status = message["api_error_status"]
            yield ExecutorEvent(
                "rate_limited",
                data={"resets_at": self._rate_limit_reset, "reason": f"claude API {status}"},
            )
        usage = message.get("usage") or {}
        # total_cost_usd is the running total of this CLI process; the usage
        # block counts the turn(s) this result closes. Both become increments.
        total_cost = float(message.get("total_cost_usd") or 0)
        cost = max(total_cost - self._cost_seen, 0.0)
        self._cost_seen = max(total_cost, self._cost_seen)
        input_tokens = sum(
            int(usage.get(key) or 0)
            for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        output_tokens = int(usage.get("output_tokens") or 0)
        if input_tokens or output_tokens or cost:
            yield ExecutorEvent(
                "usage", data={"input_tokens": input_tokens, "output_tokens": output_tokens, "cost_usd": cost}
            )
        with self._turns_lock:
            self._results += 1
            if self._results >= self._sent:
                # Every message has its answer: end of input lets the CLI exit.
                self.process.close_stdin()

    def outcome(self, exit_code):
        result = self.last_result
        if result is None:
            return ExecutorEvent(
                "error", ERR_NO_RESULT.format(code=exit_code) + self.stderr_suffix(), data={"exit_code": exit_code}
            )
        subtype = result.get("subtype", "")
        data = {"exit_code": exit_code, "num_turns": result.get("num_turns"), "subtype": subtype}
        if subtype == "error_max_budget_usd":
            # Stopped itself at --max-budget-usd: the runner pauses the task.
            data["budget_spent"] = True
        if result.get("is_error") or subtype != "success":
            detail = result.get("result") or "; ".join(map(str, result.get("errors") or [])) or "no detail"
            return ExecutorEvent("error", ERR_RESULT.format(subtype=subtype, detail=clip(detail, 500)), data=data)
        if exit_code != 0:
            return ExecutorEvent("error", ERR_EXIT.format(code=exit_code) + self.stderr_suffix(), data=data)
        return ExecutorEvent("completed", data=data)
