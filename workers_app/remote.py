"""Remote pull worker: runs agents on a machine that reaches AgentVine only over HTTP.

    AGENTVINE_OPERATOR_TOKEN_FILE=/run/secrets/avo python -m workers_app.remote --server https://agentvine.example
    AGENTVINE_WORKER_TOKEN=avw_… python -m workers_app.remote --server … --worker-id ID

Tokens come from the environment or a file (``AGENTVINE_OPERATOR_TOKEN`` /
``AGENTVINE_WORKER_TOKEN``, or the file their ``…_FILE`` variable names), never
from the command line, where every user of the host sees them (``ps``); the
old ``--token`` / ``--worker-token`` still work but warn.

With an operator token it registers itself (and deregisters on a clean exit);
with a worker token it works as that worker. Then it heartbeats, claims the
highest-priority ready work order, runs it with the same executors as the
Celery workers, streams the output in batches and completes or fails it. It
never touches the database: Postgres stays behind the API, so remote and
Celery workers share one queue and the claim's compare-and-set keeps any
work order from running twice.

Every write carries an Idempotency-Key that is reused when the request is
retried after a network error, so a lost response never applies a write twice.
"""

import argparse
import logging
import os
import random
import secrets
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import requests

logger = logging.getLogger("agentvine.remote")

# How often a running agent's work order is re-read to notice a cancel.
STATUS_CHECK_SECONDS = 1.0
INTERRUPT_GRACE_SECONDS = 5.0
RETRY_STATUSES = (429, 502, 503, 504)

ERR_TIME_LIMIT = "time limit of {seconds:.0f}s exceeded"
ERR_UNSUPPORTED_KIND = "work order kind {kind} cannot run on a remote worker"
# As on a Celery slot: the task itself, or a turn for the agent's queued messages.
RUNNABLE_KINDS = ("run_task", "deliver_message")
ERR_NO_RESULT = "agent ended without a result"
# A run this worker abandoned: its lease lapsed or the server fenced it.
FENCED = "fenced"
ERR_NEED_CREDENTIALS = (
    "set AGENTVINE_OPERATOR_TOKEN (or _FILE) to register, or --worker-id with AGENTVINE_WORKER_TOKEN (or _FILE)"
)
WARN_TOKEN_ARGUMENT = (
    "{flag} puts the token on the command line, where every user of this host can read it (ps); "
    "set {variable} or {variable}_FILE instead"
)


class ApiError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class ApiClient:
    """A small JSON client: token auth, idempotent retried writes."""

    def __init__(self, server, token, *, timeout=30.0, retry_seconds=300.0):
        self.base = server.rstrip("/") + "/api/v1/"
        self.token = token
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def clone(self):
        """Another client with the same credentials, for another thread."""
        return ApiClient(self.base[: -len("/api/v1/")], self.token, timeout=self.timeout)

    def get(self, path):
        return self._request("GET", path)

    def post(self, path, body=None, *, idempotent=True):
        """``idempotent=False`` for a call that is safe to repeat and whose
        repeat must answer afresh (the heartbeat): sent without a key, it is
        answered by the web's fast path (workers_app/pull_fast_path.py)."""
        return self._request("POST", path, body, idempotent=idempotent)

    def delete(self, path):
        return self._request("DELETE", path)

    def _request(self, method, path, body=None, *, idempotent=True):
        headers = {}
        if method != "GET" and idempotent:
            # One key per logical write, kept across retries: exactly once.
            headers["Idempotency-Key"] = uuid.uuid4().hex
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.2
        while True:
            try:
                response = self.session.request(
                    method, self.base + path, json=body, headers=headers, timeout=self.timeout
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                if time.monotonic() > deadline:
                    raise
                logger.warning("%s %s: %s; retrying in %.1fs", method, path, exc, delay)
            else:
                if response.status_code not in RETRY_STATUSES:
                    break
                if time.monotonic() > deadline:
                    break
                retry_after = response.headers.get("Retry-After")
                if retry_after and retry_after.isdigit():
                    delay = max(delay, float(retry_after))
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 10.0)
        if response.status_code >= 400:
            try:
                detail = response.json()
            except ValueError:
                detail = response.text[:500]
            raise ApiError(response.status_code, detail)
        return response.json() if response.content else None


