"""Run any CLI agent from a command template, as a real subprocess.

The general fallback: aider, gemini, custom scripts. Its output is plain
text; the exit code decides success.

The prompt reaches the agent as a file: ``{prompt_file}`` in the template
(and ``AGENTVINE_PROMPT_FILE`` in its environment) names it, mode 0600 in the
agent's home, removed when the run ends. ``{prompt}`` puts the text itself on
the command line, where every user of the host can read it (``ps``) and
Linux allows 128 KiB per argument: a longer prompt fails at once with a
sentence saying to use ``{prompt_file}``.
"""

import os
import signal
import sys
from pathlib import Path

from workers_app.executors.base import TICK, Executor, ExecutorConfigError, ExecutorEvent
from workers_app.executors.environment import agent_environment
from workers_app.executors.process import AgentProcess
from workers_app.executors.sandbox import sandboxed

# Linux's MAX_ARG_STRLEN (32 pages), counting the terminating NUL.
MAX_ARGUMENT_BYTES = 128 * 1024 - 1
ERR_PROMPT_ARGUMENT = (
    "the prompt ({size} bytes) is too long for a command-line argument (128 KiB); "
    "use {{prompt_file}} in the profile's command instead of {{prompt}}"
)


def prompt_file_path(context):
    return Path(context.home) / ".agentvine" / f"prompt-{context.work_order_id}.txt"


def prompt_file_write(context):
    path = prompt_file_path(context)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(context.prompt)
    return path


def render_command(template, context):
    """Substitute placeholders argument by argument; no shell is involved."""
    if any("{prompt}" in part for part in template) and len(context.prompt.encode()) > MAX_ARGUMENT_BYTES:
        raise ExecutorConfigError(ERR_PROMPT_ARGUMENT.format(size=len(context.prompt.encode())))
    values = {
        "prompt": context.prompt,
        "prompt_file": str(prompt_file_path(context)) if context.home is not None else "",
        "workspace": str(context.workspace),
        "task_id": context.task_id,
        "work_order_id": context.work_order_id,
        "session_id": context.session_id,
        "python": sys.executable,
    }
    try:
        return [part.format(**values) for part in template]
    except (KeyError, IndexError, ValueError) as exc:
        raise ExecutorConfigError(f"bad command template placeholder: {exc}") from exc


class CommandExecutor(Executor):
    def __init__(self, context):
        super().__init__(context)
        self.process = None
        self.sandbox = None
        self.prompt_file = None

    def _start(self):
        template = self.context.profile.get("command")
        if not template or not isinstance(template, list):
            raise ExecutorConfigError("executor profile has no command list")
        argv = render_command(template, self.context) + list(self.context.extra_args)
        environment = agent_environment(self.context)
        if self.context.home is not None:
            self.prompt_file = prompt_file_write(self.context)
            environment.variables["AGENTVINE_PROMPT_FILE"] = str(self.prompt_file)
        self.sandbox = sandboxed(argv, context=self.context, env=environment.variables)
        try:
            self.process = AgentProcess(
                self.sandbox.argv,
                cwd=self.context.workspace,
                env=self.sandbox.env,
                mask=environment.mask,
                merge_stderr=True,
            )
        except BaseException:
            self.sandbox.close()
            raise

    def events(self):
        try:
            self._start()
            for batch in self.process.batches():
                yield ExecutorEvent("output", "".join(batch)) if batch else TICK
            code = self.process.wait()
        finally:
            if self.sandbox is not None:
                self.sandbox.close()
            if self.prompt_file is not None:
                self.prompt_file.unlink(missing_ok=True)
        if code == 0:
            yield ExecutorEvent("completed", data={"exit_code": 0})
        else:
            yield ExecutorEvent("error", f"agent exited with code {code}", data={"exit_code": code})

    def poke(self):
        if self.process:
            self.process.lines.poke()

    def interrupt(self):
        if self.process:
            self.process.interrupt()

    def terminate(self):
        if self.process:
            self.process.signal(signal.SIGTERM)

    def kill(self):
        if self.process:
            self.process.kill()
