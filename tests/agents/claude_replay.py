"""A stand-in for the Claude Code CLI that speaks its stream-json protocol.

    claude_replay.py -p --output-format stream-json --verbose --input-format stream-json
                     (--session-id=<uuid> | --resume=<id>) [other flags]

Checks its command line like the CLI does, reads ``user`` messages and
``control_request`` s from stdin (one JSON object per line) and writes the
messages the CLI writes to stdout: ``system``/``init``, ``rate_limit_event``,
``assistant`` (text, tool_use), ``user`` (tool_result), ``control_response``
and one ``result`` per user message. It exits when stdin ends.

Sessions are files under $CLAUDE_CONFIG_DIR/projects/<cwd>/<id>.jsonl, so
``--resume`` only works for a session saved in the same directory, as with
the real CLI. What it does is picked by a word in the first message:

    scenario:slow       works in small steps until interrupted (control request);
                        a resumed session picks up and finishes
    scenario:malformed  mixes lines that are not JSON into the stream
    scenario:crash      dies mid-line with exit code 3
    scenario:error      ends with an error_max_turns result and exit code 1
    scenario:ratelimit  is refused by a rate limit
    scenario:ratelimitonce  is refused by a rate limit that resets ``reset:N``
                        seconds from now (5 by default; ``reset:none`` sends
                        no reset time), with ``api_error_status`` 429; a
                        resumed session goes on as the default
    scenario:permission wants to run ``Bash`` (``rm -rf build``), which no rule
                        allows: with ``--permission-prompt-tool`` it calls that
                        MCP tool (``{tool_name, input, tool_use_id}``) and
                        obeys its ``{"behavior": "allow"|"deny"}`` answer
    scenario:budget     works ``turns:N`` turns (5 by default), each writing
                        turn-<k>.txt and costing ``cost:X`` dollars (0.02);
                        with ``--max-budget-usd`` it stops, as the CLI does,
                        once a turn took its spend past the budget, with an
                        error_max_budget_usd result; a resumed session goes on
                        from the turn after the last one it finished
    scenario:measure    reports the length and sha256 of the first message
    scenario:ask        calls ``ask_human`` of the ``agentvine`` MCP server its
                        ``--mcp-config`` names (started over stdio as the CLI
                        does, with the config's command, args and env), if
                        ``--allowedTools`` or the permission mode allows it,
                        and reports the answer
    (default)           one tool call, then success with usage and cost

With ``with:linger`` in the first message it also leaves a ``sleep`` running
in a session of its own (what a careless agent's background job does).

MCP servers are started when a tool of theirs is first called (the CLI starts
them at init; lazily here keeps the other scenarios fast), and a tool that no
permission rule allows is refused as ``-p`` mode refuses it: a ``tool_result``
with ``is_error``.
"""

import asyncio
import hashlib
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

COST_PER_TURN = 0.0123
USAGE = {"input_tokens": 100, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 30, "output_tokens": 50}


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def fail(message):
    # May run on the stdin thread: end the whole process, like the CLI does.
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(1)


def parse_args(argv):
    flags = {}
    rest = list(argv)
    while rest:
        arg = rest.pop(0)
        if arg in ("-p", "--print", "--verbose"):
            flags[arg] = True
        elif arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
            flags[name] = value
        elif arg == "--mcp-config":
            # Variadic, and may be given more than once.
            while rest and not rest[0].startswith("-"):
                flags.setdefault(arg, []).append(rest.pop(0))
        elif arg.startswith("--") and rest and not rest[0].startswith("-"):
            flags[arg] = rest.pop(0)
        else:
            flags[arg] = True
    return flags


def session_file(session_id):
    root = Path(os.environ.get("CLAUDE_CONFIG_DIR", Path.home() / ".claude"))
    project = re.sub(r"[^A-Za-z0-9]", "-", os.getcwd())
    return root / "projects" / project / f"{session_id}.jsonl"


