"""A real agent subprocess with bounded pipes.

Shared by every executor that runs a CLI (command, claude, codex). The agent's
stdout is read by a thread into a buffer bounded in characters: when the
runner falls behind, the agent blocks on its pipe instead of growing the
worker's memory, however much it prints. stderr (when kept apart from stdout) is read into a short
tail for error messages. Writes to stdin are serialised by a lock because
follow-up messages and interrupts come from other threads than the reader.
"""

import collections
import io
import os
import shutil
import signal
import subprocess
import threading
import uuid

from workers_app.executors.base import ExecutorConfigError
from workers_app.executors.environment import SecretMask

# Characters waiting between the reader thread and the executor. Much more
# than one output flush (64K), so a fast agent is read in big batches.
PIPE_BUFFER_CHARS = 4 * 1024 * 1024
MAX_LINE_CHARS = 64 * 1024
STDERR_TAIL_LINES = 40

EOF = object()
# Put in the queue in place of a line that exceeded the cap in JSON mode: the
# rest of that line was skipped, so it cannot be parsed.
OVERSIZED = object()

ERR_BINARY_NOT_FOUND = "agent command not found: {binary}"

# Every process an agent starts inherits this variable, with a value of its
# run's own: what a new session (an MCP client starts its servers so) or a
# double fork hides from the process group, its environment still tells.
RUN_MARKER = "AGENTVINE_RUN_MARKER"


# Sandbox programs that run the agent as their child (executors/sandbox.py).
SANDBOX_MONITORS = ("bwrap",)


