"""Common ground for CLI agents that speak JSON lines on stdout (claude, codex).

Subclasses build the command line, translate each protocol message into
:class:`ExecutorEvent` s and decide the outcome from what they saw and the
exit code. A line that is not JSON is kept in the output (it is usually the
agent telling something on the wrong stream) and never ends the run.
"""

import json

from workers_app.executors.base import TICK, Executor, ExecutorEvent
from workers_app.executors.environment import agent_environment
from workers_app.executors.process import OVERSIZED, AgentProcess
from workers_app.executors.sandbox import sandboxed

# A single protocol message can carry a whole file (a tool result); bigger
# lines are skipped rather than buffered.
MAX_JSON_LINE_CHARS = 4 * 1024 * 1024
# How much of a tool's result goes into the execution's log.
TOOL_RESULT_LOG_CHARS = 2000

MSG_UNPARSED = "[{agent}] unparsed output: {line}\n"
MSG_OVERSIZED = "[{agent}] skipped a protocol message over {limit} characters\n"


def binary_argv(profile, default):
    """A profile's ``binary`` is a path or an argv prefix (an interpreter and a script)."""
    binary = profile.get("binary") or default
    return list(binary) if isinstance(binary, list) else [binary]


def clip(text, limit=TOOL_RESULT_LOG_CHARS):
    text = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"


class JsonLinesExecutor(Executor):
    agent_name = "agent"

    def __init__(self, context):
        super().__init__(context)
        self.process = None
        self.interrupted = False

    # --- subclass hooks ---------------------------------------------------
    def argv(self):
        raise NotImplementedError

    def on_start(self):
        """Write the first input (the prompt) once the process runs."""

    def write_agent_files(self, env):
        """Write files the command line names for the agent whose environment
        is ``env`` (after the sandbox decided it); returns their paths, which
        are removed when the run ends."""
        return []

    def translate(self, message):
        """Yield ExecutorEvents for one decoded protocol message."""
        raise NotImplementedError

    def outcome(self, exit_code):
        """The final ``completed`` or ``error`` event."""
        raise NotImplementedError

    # --- the loop -----------------------------------------------------------
    def events(self):
        environment = agent_environment(self.context)
        sandbox = sandboxed(self.argv(), context=self.context, env=environment.variables)
        written = []
        try:
            written = self.write_agent_files(sandbox.env)
            self.process = AgentProcess(
                sandbox.argv,
                cwd=self.context.workspace,
                env=sandbox.env,
                mask=environment.mask,
                stdin=True,
                split_lines=False,
                max_line_chars=MAX_JSON_LINE_CHARS,
            )
            self.on_start()
            for batch in self.process.batches(limit=200):
                if not batch:
                    yield TICK
                for line in batch:
                    yield from self._decode(line)
            exit_code = self.process.wait()
        finally:
            sandbox.close()
            for path in written:
                path.unlink(missing_ok=True)
        yield self.outcome(exit_code)

    def _decode(self, line):
        if line is OVERSIZED:
            yield ExecutorEvent("output", MSG_OVERSIZED.format(agent=self.agent_name, limit=MAX_JSON_LINE_CHARS))
            return
        stripped = line.strip()
        if not stripped:
            return
        try:
            message = json.loads(stripped)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            yield ExecutorEvent("output", MSG_UNPARSED.format(agent=self.agent_name, line=clip(stripped, 500)))
            return
        yield from self.translate(message)

    def poke(self):
        if self.process:
            self.process.lines.poke()

    def stderr_suffix(self):
        tail = self.process.stderr_text() if self.process else ""
        return f"\n{tail}" if tail else ""

    def interrupt(self):
        self.interrupted = True
        if self.process:
            self.process.interrupt()

    def kill(self):
        if self.process:
            self.process.kill()