class Replay:
    def __init__(self, session_id, resumed):
        self.session_id = session_id
        self.resumed = resumed
        self.inbox = queue.Queue()
        self.interrupt = threading.Event()
        self.cost = 0.0
        self.turns = 0
        self.flags = {}
        threading.Thread(target=self.read_stdin, daemon=True).start()

    def read_stdin(self):
        for line in sys.stdin:
            try:
                message = json.loads(line)
            except ValueError:
                fail(f"Error parsing streaming input line: {line.strip()}")
            if message.get("type") == "control_request":
                request = message.get("request") or {}
                request_id = message.get("request_id")
                if request.get("subtype") == "interrupt" and isinstance(request_id, str) and request_id:
                    self.interrupt.set()
                    emit(
                        {
                            "type": "control_response",
                            "response": {"subtype": "success", "request_id": request_id, "response": {}},
                        }
                    )
                else:
                    emit(
                        {
                            "type": "control_response",
                            "response": {"subtype": "error", "request_id": request_id, "error": "bad request"},
                        }
                    )
            elif message.get("type") == "user":
                body = message.get("message") or {}
                if body.get("role") != "user" or not isinstance(body.get("content"), str | list):
                    fail("Error: Expected message type 'user' with role 'user'")
                self.inbox.put(body["content"])
            else:
                fail(f"Error: Unexpected message type: {message.get('type')}")
        self.inbox.put(None)

    def save(self, role, text):
        path = session_file(self.session_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps({"role": role, "text": text}) + "\n")

    def assistant(self, content):
        emit(
            {
                "type": "assistant",
                "message": {
                    "id": f"msg_{uuid.uuid4().hex[:12]}",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-replay",
                    "content": content,
                    "stop_reason": None,
                    "usage": {"input_tokens": 10, "output_tokens": 5},
                },
                "parent_tool_use_id": None,
                "session_id": self.session_id,
            }
        )

    def result(self, subtype="success", text="", is_error=False, cost=COST_PER_TURN, **extra):
        self.turns += 1
        self.cost += cost
        result = {
            "type": "result",
            "subtype": subtype,
            "is_error": is_error,
            "duration_ms": 120,
            "duration_api_ms": 100,
            "num_turns": self.turns,
            "session_id": self.session_id,
            "total_cost_usd": round(self.cost, 6),
            "usage": USAGE,
        }
        if subtype == "success":
            result["result"] = text
        else:
            result["errors"] = [text]
        emit({**result, **extra})

    def run(self):
        emit(
            {
                "type": "system",
                "subtype": "init",
                "cwd": os.getcwd(),
                "session_id": self.session_id,
                "tools": ["Bash", "Read", "Edit"],
                "mcp_servers": [{"name": name, "status": "pending"} for name in mcp_servers(self.flags)],
                "model": "claude-replay",
                "permissionMode": "default",
                "apiKeySource": "none",
            }
        )
        first = True
        while True:
            content = self.inbox.get()
            if content is None:
                return 0
            text = content if isinstance(content, str) else json.dumps(content)
            self.save("user", text)
            if first:
                first = False
                code = self.first_turn(text)
                if code is not None:
                    return code
            else:
                self.assistant([{"type": "text", "text": f"Follow-up received: {text}"}])
                self.result(text=f"Follow-up received: {text}")

    def first_turn(self, prompt):
        scenario = (re.search(r"scenario:(\w+)", prompt) or [None, "default"])[1]
        if scenario == "budget":
            return self.budget_turns(prompt)
        if scenario == "measure":
            digest = hashlib.sha256(prompt.encode()).hexdigest()
            self.assistant([{"type": "text", "text": f"prompt {len(prompt)} chars sha256 {digest}"}])
            self.result(text="measured")
            return None
        if "with:linger" in prompt:
            subprocess.Popen(["sleep", "300"], start_new_session=True, stdin=subprocess.DEVNULL)
        refused = scenario == "ratelimit" or (scenario == "ratelimitonce" and not self.resumed)
        resets_at = 1900000000
        if scenario == "ratelimitonce":
            reset = (re.search(r"reset:(\w+)", prompt) or [None, "5"])[1]
            resets_at = None if reset == "none" else int(time.time()) + int(reset)
        info = {"status": "rejected" if refused else "allowed", "rateLimitType": "five_hour"}
        if resets_at is not None:
            info["resetsAt"] = resets_at
        emit({"type": "rate_limit_event", "rate_limit_info": info, "session_id": self.session_id})
        if refused:
            self.result(
                text=f"Claude AI usage limit reached|{resets_at}",
                is_error=True,
                **({"api_error_status": 429} if scenario == "ratelimitonce" else {}),
            )
            return 1
        if self.resumed:
            earlier = len(session_file(self.session_id).read_text().splitlines()) - 1
            self.assistant(
                [{"type": "text", "text": f"Resumed session {self.session_id} with {earlier} earlier messages"}]
            )
        if scenario == "crash":
            self.assistant([{"type": "text", "text": "about to crash"}])
            sys.stdout.write('{"type":"assistant","message":{"content":[{"type":"te')
            sys.stdout.flush()
            sys.stderr.write("fatal: replay crashed on purpose\n")
            os._exit(3)
        if scenario == "malformed":
            sys.stdout.write("this line is not json\n")
            sys.stdout.write('{"type":"assistant","message":\n')
            sys.stdout.write("[1, 2, 3]\n")
            # A protocol message bigger than any sane one (a runaway tool result).
            sys.stdout.write(json.dumps({"type": "assistant", "padding": "x" * 5_000_000}) + "\n")
            sys.stdout.flush()
        if scenario == "slow" and not self.resumed:
            for step in range(1, 600):
                if self.interrupt.is_set():
                    self.result(subtype="error_during_execution", text="interrupted by the user")
                    self.save("assistant", "interrupted")
                    return None
                self.assistant([{"type": "text", "text": f"working step {step}"}])
                time.sleep(0.05)
        tool_id = f"toolu_{uuid.uuid4().hex[:12]}"
        self.assistant([{"type": "text", "text": "Looking at the workspace."}])
        self.assistant([{"type": "tool_use", "id": tool_id, "name": "Bash", "input": {"command": "ls"}}])
        listing = "\n".join(sorted(p for p in os.listdir(".") if not p.startswith(".")))
        emit(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [{"tool_use_id": tool_id, "type": "tool_result", "content": listing, "is_error": False}],
                },
                "parent_tool_use_id": None,
                "session_id": self.session_id,
            }
        )
        if scenario == "ask":
            return self.ask_turn()
        if scenario == "permission":
            return self.permission_turn()
        if scenario == "error":
            self.turns = 2
            self.result(subtype="error_max_turns", text="Reached maximum number of turns (3)", is_error=True)
            return 1
        title = prompt.splitlines()[0]
        self.assistant([{"type": "text", "text": f"Done: {title}"}])
        self.save("assistant", f"Done: {title}")
        self.result(text=f"Done: {title}")
        return None

    def budget_turns(self, prompt):
        total = int((re.search(r"turns:(\d+)", prompt) or [None, "5"])[1])
        per_turn = float((re.search(r"cost:([\d.]+)", prompt) or [None, "0.02"])[1])
        limit = self.flags.get("--max-budget-usd")
        done = 0
        if self.resumed:
            lines = session_file(self.session_id).read_text().splitlines()
            done = sum(1 for line in lines if json.loads(line)["text"].startswith("finished turn "))
            self.assistant([{"type": "text", "text": f"Resumed session {self.session_id} after turn {done}"}])
        spent = 0.0
        for turn in range(done + 1, total + 1):
            Path(f"turn-{turn}.txt").write_text(f"turn {turn}\n")
            self.assistant([{"type": "text", "text": f"finished turn {turn}"}])
            self.save("assistant", f"finished turn {turn}")
            spent += per_turn
            if limit is not None and spent > float(limit) and turn < total:
                self.result(
                    subtype="error_max_budget_usd",
                    text=f"Reached maximum budget (${float(limit):.4f})",
                    is_error=True,
                    cost=spent,
                )
                return 1
        self.result(text=f"Done after {total} turns", cost=spent)
        return None

    def ask_turn(self):
        name = "mcp__agentvine__ask_human"
        tool_id = f"toolu_{uuid.uuid4().hex[:12]}"
        question = {"question": "Which database should I use?"}
        self.assistant([{"type": "tool_use", "id": tool_id, "name": name, "input": question}])
        if not tool_allowed(name, self.flags):
            text, is_error = f"Claude requested permissions to use {name}, but you haven't granted it yet.", True
        else:
            try:
                text, is_error = asyncio.run(call_mcp_tool(self.flags, "agentvine", "ask_human", question)), False
            except LookupError as exc:
                text, is_error = f"Error: {exc}", True
        emit(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [{"tool_use_id": tool_id, "type": "tool_result", "content": text, "is_error": is_error}],
                },
                "parent_tool_use_id": None,
                "session_id": self.session_id,
            }
        )
        reply = f"Could not ask: {text}" if is_error else f"The human said: {text}"
        self.assistant([{"type": "text", "text": reply}])
        self.result(text=reply)
        return None

    def permission_turn(self):
        tool_id = f"toolu_{uuid.uuid4().hex[:12]}"
        command = {"command": "rm -rf build"}
        self.assistant([{"type": "tool_use", "id": tool_id, "name": "Bash", "input": command}])
        prompt_tool = self.flags.get("--permission-prompt-tool", "")
        decision = {
            "behavior": "deny",
            "message": "Claude requested permissions to use Bash, but you haven't granted it yet.",
        }
        if not tool_allowed("Bash", self.flags) and prompt_tool.startswith("mcp__"):
            _, server, tool = prompt_tool.split("__", 2)
            arguments = {"tool_name": "Bash", "input": command, "tool_use_id": tool_id}
            decision = json.loads(asyncio.run(call_mcp_tool(self.flags, server, tool, arguments)))
        allowed = decision.get("behavior") == "allow"
        text = f"ran {decision['updatedInput']['command']}" if allowed else decision.get("message", "denied")
        emit(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [
                        {"tool_use_id": tool_id, "type": "tool_result", "content": text, "is_error": not allowed}
                    ],
                },
                "parent_tool_use_id": None,
                "session_id": self.session_id,
            }
        )
        reply = f"Permission {'granted' if allowed else 'refused'}: {text}"
        self.assistant([{"type": "text", "text": reply}])
        self.result(text=reply)
        return None


