"""Run any CLI agent from a command template, as a real subprocess.

The general fallback: aider, gemini, custom scripts. Its output is plain
text; the exit code decides success.
"""

import signal
import sys

from workers_app.executors.base import TICK, Executor, ExecutorConfigError, ExecutorEvent
from workers_app.executors.environment import agent_environment
from workers_app.executors.process import AgentProcess
from workers_app.executors.sandbox import sandboxed


def render_command(template, context):
    """Substitute placeholders argument by argument; no shell is involved."""
    values = {
        "prompt": context.prompt,
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

    def _start(self):
        template = self.context.profile.get("command")
        if not template or not isinstance(template, list):
            raise ExecutorConfigError("executor profile has no command list")
        argv = render_command(template, self.context) + list(self.context.extra_args)
        environment = agent_environment(self.context)
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
        self._start()
        try:
            for batch in self.process.batches():
                yield ExecutorEvent("output", "".join(batch)) if batch else TICK
            code = self.process.wait()
        finally:
            self.sandbox.close()
        if code == 0:
            yield ExecutorEvent("completed", data={"exit_code": 0})
        else:
            yield ExecutorEvent("error", f"agent exited with code {code}", data={"exit_code": code})

    def interrupt(self):
        if self.process:
            self.process.interrupt()

    def terminate(self):
        if self.process:
            self.process.signal(signal.SIGTERM)

    def kill(self):
        if self.process:
            self.process.kill()
