"""``agentvine shell``: an interactive prompt that keeps working offline.

A background thread syncs the outbox whenever the server is reachable and
probes it with exponential backoff and jitter while it is not; the prompt
shows ``agentvine [OFFLINE: N queued]>`` until it is back. With standard
input that is not a terminal the same commands run line by line (scripts).
"""

import os
import random
import shlex
import sys
import threading
import time

import click

from agentvine_cli import operations
from agentvine_cli.cli import Failure, build, cli, report, show_outbox, submit, sync_now
from agentvine_cli.client import ApiError, Client, ServerUnavailable
from agentvine_cli.config import data_dir
from agentvine_cli.outbox import PENDING, Outbox, outbox_sync

PROMPT_ONLINE = "agentvine> "
PROMPT_OFFLINE = "agentvine [OFFLINE: {queued} queued]> "
HISTORY_FILE = "shell_history"
# While online the server is probed this often (to notice it going away).
ONLINE_PROBE_SECONDS = float(os.environ.get("AGENTVINE_SHELL_PROBE_SECONDS", "5"))
BACKOFF_BASE_SECONDS = float(os.environ.get("AGENTVINE_SHELL_BACKOFF_BASE", "0.5"))
BACKOFF_MAX_SECONDS = float(os.environ.get("AGENTVINE_SHELL_BACKOFF_MAX", "30"))

HELP = """commands: any agentvine command without the word agentvine (tasks list, send …, status …)
  !TARGET message   send to an agent session, a worker name or a task id
  /queue            what waits in the outbox, and what failed
  /sync             sync now
  /quit             leave (also Ctrl-D)"""
MSG_WENT_OFFLINE = "server unreachable: writes are queued until it is back"
MSG_BACK_ONLINE = "server is back"
MSG_BACK_SYNCED = "server is back: synced {sent} queued entries, {failed} failed"
ERR_BANG_USAGE = "usage: !TARGET message"
ERR_UNKNOWN_META = "unknown command {command}: try /queue, /sync, /quit or help"


def backoff_delay(failures, *, base=BACKOFF_BASE_SECONDS, cap=BACKOFF_MAX_SECONDS):
    """Exponential backoff with jitter: many clients coming back don't knock at once."""
    ceiling = min(cap, base * (2 ** min(failures, 20)))
    return random.uniform(ceiling / 2, ceiling)


class Connectivity:
    """What the prompt shows: is the server reachable, how much is queued."""

    def __init__(self):
        self.online = None
        self.queued = 0
        self.lock = threading.Lock()

    def update(self, *, online=None, queued=None):
        with self.lock:
            if online is not None:
                self.online = online
            if queued is not None:
                self.queued = queued

    def prompt(self):
        with self.lock:
            if self.online is False:
                return PROMPT_OFFLINE.format(queued=self.queued)
            return PROMPT_ONLINE


class BackgroundSync(threading.Thread):
    """Syncs the outbox when reachable, backs off with jitter while not."""

    def __init__(self, server, token, state, notify):
        super().__init__(name="agentvine-sync", daemon=True)
        self.server, self.token, self.state, self.notify = server, token, state, notify
        self.stop = threading.Event()
        self.wake = threading.Event()

    def run(self):
        # Its own HTTP session and SQLite connection: neither is shared across threads.
        client, outbox = Client(self.server, self.token), Outbox()
        failures = 0
        try:
            while not self.stop.is_set():
                was_online = self.state.online
                online, result = self.attempt(client, outbox)
                self.state.update(online=online, queued=outbox.count(PENDING))
                if online != was_online and (was_online is not None or not online):
                    self.announce(online, result)
                failures = 0 if online else failures + 1
                delay = ONLINE_PROBE_SECONDS if online else backoff_delay(failures)
                self.wake.wait(delay)
                self.wake.clear()
        finally:
            outbox.close()
            client.close()

    def announce(self, online, result):
        if not online:
            self.notify(MSG_WENT_OFFLINE)
        elif result is not None and (result.sent or result.failed):
            self.notify(MSG_BACK_SYNCED.format(sent=result.sent, failed=result.failed))
        else:
            self.notify(MSG_BACK_ONLINE)

    def attempt(self, client, outbox):
        """(reachable?, what the sync did)."""
        result = None
        try:
            result = outbox_sync(outbox, client, wait=False)
            if result.unavailable is not None:
                return False, result
            if not (result.sent or result.failed):
                client.get("queue/")
            return True, result
        except ServerUnavailable:
            return False, result
        except ApiError:
            # Reachable, even if it refuses this token: not offline.
            return True, result