def tool_allowed(name, flags):
    if flags.get("--permission-mode") == "bypassPermissions" or flags.get("--dangerously-skip-permissions"):
        return True
    rules = re.split(r"[,\s]+", str(flags.get("--allowedTools") or flags.get("--allowed-tools") or ""))
    server = "__".join(name.split("__")[:2])
    return any(rule in (name, server, f"{server}__*") for rule in rules if rule)


def mcp_servers(flags):
    """The servers of every --mcp-config (a file path or a JSON string)."""
    servers = {}
    for value in flags.get("--mcp-config", []):
        text = Path(value).read_text() if not value.lstrip().startswith("{") else value
        servers.update(json.loads(text).get("mcpServers") or {})
    return servers


async def call_mcp_tool(flags, server_name, tool, arguments):
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    spec = mcp_servers(flags).get(server_name)
    if spec is None:
        raise LookupError(f"No such tool available: mcp__{server_name}__{tool}")
    params = StdioServerParameters(
        command=spec["command"], args=spec.get("args", []), env={**os.environ, **spec.get("env", {})}
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        names = [t.name for t in (await session.list_tools()).tools]
        if tool not in names:
            raise LookupError(f"No such tool available: mcp__{server_name}__{tool}")
        result = await session.call_tool(tool, arguments)
        return "\n".join(block.text for block in result.content if getattr(block, "type", "") == "text")


def main():
    flags = parse_args(sys.argv[1:])
    if not (flags.get("-p") or flags.get("--print")):
        fail("Error: this replay only implements print mode (-p)")
    if flags.get("--output-format") != "stream-json" or flags.get("--input-format") != "stream-json":
        fail("Error: --input-format=stream-json requires output-format=stream-json.")
    if not flags.get("--verbose"):
        fail("Error: When using --print, --output-format=stream-json requires --verbose")
    if "--resume" in flags:
        session_id = flags["--resume"]
        if not session_file(session_id).exists():
            fail(f"No conversation found with session ID: {session_id}")
        resumed = True
    else:
        session_id = flags.get("--session-id") or str(uuid.uuid4())
        try:
            uuid.UUID(session_id)
        except ValueError:
            fail("Error: Invalid session ID. Must be a valid UUID.")
        resumed = False
    replay = Replay(session_id, resumed)
    replay.flags = flags
    sys.exit(replay.run())


if __name__ == "__main__":
    main()