def _setup_django():
    # Executors, profiles and workspaces read Django settings; no database
    # connection is ever opened by this program.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentvine.settings")
    # It signs nothing, so it needs no key of the server's (never copy that
    # one here); a random one satisfies the settings' refusal of the public
    # development key.
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    import django

    django.setup()


def register(*, server, operator_token, name, hostname):
    """Register a worker with an operator token; returns (worker id, worker token)."""
    reply = ApiClient(server, operator_token).post("workers/", {"name": name, "hostname": hostname})
    return reply["id"], reply["token"]


# The Django-backed modules below are imported inside the functions that use
# them: this module is a program started without Django, and main() sets
# Django up (_setup_django) before any of them runs.


def _remote_output_buffer_class():
    from workers_app.output import OutputBuffer

    class RemoteOutputBuffer(OutputBuffer):
        """OutputBuffer batching, with each batch sent over HTTP."""

        def __init__(self, api, work_order_id, run):
            super().__init__(SimpleNamespace(output_chunks=0, output_tail="", output_chars=0))
            self.api = api
            self.work_order_id = work_order_id
            self.run = run
            self.work_order_status = "running"

        def _write(self, *, seq, text, tail):
            try:
                reply = self.api.post(
                    f"queue/work-orders/{self.work_order_id}/output/",
                    {"seq": seq, "text": text, "execution": self.run.execution},
                )
            except ApiError as exc:
                if exc.status != 409:
                    raise
                # The attempt was closed under us (cancelled, requeued).
                self.work_order_status = "gone"
                self.run.refused(exc)
                return
            self.work_order_status = reply["work_order_status"]

    return RemoteOutputBuffer


def is_fenced(exc):
    """A 409 ``fenced``: the run is no longer the live one; stop its agent."""
    return exc.status == 409 and isinstance(exc.body, dict) and exc.body.get("code") == "fenced"


class RemoteRun:
    """The run (execution) this worker drives now and its fence
    (``workers_app.fencing``): renewed by each heartbeat that lists it among
    the worker's live runs and by each poll of its work order; fenced when
    the server says so (409 ``fenced``, or a heartbeat without it) or when
    nothing renewed it for ``fence_seconds`` (the server is out of reach:
    the work may be requeued)."""

    def __init__(self, execution, fence):
        self.execution = execution
        self.fence = fence

    def refused(self, exc):
        if is_fenced(exc):
            self.fence_now(f"the server fenced it: {exc.body.get('detail')}")

    def fence_now(self, reason):
        # Off the calling thread: stopping the agent waits for it a moment.
        threading.Thread(target=self.fence.fence, args=(reason,), daemon=True).start()