class Shell:
    def __init__(self, client, state):
        self.client, self.state = client, state
        self.outbox = Outbox()
        self.retry_at = 0.0

    def refresh(self):
        self.state.update(queued=self.outbox.count(PENDING))

    def handle(self, line):
        """Run one line; False means leave."""
        line = line.strip()
        if not line or line.startswith("#"):
            return True
        try:
            if line.startswith("!"):
                self.bang(line[1:])
            elif line.startswith("/"):
                return self.meta(line)
            elif line in ("help", "?"):
                click.echo(HELP)
            elif line in ("exit", "quit"):
                return False
            else:
                self.command(line)
        except Failure as exc:
            exc.show()
        finally:
            self.refresh()
        return True

    def bang(self, rest):
        target, _, text = rest.partition(" ")
        if not target or not text.strip():
            raise Failure(ERR_BANG_USAGE)
        operation = build(operations.message_send, to=target, text=text.strip())
        # While known to be offline, don't wait on a dead server for every
        # line; the background sync (or the next retry time) takes it.
        try_now = self.state.online is not False or time.monotonic() >= self.retry_at
        entry, data = submit(operation, client=self.client, outbox=self.outbox, try_now=try_now)
        if data is None and try_now:
            self.state.update(online=False)
            self.retry_at = time.monotonic() + BACKOFF_BASE_SECONDS
        elif data is not None:
            self.state.update(online=True)
        report(entry, data, lambda message: f"sent to {message['conversation_id']}")

    def meta(self, line):
        command = line.split()[0]
        if command in ("/quit", "/exit"):
            return False
        if command == "/queue":
            show_outbox(self.outbox)
        elif command == "/sync":
            result = sync_now(self.outbox, self.client, quiet=True)
            pending = self.outbox.count(PENDING)
            if result.unavailable is not None:
                self.state.update(online=False)
                raise Failure(f"server offline ({result.unavailable.reason}): {pending} entries still queued")
            self.state.update(online=True)
            click.echo(f"synced {result.sent} entries, {result.failed} failed, {pending} pending")
        else:
            raise Failure(ERR_UNKNOWN_META.format(command=command))
        return True

    def command(self, line):
        try:
            args = shlex.split(line)
        except ValueError as exc:
            raise Failure(exc) from None
        if args and args[0] == "agentvine":
            args = args[1:]
        if args and args[0] == "shell":
            raise Failure("already in the shell")
        try:
            cli.main(args, prog_name="agentvine", standalone_mode=False)
        except click.ClickException as exc:
            exc.show()
        except click.exceptions.Abort:
            pass
        except SystemExit:
            pass


def shell_run(client):
    state = Connectivity()
    shell = Shell(client, state)
    shell.refresh()
    if not sys.stdin.isatty():
        for line in sys.stdin:
            if not shell.handle(line):
                break
        shell.outbox.close()
        return 0

    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.patch_stdout import patch_stdout

    directory = data_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    session = PromptSession(history=FileHistory(str(directory / HISTORY_FILE)))
    click.echo("agentvine shell: type help for commands, Ctrl-D to leave")
    # Under patch_stdout a line printed by the background thread appears
    # above the prompt, which is then redrawn with the new state.
    with patch_stdout(raw=True):
        return _prompt_loop(session, shell, state, client)


def _prompt_loop(session, shell, state, client):
    background = BackgroundSync(client.server, client.token, state, notify=lambda text: print(text, flush=True))
    background.start()
    try:
        while True:
            try:
                line = session.prompt(state.prompt, refresh_interval=0.3)
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            if not shell.handle(line):
                break
            background.wake.set()
    finally:
        background.stop.set()
        background.wake.set()
        background.join(timeout=5)
        shell.outbox.close()
    return 0