def _group_members(pgid, *, spare=()):
    """PIDs in process group ``pgid`` whose program is not one of ``spare``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and comm not in spare:
            members.append(int(entry))
    return members


def marked_processes(marker):
    """PIDs of the processes whose environment carries ``RUN_MARKER=marker``
    (those of this user, or every one for root: /proc says no otherwise)."""
    needle = f"{RUN_MARKER}={marker}".encode()
    own = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == own:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if needle in environ.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def marked_processes_kill(marker):
    """SIGKILL every process of the run, until none is left (one may fork
    while it is being found)."""
    for _ in range(10):
        pids = marked_processes(marker)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def require_binary(binary, path=None):
    """Fail with one sentence, not a traceback, when the agent is not installed."""
    if shutil.which(binary, path=path) is None and not os.path.isfile(binary):
        raise ExecutorConfigError(ERR_BINARY_NOT_FOUND.format(binary=binary))


class LineBuffer:
    """Lines from the reader thread to the executor, at most ``max_chars`` waiting.

    A single line larger than the budget still passes (alone), so the reader
    never deadlocks; the caps on line length bound that case too.
    """

    def __init__(self, max_chars=PIPE_BUFFER_CHARS):
        self._items = collections.deque()
        self._chars = 0
        self._max_chars = max_chars
        self._changed = threading.Condition()
        self._discarding = False
        self._poked = False

    def put(self, item):
        size = len(item) if isinstance(item, str) else 0
        with self._changed:
            if self._discarding and item is not EOF:
                return
            while self._items and self._chars + size > self._max_chars and not self._discarding:
                self._changed.wait()
            self._items.append(item)
            self._chars += size
            self._changed.notify_all()

    def take(self, *, timeout, limit):
        """Up to ``limit`` items in order, ending at EOF; [] if none came in ``timeout``."""
        with self._changed:
            if not self._items and not self._poked:
                self._changed.wait(timeout)
            self._poked = False
            batch = []
            while self._items and len(batch) < limit:
                item = self._items.popleft()
                batch.append(item)
                if item is EOF:
                    break
                if isinstance(item, str):
                    self._chars -= len(item)
            self._changed.notify_all()
            return batch

    def poke(self):
        """Make a waiting :meth:`take` return now (empty if nothing came)."""
        with self._changed:
            self._poked = True
            self._changed.notify_all()

    def discard_new(self):
        """Drop lines from now on (EOF still passes): after a kill nobody may
        be reading, and a reader thread blocked on a full buffer must end."""
        with self._changed:
            self._discarding = True
            self._changed.notify_all()

    @property
    def chars(self):
        return self._chars


class AgentProcess:
    """``argv`` run in ``cwd`` in its own process group.

    ``split_lines``: a line longer than the cap is handed over in pieces
    (plain text output). Otherwise the oversized line is dropped and
    :data:`OVERSIZED` is queued (JSON protocols, where a piece is garbage).
    """

    def __init__(
        self,
        argv,
        *,
        cwd,
        env,
        mask=None,
        stdin=False,
        merge_stderr=False,
        split_lines=True,
        max_line_chars=MAX_LINE_CHARS,
    ):
        require_binary(argv[0], env.get("PATH"))
        self._sandboxed = os.path.basename(argv[0]) in SANDBOX_MONITORS
        # Secret values are replaced here, before any line leaves this
        # object: nothing downstream (buffer, database, events, error
        # messages) ever holds them.
        self._mask = mask or SecretMask()
        self.lines = LineBuffer()
        self.stderr_tail = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._split_lines = split_lines
        self._max_line_chars = max_line_chars
        self._stdin_lock = threading.Lock()
        # Usually chosen with the environment (executors/environment.py), so
        # files written for the agent (an MCP config) can carry it too.
        self.marker = env.get(RUN_MARKER) or uuid.uuid4().hex
        env = {**env, RUN_MARKER: self.marker}
        try:
            self.popen = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                # The whole environment: the caller built it from an
                # allowlist (executors/environment.py); nothing of the
                # worker's own environment is inherited.
                env=env,
                # Its own process group, so signals reach the agent's children too.
                start_new_session=True,
            )
        except OSError as exc:
            raise ExecutorConfigError(f"cannot start agent {argv[0]}: {exc.strerror or exc}") from exc
        self._readers = [threading.Thread(target=self._read_stdout, name="agent-stdout", daemon=True)]
        if not merge_stderr:
            self._readers.append(threading.Thread(target=self._read_stderr, name="agent-stderr", daemon=True))
        for reader in self._readers:
            reader.start()
        threading.Thread(target=self._end_with_the_agent, name="agent-reaper", daemon=True).start()

    def _end_with_the_agent(self):
        """Once the agent has exited, whatever it started dies too: a job
        left behind would keep running, and one holding the agent's stdout
        would keep the run from ever seeing its end."""
        self.popen.wait()
        marked_processes_kill(self.marker)

    @property
    def pid(self):
        return self.popen.pid

    def _read_stdout(self):
        stream = io.TextIOWrapper(self.popen.stdout, encoding="utf-8", errors="replace", newline="")
        limit = self._max_line_chars
        mask = self._mask
        # The end of a line cut at the cap, held until the rest of the line
        # comes: a secret may run on into the next piece.
        held = ""
        try:
            while True:
                line = stream.readline(limit)
                if not line:
                    break
                if self._split_lines or line.endswith("\n") or len(line) < limit:
                    text = line
                    if mask:
                        text, held = mask(held + line), ""
                        if not line.endswith("\n") and len(line) >= limit and mask.overlap:
                            text, held = text[: -mask.overlap], text[-mask.overlap :]
                    if text:
                        self.lines.put(text)
                    continue
                # Skip to the end of the oversized line without keeping it.
                while line and not line.endswith("\n"):
                    line = stream.readline(limit)
                self.lines.put(OVERSIZED)
        except (OSError, ValueError):
            pass
        finally:
            if held:
                self.lines.put(held)
            self.lines.put(EOF)

    def _read_stderr(self):
        stream = io.TextIOWrapper(self.popen.stderr, encoding="utf-8", errors="replace")
        try:
            for line in iter(lambda: stream.readline(4096), ""):
                self.stderr_tail.append(self._mask(line.rstrip("\n")))
        except (OSError, ValueError):
            pass

    def stderr_text(self, lines=10):
        return "\n".join(list(self.stderr_tail)[-lines:])

    def write_line(self, text):
        """Write one line to the agent's stdin; False when it is closed."""
        with self._stdin_lock:
            stdin = self.popen.stdin
            if stdin is None or stdin.closed or self.popen.poll() is not None:
                return False
            try:
                stdin.write(text.encode("utf-8") + b"\n")
                stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                return False
            return True

    def close_stdin(self):
        with self._stdin_lock:
            stdin = self.popen.stdin
            if stdin is not None and not stdin.closed:
                try:
                    stdin.close()
                except (BrokenPipeError, OSError):
                    pass

    @property
    def stdin_open(self):
        return self.popen.stdin is not None and not self.popen.stdin.closed

    def signal(self, sig):
        if self.popen.poll() is not None:
            return
        if self._sandboxed and sig != signal.SIGKILL:
            # bwrap dies of SIGINT/SIGTERM and takes the agent with it
            # (--die-with-parent) before it could stop cooperatively: signal
            # the agent's processes in the group, not the sandbox's monitors.
            for pid in _group_members(self.popen.pid, spare=SANDBOX_MONITORS):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def interrupt(self):
        self.signal(signal.SIGINT)

    def kill(self):
        self.signal(signal.SIGKILL)
        marked_processes_kill(self.marker)
        self.lines.discard_new()

    def batches(self, limit=500):
        """Yield lists of stdout lines until EOF; an empty list after a quarter
        second of silence, so the caller can tick."""
        while True:
            batch = self.lines.take(timeout=0.25, limit=limit)
            if batch and batch[-1] is EOF:
                if len(batch) > 1:
                    yield batch[:-1]
                return
            yield batch

    def wait(self):
        code = self.popen.wait()
        # Let the readers reach EOF so the stderr tail used in error messages
        # is complete; bounded, since a grandchild may still hold the pipes.
        for reader in self._readers:
            reader.join(timeout=2)
        return code