class RemoteWorker:
    def __init__(self, api, worker_id, *, poll_seconds=1.0, heartbeat_seconds=10.0, idle_exit=None, max_orders=None):
        self.api = api
        self.worker_id = worker_id
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.idle_exit = idle_exit
        self.max_orders = max_orders
        self.stop = threading.Event()
        self.outcomes = []
        self.current_run = None

    # --- loop -----------------------------------------------------------------

    def run(self):
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="agentvine-remote-heartbeat", daemon=True)
        heartbeat.start()
        idle_since = time.monotonic()
        while not self.stop.is_set():
            claimed = self.api.post("queue/claim/", {})
            if claimed is None:
                if self.idle_exit is not None and time.monotonic() - idle_since > self.idle_exit:
                    break
                self.stop.wait(self.poll_seconds * random.uniform(0.5, 1.0))
                continue
            self.outcomes.append(self.run_one(claimed))
            idle_since = time.monotonic()
            if self.max_orders is not None and len(self.outcomes) >= self.max_orders:
                break
        self.stop.set()
        return self.outcomes

    def _heartbeat_loop(self):
        api = self.api.clone()
        api.retry_seconds = self.heartbeat_seconds
        while not self.stop.wait(self.heartbeat_seconds):
            try:
                run = self.current_run
                reply = api.post(f"workers/{self.worker_id}/heartbeat/", idempotent=False) or {}
                if run is not None and run is self.current_run:
                    if run.execution in reply.get("leases", {}):
                        run.fence.renewed()
                    else:
                        run.fence_now("the server no longer lists it as live (requeued)")
            except ApiError as exc:
                if exc.status == 401:
                    logger.error("worker token refused (deregistered?); stopping")
                    self.stop.set()
                    return
                logger.warning("heartbeat failed: %s", exc)
            except requests.RequestException as exc:
                logger.warning("heartbeat failed: %s", exc)

    # --- one work order ---------------------------------------------------------

    def run_one(self, claimed):
        from workers_app.executors import ExecutorConfigError, executor_for, executor_profile
        from workers_app.executors.base import RunContext
        from workers_app.workspaces import workspace_prepare

        work_order, task = claimed["work_order"], claimed["task"]
        work_order_id = work_order["id"]
        self._run = None
        # The start opens (or resumes) the task's agent session and hands back
        # the prompt: the task, or a message turn's queued messages.
        started = self.api.post(f"queue/work-orders/{work_order_id}/start/")
        if work_order["kind"] not in RUNNABLE_KINDS:
            return self._fail(work_order_id, ERR_UNSUPPORTED_KIND.format(kind=work_order["kind"]), retryable=False)
        if started.get("prompt") is None:
            # A message turn whose messages another run already delivered.
            return self._complete(work_order_id, 0)
        try:
            from django.conf import settings

            profile = executor_profile(task["executor"])
            task_fields = SimpleNamespace(
                id=task["id"],
                title=task["title"],
                repository_url=task["repository_url"],
                branch_name=task["branch_name"],
            )
            workspace = workspace_prepare(task=task_fields)
            self._run = SimpleNamespace(
                task=task_fields, execution=started["execution"], attempt=started["attempt"], known=None
            )
            if work_order["kind"] != "run_task" or started["attempt"] > 1:
                # A later turn continues the branch as the server has it.
                self._run.known = self._fetch_results(self._run)
            context = RunContext(
                task_id=task["id"],
                work_order_id=work_order_id,
                prompt=started["prompt"],
                workspace=workspace,
                profile=profile,
                time_limit=float(profile.get("timeout", settings.AGENTVINE_MAX_RUN_SECONDS)),
                session_id=started["session_id"],
                resume=started["resume"],
                env=self._agent_environment(started["agent_token"], work_order_id, task["id"]),
                budget_usd=started.get("budget_usd"),
            )
            executor = executor_for(context)
        except ExecutorConfigError as exc:
            return self._fail(work_order_id, str(exc), retryable=False)
        from workers_app.fencing import Fence

        fence = Fence(executor=executor, seconds=float(started["fence_seconds"]), name=started["execution"])
        self.current_run = RemoteRun(started["execution"], fence.start())
        try:
            return self._drive(work_order_id, executor, session=started["session"])
        finally:
            fence.close()
            self.current_run = None

    def _agent_environment(self, agent_token, work_order_id, task_id):
        """What the agent needs to ask a human: the same as under Celery, pointed at this server."""
        from chat_app.agent_link import AGENT_BIN_DIR

        return {
            "AGENTVINE_API_URL": self.api.base[: -len("/api/v1/")],
            "AGENTVINE_TOKEN": agent_token,
            "AGENTVINE_WORK_ORDER_ID": work_order_id,
            "AGENTVINE_TASK_ID": task_id,
            "PATH": f"{AGENT_BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def _drive(self, work_order_id, executor, session=None):
        run = self.current_run
        fence = run.fence
        buffer = _remote_output_buffer_class()(self.api, work_order_id, run)
        started = time.monotonic()
        next_check = started + STATUS_CHECK_SECONDS
        stop_reason = budget_stop = rate_limit = None
        interrupted_at = None
        outcome = None
        try:
            for event in executor.events():
                now = time.monotonic()
                if fence.fenced.is_set():
                    # The fence stopped the agent: drain its last events, send nothing.
                    continue
                if event.kind in ("output", "tool_use"):
                    buffer.add(event.text)
                elif event.kind == "usage":
                    spent = self._report_usage(work_order_id, event.data)
                    if spent and stop_reason is None:
                        # A budget is spent: the agent stops, and the run is
                        # reported failed, which the server turns into a pause.
                        stop_reason = budget_stop = spent
                elif event.kind == "session" and session:
                    self._report_session(session, event.data.get("session_id"))
                elif event.kind in ("completed", "error"):
                    outcome = event
                elif event.kind == "rate_limited" and stop_reason is None:
                    # Refused for now: the server pauses the key until the reset.
                    rate_limit = event.data
                    stop_reason = event.data.get("reason") or "rate limited"
                buffer.maybe_flush()
                if stop_reason is None and now - started > executor.context.time_limit:
                    stop_reason = ERR_TIME_LIMIT.format(seconds=executor.context.time_limit)
                if stop_reason is None and now >= next_check:
                    next_check = now + STATUS_CHECK_SECONDS
                    try:
                        status = self.api.get(f"queue/work-orders/{work_order_id}/")["status"]
                    except ApiError as exc:
                        if exc.status not in (403, 404):
                            raise
                        # Requeued under it and now another worker's (or gone).
                        status = "taken away"
                    if status not in ("running", "waiting"):
                        stop_reason = f"work order became {status}"
                    else:
                        # The poll renewed the lease (the server says so in its description).
                        fence.renewed()
                if stop_reason is None and buffer.work_order_status not in ("running", "waiting"):
                    stop_reason = f"work order became {buffer.work_order_status}"
                if stop_reason and interrupted_at is None:
                    interrupted_at = now
                    executor.interrupt()
                elif interrupted_at is not None and now - interrupted_at > INTERRUPT_GRACE_SECONDS:
                    executor.kill()
        except Exception as exc:
            executor.kill()
            if fence.fenced.is_set():
                logger.info("fenced run of work order %s ended: %s", work_order_id, exc)
                return FENCED
            logger.exception("executor crashed on work order %s", work_order_id)
            buffer.flush()
            self._send_results(summary="")
            return self._fail(work_order_id, f"executor error: {exc}", retryable=True)
        if fence.fenced.is_set():
            # Abandoned: the server requeues the work; nothing more is sent for this run.
            logger.warning("work order %s abandoned by its fenced run: %s", work_order_id, fence.reason)
            return FENCED
        buffer.flush()
        # Every run ends with a commit, sent to the server before the run ends.
        self._send_results(summary=outcome.text if outcome is not None and outcome.kind == "completed" else "")
        exit_code = outcome.data.get("exit_code") if outcome else None
        completed = outcome is not None and outcome.kind == "completed"
        if rate_limit is not None and not completed:
            return self._fail(
                work_order_id,
                stop_reason,
                retryable=True,
                exit_code=exit_code,
                rate_limited=True,
                resets_at=rate_limit.get("resets_at"),
            )
        if budget_stop or (outcome is not None and outcome.data.get("budget_spent")):
            # The server decides: paused on the task's budget, or waiting for the next day.
            return self._fail(work_order_id, budget_stop or outcome.text, retryable=True, exit_code=exit_code)
        if stop_reason and not stop_reason.startswith("time limit"):
            # Cancelled or taken away: the attempt ends interrupted, this
            # worker is free (a 409 means the server already moved it on).
            try:
                self.api.post(
                    f"queue/work-orders/{work_order_id}/interrupted/",
                    {"reason": stop_reason, **self._run_field()},
                )
            except ApiError as exc:
                if exc.status != 409:
                    raise
            return "interrupted"
        if stop_reason:
            return self._fail(work_order_id, stop_reason, retryable=True, exit_code=exit_code)
        if outcome is not None and outcome.kind == "completed":
            return self._complete(work_order_id, exit_code or 0)
        error = outcome.text if outcome else ERR_NO_RESULT
        tail = buffer.tail.strip().splitlines()[-5:]
        if tail:
            error = error + "\n" + "\n".join(tail)
        return self._fail(work_order_id, error, retryable=True, exit_code=exit_code)

    def _fetch_results(self, run):
        """The task's branch from the server into this host's workspace; the
        server's head (what the next upload need not send again)."""
        from workers_app.result_upload import UploadFailed, results_fetch
        from workers_app.workspaces import GitFailed

        try:
            return results_fetch(
                api_url=self.api.base[: -len("/api/v1/")],
                authorization=f"Token {self.api.token}",
                execution_id=run.execution,
                task=run.task,
                session=self.api.session,
            )
        except (UploadFailed, GitFailed, OSError) as exc:
            logger.warning("task %s: cannot fetch its branch from the server: %s", run.task.id, exc)
            return None

    def _run_field(self):
        """What names the run in a write (none before the start answered)."""
        return {"execution": self.current_run.execution} if self.current_run else {}

    def _send_results(self, *, summary):
        """Commit the run's workspace on its task's branch and send the new
        commits to the server; a failure is logged, the run still ends."""
        from workers_app.result_upload import UploadFailed, results_upload
        from workers_app.runner import snapshot_message
        from workers_app.workspaces import GitFailed, WorkspaceError, workspace_snapshot

        run = getattr(self, "_run", None)
        if run is None:
            return
        try:
            snapshot = workspace_snapshot(task=run.task, message=snapshot_message(run.task, run, summary))
            if snapshot is not None:
                results_upload(
                    api_url=self.api.base[: -len("/api/v1/")],
                    authorization=f"Token {self.api.token}",
                    execution_id=run.execution,
                    task=run.task,
                    snapshot=snapshot,
                    session=self.api.session,
                    known=run.known,
                )
        except (UploadFailed, GitFailed, WorkspaceError, OSError) as exc:
            logger.warning("results of execution %s not sent: %s", run.execution, exc)

    def _complete(self, work_order_id, exit_code):
        try:
            self.api.post(f"queue/work-orders/{work_order_id}/complete/", {"exit_code": exit_code, **self._run_field()})
        except ApiError as exc:
            if exc.status != 409:
                raise
            return FENCED if is_fenced(exc) else "lost"
        return "completed"

    def _report_session(self, session, agent_session_id):
        """The agent named its own conversation (codex does): resume that one next time."""
        if not agent_session_id:
            return
        try:
            self.api.post(f"sessions/{session}/activity/", {"session_id": agent_session_id, **self._run_field()})
        except ApiError as exc:
            if self.current_run:
                self.current_run.refused(exc)
            logger.warning("session id of session %s not recorded: %s", session, exc)

    def _report_usage(self, work_order_id, usage):
        """Tokens and cost the agent reported, added to this attempt on the
        server; answers why a budget stops the run now, or ``""``."""
        body = {
            "input_tokens": int(usage.get("input_tokens") or 0),
            "output_tokens": int(usage.get("output_tokens") or 0),
            "cost_usd": f"{float(usage.get('cost_usd') or 0):.6f}",
            **self._run_field(),
        }
        try:
            reply = self.api.post(f"queue/work-orders/{work_order_id}/usage/", body) or {}
        except ApiError as exc:
            if self.current_run:
                self.current_run.refused(exc)
            # Not the run's fault: the attempt has moved on or the numbers were refused.
            logger.warning("usage of work order %s not recorded: %s", work_order_id, exc)
            return ""
        # Not empty once a budget is spent (queue_app.budgets): the run stops.
        return reply.get("over_budget") or ""

    def _fail(self, work_order_id, error, *, retryable, exit_code=None, **refusal):
        """Report the run failed; ``refusal``: ``rate_limited`` and ``resets_at``
        when the provider refused the agent for now."""
        try:
            self.api.post(
                f"queue/work-orders/{work_order_id}/fail/",
                {"error": error, "exit_code": exit_code, "retryable": retryable, **refusal, **self._run_field()},
            )
        except ApiError as exc:
            if exc.status != 409:
                raise
            logger.info("work order %s was no longer ours to fail", work_order_id)
            if is_fenced(exc):
                return FENCED
        return "failed"


def token_from(*, flag, flag_value, variable, environ=None):
    """A token from ``$VARIABLE``, the file ``$VARIABLE_FILE`` names, or (deprecated) a command-line flag."""
    environ = os.environ if environ is None else environ
    if flag_value:
        logger.warning(WARN_TOKEN_ARGUMENT.format(flag=flag, variable=variable))
        return flag_value
    if environ.get(variable):
        return environ[variable]
    path = environ.get(f"{variable}_FILE")
    if path:
        return Path(path).read_text().strip()
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description="AgentVine remote pull worker")
    parser.add_argument(
        "--server", default=os.environ.get("AGENTVINE_SERVER"), required="AGENTVINE_SERVER" not in os.environ
    )
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--name", default=f"remote@{socket.gethostname()}:{os.getpid()}")
    parser.add_argument("--worker-id", default=os.environ.get("AGENTVINE_WORKER_ID"))
    parser.add_argument("--worker-token", help=argparse.SUPPRESS)
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between claims while idle")
    parser.add_argument("--heartbeat", type=float, default=None, help="seconds between heartbeats")
    parser.add_argument("--idle-exit", type=float, default=None, help="exit after this many idle seconds")
    parser.add_argument("--max-orders", type=int, default=None, help="exit after running this many work orders")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(message)s")
    _setup_django()
    from django.conf import settings

    from agentvine.security import process_protect

    # Its agents run as its children: they must not read its worker token.
    process_protect()

    registered = False
    operator_token = token_from(flag="--token", flag_value=args.token, variable="AGENTVINE_OPERATOR_TOKEN")
    if not operator_token and os.environ.get("AGENTVINE_TOKEN"):
        # Earlier versions read the operator token from the agents' variable name.
        logger.warning("AGENTVINE_TOKEN is deprecated for the operator token: set AGENTVINE_OPERATOR_TOKEN")
        operator_token = os.environ["AGENTVINE_TOKEN"]
    worker_token = token_from(flag="--worker-token", flag_value=args.worker_token, variable="AGENTVINE_WORKER_TOKEN")
    if args.worker_id and worker_token:
        worker_id = args.worker_id
    elif operator_token:
        worker_id, worker_token = register(
            server=args.server, operator_token=operator_token, name=args.name, hostname=socket.gethostname()
        )
        registered = True
        logger.info("registered as %s (%s)", args.name, worker_id)
    else:
        parser.error(ERR_NEED_CREDENTIALS)
    api = ApiClient(args.server, worker_token)
    worker = RemoteWorker(
        api,
        worker_id,
        poll_seconds=args.poll,
        heartbeat_seconds=args.heartbeat or settings.AGENTVINE_HEARTBEAT_SECONDS,
        idle_exit=args.idle_exit,
        max_orders=args.max_orders,
    )
    # SIGTERM: finish the current work order, then leave.
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.stop.set())
    try:
        outcomes = worker.run()
    finally:
        if registered:
            try:
                api.delete(f"workers/{worker_id}/")
            except (ApiError, requests.RequestException):
                logger.warning("could not deregister %s", worker_id)
    logger.info("ran %d work orders: %s", len(outcomes), {o: outcomes.count(o) for o in set(outcomes)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
