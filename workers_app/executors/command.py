"""Run any CLI agent from a command template, as a real subprocess."""

import io
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading

from workers_app.executors.base import TICK, Executor, ExecutorConfigError, ExecutorEvent

# The reader thread hands lines over through a bounded queue: a chatty agent
# blocks on its pipe instead of growing the worker's memory.
_PIPE_QUEUE_LINES = 2000
_MAX_LINE_CHARS = 64 * 1024
_EOF = object()


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
        self._lines = queue.Queue(maxsize=_PIPE_QUEUE_LINES)

    def _start(self):
        template = self.context.profile.get("command")
        if not template or not isinstance(template, list):
            raise ExecutorConfigError("executor profile has no command list")
        argv = render_command(template, self.context)
        if shutil.which(argv[0]) is None and not os.path.isfile(argv[0]):
            raise ExecutorConfigError(f"agent command not found: {argv[0]}")
        env = {**os.environ, **self.context.env, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            argv,
            cwd=self.context.workspace,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            # Its own process group, so interrupt and kill reach the agent's
            # children too.
            start_new_session=True,
        )
        threading.Thread(target=self._read, name="agentvine-agent-stdout", daemon=True).start()

    def _read(self):
        stream = io.TextIOWrapper(self.process.stdout, encoding="utf-8", errors="replace", newline="")
        try:
            while True:
                line = stream.readline(_MAX_LINE_CHARS)
                if not line:
                    break
                self._lines.put(line)
        finally:
            self._lines.put(_EOF)

    def events(self):
        self._start()
        while True:
            try:
                item = self._lines.get(timeout=0.25)
            except queue.Empty:
                yield TICK
                continue
            if item is _EOF:
                break
            # Drain what is already waiting so a fast agent yields big pieces.
            parts = [item]
            while len(parts) < 500:
                try:
                    more = self._lines.get_nowait()
                except queue.Empty:
                    break
                if more is _EOF:
                    self._lines.put(_EOF)
                    break
                parts.append(more)
            yield ExecutorEvent("output", "".join(parts))
        code = self.process.wait()
        if code == 0:
            yield ExecutorEvent("completed", data={"exit_code": 0})
        else:
            yield ExecutorEvent("error", f"agent exited with code {code}", data={"exit_code": code})

    def _signal(self, sig):
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def interrupt(self):
        self._signal(signal.SIGINT)

    def terminate(self):
        self._signal(signal.SIGTERM)

    def kill(self):
        self._signal(signal.SIGKILL)
