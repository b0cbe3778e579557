"""The agent's side of asking a human: a small stdlib-only HTTP client.

Used by the ``agentvine-ask`` command and the MCP server that run inside an
agent's environment, so it imports nothing from Django. It reads
``AGENTVINE_API_URL`` and ``AGENTVINE_TOKEN`` (a per-work-order secret the
runner puts in the agent's environment), posts the question and long-polls
until a person answers. Network blips are retried, and so is a 503 (the
server is restarting or its database is away: it says so with Retry-After,
and the question waits in Postgres meanwhile); a closed work order ends the
wait with :class:`AskClosed`.

A server never reached at all is another matter: a wrong
``AGENTVINE_API_URL`` would be retried for ever while the task shows "In
progress". Until the client has had one answer from the server, connection
errors end it after ``AGENTVINE_ASK_CONNECT_SECONDS`` with
:class:`AskUnreachable`, whose one-line reason also goes to the file
``AGENTVINE_ASK_REPORT`` names: the runner fails the run with it. Once the
server has answered, a refused connection is a restart, waited out as before.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

POLL_SECONDS = 25
RETRY_SECONDS = 2.0
# A server's Retry-After is honoured up to this many seconds.
MAX_RETRY_AFTER_SECONDS = 30.0
# Statuses that mean "not now, nothing was done": ask again later. A gateway
# timeout may come after the server did the work: only a read is repeated then.
UNAVAILABLE_STATUSES = frozenset({502, 503})
UNAVAILABLE_STATUSES_FOR_READS = UNAVAILABLE_STATUSES | {504}
CONNECT_SECONDS = 30.0
ERR_UNREACHABLE = "cannot reach AgentVine at {url} for {seconds:g} s; is AGENTVINE_API_URL right?"


class AskError(Exception):
    """The question could not be asked (configuration, authentication)."""


class AskClosed(AskError):
    """The work order ended before anyone answered."""


class AskUnreachable(AskError):
    """The server was never reached within AGENTVINE_ASK_CONNECT_SECONDS."""


def _connect_seconds():
    try:
        return max(float(os.environ.get("AGENTVINE_ASK_CONNECT_SECONDS", CONNECT_SECONDS)), 0.0)
    except ValueError:
        return CONNECT_SECONDS


def _report_unreachable(reason):
    """One line for the agent's output (stderr) and for the runner (the report file)."""
    print(f"agentvine: {reason}", file=sys.stderr, flush=True)
    path = os.environ.get("AGENTVINE_ASK_REPORT")
    if not path:
        return
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "a") as report:
            report.write(reason + "\n")
    except OSError:
        pass


class _Unavailable(Exception):
    """The server answered but cannot serve now (restarting, database away)."""

    def __init__(self, status, payload, retry_after):
        super().__init__(status)
        self.status = status
        self.detail = (payload.get("detail") if isinstance(payload, dict) else None) or payload
        try:
            seconds = float(retry_after)
        except (TypeError, ValueError):
            seconds = RETRY_SECONDS
        self.retry_after = min(max(seconds, 0.1), MAX_RETRY_AFTER_SECONDS)


class AgentVineClient:
    def __init__(self, api_url=None, token=None):
        self.api_url = (api_url or os.environ.get("AGENTVINE_API_URL", "")).rstrip("/")
        self.token = token or os.environ.get("AGENTVINE_TOKEN", "")
        if not self.api_url or not self.token:
            raise AskError("AGENTVINE_API_URL and AGENTVINE_TOKEN must be set (run inside an AgentVine agent)")
        self.connect_seconds = _connect_seconds()
        self.reached = False

    def _request(self, method, path, body=None, timeout=POLL_SECONDS + 10):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.api_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Agent {self.token}", "Content-Type": "application/json"},
        )
        if not self.reached:
            # An address that swallows packets must not outlast the connect limit.
            timeout = min(timeout, max(self.connect_seconds, 1.0))
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                self.reached = True
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            self.reached = True
            try:
                payload = json.loads(exc.read() or b"{}")
            except ValueError:
                payload = {}
            if exc.code in (UNAVAILABLE_STATUSES_FOR_READS if method == "GET" else UNAVAILABLE_STATUSES):
                raise _Unavailable(exc.code, payload, exc.headers.get("Retry-After")) from None
            return exc.code, payload

    def _with_retries(self, method, path, body=None, deadline=None):
        connect_deadline = time.monotonic() + self.connect_seconds
        while True:
            try:
                return self._request(method, path, body)
            except _Unavailable as exc:
                if deadline is not None and time.monotonic() > deadline:
                    raise AskError(f"AgentVine is unavailable ({exc.status}): {exc.detail}") from exc
                time.sleep(exc.retry_after)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                now = time.monotonic()
                if not self.reached and now >= connect_deadline:
                    reason = ERR_UNREACHABLE.format(url=self.api_url, seconds=self.connect_seconds)
                    _report_unreachable(reason)
                    raise AskUnreachable(reason) from exc
                if deadline is not None and now > deadline:
                    raise AskError(f"AgentVine is unreachable: {exc}") from exc
                time.sleep(RETRY_SECONDS if self.reached else min(RETRY_SECONDS, max(connect_deadline - now, 0.05)))

    def ask(self, question, *, timeout=None):
        """Ask ``question`` and block until a human answers; returns the answer text."""
        deadline = None if timeout is None else time.monotonic() + timeout
        status, payload = self._with_retries("POST", "/api/v1/chat/agent/questions/", {"text": question}, deadline)
        if status != 201:
            raise AskError(f"question refused ({status}): {payload.get('detail') or payload}")
        question_id = payload["question_id"]
        while True:
            status, payload = self._with_retries(
                "GET", f"/api/v1/chat/agent/questions/{question_id}/?wait={POLL_SECONDS}", deadline=deadline
            )
            if status == 200:
                return payload["answer"]
            if status == 410:
                raise AskClosed(payload.get("detail", "work order ended"))
            if status != 202:
                raise AskError(f"waiting for the answer failed ({status}): {payload.get('detail') or payload}")
            if deadline is not None and time.monotonic() > deadline:
                raise AskError("no answer before the timeout")

    def report_progress(self, text):
        status, payload = self._with_retries("POST", "/api/v1/chat/agent/progress/", {"text": text})
        if status != 201:
            raise AskError(f"progress refused ({status}): {payload.get('detail') or payload}")
        return payload
