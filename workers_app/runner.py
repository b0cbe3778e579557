"""Runs one work order on this slot: claim, start, stream the agent, finish.

Called by the ``execute_work_order`` Celery task. Every state change goes
through the engine (``queue_app.lifecycle``), so a duplicate or late doorbell,
a cancel or a guardian acting meanwhile is detected by a compare-and-set, not
by luck. The transition that ends a run also ends its token and session; the
runner never does that itself, except for a run that crashed out without one.
"""

import logging
import time
from contextlib import contextmanager
from decimal import Decimal

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from agentvine.errors import ExecutionFenced, IllegalTransition
from agentvine.wakeups import RunnerWakeups
from chat_app import agent_link
from queue_app import budgets, dispatch, lifecycle
from queue_app.models import Execution, WorkOrder, WorkOrderKind, WorkOrderStatus
from queue_app.outputs import execution_record_result, execution_record_usage
from queue_app.run_sessions import agent_session_open
from workers_app.executors import ExecutorConfigError, executor_for, executor_profile
from workers_app.executors.base import RunContext
from workers_app.executors.environment import ask_failure
from workers_app.fencing import Fence
from workers_app.output import OutputBuffer
from workers_app.result_upload import UploadFailed, results_fetch, results_upload
from workers_app.services import agent_session_set_agent_id, worker_release
from workers_app.slots import current_worker, node_name
from workers_app.workspaces import GitFailed, WorkspaceError, workspace_head, workspace_prepare, workspace_snapshot

logger = logging.getLogger(__name__)

# How often a running agent's work order is re-read to notice a cancel or a
# preemption request whose wake-up signal was lost.
STATUS_CHECK_SECONDS = 1.0

ERR_TIME_LIMIT = "time limit of {seconds:.0f}s exceeded"
ERR_UNSUPPORTED_KIND = "work order kind {kind} cannot run on this worker"
# A resumed agent already has the task in its conversation; say why it hears it again.
RESUME_NOTE = "You were stopped before finishing. Continue this task from where you left off.\n\n"
ERR_PREEMPTED = "preempted by higher-priority work"
# Work orders a Celery slot runs: the task itself, or a turn for queued messages.
RUNNABLE_KINDS = (WorkOrderKind.RUN_TASK, WorkOrderKind.DELIVER_MESSAGE)
MESSAGES_NOTE = "Messages about this task since you last worked on it:"
ERR_SHUTDOWN = "worker shutting down"
# What a fenced run returns: it stopped its agent and wrote nothing more.
FENCED = "fenced"


def task_prompt(task):
    lines = [task.title, "", f"Type: {task.get_task_type_display()}"]
    if task.repository_url:
        lines.append(f"Repository: {task.repository_url} (branch {task.branch_name or 'default'})")
    if task.description:
        lines += ["", task.description]
    return "\n".join(lines)


def work_order_run(*, work_order_id):
    """Run one work order to an end state. Returns a short outcome string."""
    worker = _with_database(current_worker)
    started = _with_database(
        lambda: lifecycle.work_order_claim_start(
            worker=worker, work_order_id=work_order_id, session_kinds=RUNNABLE_KINDS
        )
    )
    if started is None:
        return _not_claimed(work_order_id)
    work_order, execution, session, resume = started
    if work_order.kind not in RUNNABLE_KINDS:
        lifecycle.work_order_fail(
            work_order=work_order,
            worker=worker,
            execution=execution,
            error=ERR_UNSUPPORTED_KIND.format(kind=work_order.kind),
            retryable=False,
        )
        return "failed"
    outcome = None
    try:
        prompt = run_prompt(work_order, resume, execution)
        if prompt is None:
            # A message turn whose messages another run already delivered.
            lifecycle.work_order_complete(work_order=work_order, worker=worker, execution=execution)
            outcome = "completed"
            return outcome
        profile = executor_profile(work_order.task.executor)
        workspace = workspace_prepare(task=work_order.task)
        _results_start(work_order, execution)
        context = RunContext(
            task_id=str(work_order.task_id),
            work_order_id=str(work_order.id),
            prompt=prompt,
            workspace=workspace,
            profile=profile,
            time_limit=float(profile.get("timeout", settings.AGENTVINE_MAX_RUN_SECONDS)),
            session_id=session.session_id,
            resume=resume,
            # agentvine-ask on PATH and the token that lets it ask a human.
            env=agent_link.agent_environment(work_order=work_order, token=execution.agent_token),
            budget_usd=run_budget(work_order.task),
        )
        executor = executor_for(context)
        outcome = _drive(worker=worker, work_order=work_order, execution=execution, executor=executor)
    except ExecutorConfigError as exc:
        _finish_failed(worker, work_order, execution, str(exc), retryable=False)
        outcome = "failed"
        return outcome
    finally:
        if outcome is None:
            # Crashed out before any transition ended the run: its token and
            # session end here, by execution, and only while it is the live
            # run (a newer run's stay untouched).
            lifecycle.execution_release(execution=execution)
    if outcome == FENCED:
        # Abandoned: the work order, its token and session are the guardian's
        # and the next run's now; this run touches none of them.
        return outcome
    # Messages that came in too late for this run get the agent's next turn.
    agent_link.agent_next_turn(task=work_order.task)
    return outcome


def run_prompt(work_order, resume, execution=None):
    """A task run gets the task; a message turn the queued messages, taken
    from the inbox as delivered to ``execution`` (None if another run took
    them first)."""
    if work_order.kind == WorkOrderKind.RUN_TASK:
        return (RESUME_NOTE if resume else "") + task_prompt(work_order.task)
    messages = agent_link.next_turn_prompt(task=work_order.task, execution=execution)
    if messages is None:
        return None
    if resume:
        return messages
    # A fresh conversation does not know the task yet.
    return f"{task_prompt(work_order.task)}\n\n{MESSAGES_NOTE}\n{messages}"


def pull_run_start(*, work_order, worker):
    """A pull worker starts the ``work_order`` it claimed, as a slot does:
    claimed → running in the task's agent session (opened, or resumed after
    an attempt that completed or was interrupted), with the prompt its agent
    gets, in one transaction. Returns ``(work_order, execution, session,
    resume, prompt)``; for a message turn whose messages another run already
    delivered the prompt is None and the worker completes it at once.
    """
    with transaction.atomic():
        session, resume = None, False
        if work_order.kind in RUNNABLE_KINDS:
            session, resume = agent_session_open(task=work_order.task, worker=worker)
        fresh, execution = lifecycle.work_order_start(work_order=work_order, worker=worker, session=session)
        fresh.task = work_order.task
        prompt = run_prompt(fresh, resume, execution) if fresh.kind in RUNNABLE_KINDS else None
    return fresh, execution, session, resume, prompt


def _not_claimed(work_order_id):
    """A doorbell that found nothing to claim; re-ring if it came too early."""
    current = WorkOrder.objects.filter(pk=work_order_id).first()
    if current and current.status == WorkOrderStatus.QUEUED and current.not_before:
        wait = (current.not_before - timezone.now()).total_seconds()
        if wait > 0:
            dispatch.work_order_dispatch(work_order_id=current.id, countdown=wait)
            return "deferred"
    return "skipped"


def run_budget(task):
    """What this run may spend (queue_app.budgets), or None: no query without
    a budget, nor with only a task budget when the claim read the task's
    spend (``task.spent_usd``)."""
    left = budgets.remaining(task, task_spent=getattr(task, "spent_usd", None))
    return None if left is None else float(left)


class Stop:
    """Why the runner is stopping an agent before it ends by itself."""

    TAKEN = "taken"  # cancelled, or moved on by someone else
    PREEMPTED = "preempted"
    SHUTDOWN = "shutdown"
    TIME_LIMIT = "time_limit"
    ASK_FAILED = "ask_failed"  # the agent's ask client never reached the API
    RATE_LIMITED = "rate_limited"  # the provider refused the agent until a reset
    BUDGET = "budget"  # a budget of its task, its operator or everyone is spent


def _check_work_order(work_order, worker):
    """Re-read the work order: does this slot still run it, and may it go on?"""
    row = WorkOrder.objects.filter(pk=work_order.pk).values("status", "worker_id", "preempt_requested_at").first()
    if row is None:
        return Stop.TAKEN, "work order was deleted"
    if row["status"] not in (WorkOrderStatus.RUNNING, WorkOrderStatus.WAITING) or row["worker_id"] != worker.pk:
        return Stop.TAKEN, f"work order became {row['status']}"
    if row["preempt_requested_at"] is not None:
        return Stop.PREEMPTED, ERR_PREEMPTED
    return None, ""


def _drive(*, worker, work_order, execution, executor):
    wakeups = RunnerWakeups(work_order_id=work_order.pk, nodename=node_name(), on_wake=executor.poke)
    try:
        return _drive_agent(
            worker=worker, work_order=work_order, execution=execution, executor=executor, wakeups=wakeups
        )
    finally:
        wakeups.close()


def _drive_agent(*, worker, work_order, execution, executor, wakeups):
    fence = Fence(executor=executor, seconds=settings.AGENTVINE_FENCE_SECONDS, name=str(execution.pk)).start()
    try:
        return _drive_fenced(
            worker=worker, work_order=work_order, execution=execution, executor=executor, wakeups=wakeups, fence=fence
        )
    finally:
        fence.close()


def _drive_fenced(*, worker, work_order, execution, executor, wakeups, fence):
    buffer = OutputBuffer(execution)
    lease = _Lease(execution, fence)
    outage = _DatabaseOutage(work_order)
    usage_pending = []

    budget_check = []

    def keep_alive():
        buffer.maybe_flush()
        while usage_pending:
            _record_usage(execution, usage_pending[0])
            usage_pending.pop(0)
            budget_check.append(True)
        lease.renew_when_due()

    started = time.monotonic()
    next_check = started + STATUS_CHECK_SECONDS
    drain_deadline = None
    stop, stop_reason = None, ""
    interrupted_at = None
    outcome_event = None
    rate_limit = None
    budget_refusal = None
    try:
        for event in executor.events():
            now = time.monotonic()
            if event.kind in ("completed", "error"):
                outcome_event = event
            elif event.kind == "usage":
                usage_pending.append(event.data)
            elif event.kind == "rate_limited" and stop is None:
                rate_limit = event.data
                stop, stop_reason = Stop.RATE_LIMITED, event.data.get("reason") or "rate limited"
            if fence.fenced.is_set():
                # The fence stopped the agent: drain its last events, write nothing.
                continue
            # While PostgreSQL is away (a restart, a failover) the agent goes
            # on: its output and usage wait in memory and are written, in
            # order and once, when the database is back (or, past the fence,
            # never: the run is abandoned).
            try:
                with outage.tolerated():
                    if event.kind in ("output", "tool_use"):
                        buffer.add(event.text)
                    elif event.kind == "session":
                        agent_session_set_agent_id(
                            session=execution.session, session_id=event.data.get("session_id"), execution=execution
                        )
                    elif event.kind == "question" and stop is None:
                        # The agent blocks until a person answers; output keeps flowing
                        # to Postgres meanwhile. None means the work stopped or timed
                        # out, which the checks below notice.
                        answer = agent_link.executor_question(
                            work_order=work_order,
                            execution=execution,
                            text=event.text,
                            deadline=started + executor.context.time_limit,
                            on_wait=keep_alive,
                            sleep=wakeups.wait,
                        )
                        if answer is not None:
                            executor.provide_answer(answer)
                        next_check = 0
                    keep_alive()
            except ExecutionFenced as exc:
                # A write was refused: this run is no longer the live one.
                # The database answers, so the run ends as any run whose work
                # moved on (its own attempt only, see _close_taken).
                if stop is None:
                    stop, stop_reason = Stop.TAKEN, exc.message
            if budget_check:
                # Spend was recorded: a budget it reached stops the run (queue_app.budgets).
                with outage.tolerated():
                    budget_refusal = budgets.refusal(work_order.task) if stop is None else None
                    budget_check.clear()
                if budget_refusal is not None:
                    stop, stop_reason = Stop.BUDGET, budget_refusal.reason
            if stop is None and now - started > executor.context.time_limit:
                stop, stop_reason = Stop.TIME_LIMIT, ERR_TIME_LIMIT.format(seconds=executor.context.time_limit)
            if stop is None and wakeups.shutdown.is_set():
                # Warm shutdown: the agent gets a bounded time to finish.
                if drain_deadline is None:
                    drain_deadline = now + settings.AGENTVINE_SHUTDOWN_GRACE_SECONDS
                elif now >= drain_deadline:
                    stop, stop_reason = Stop.SHUTDOWN, ERR_SHUTDOWN
            # A wake-up (cancel, preemption request, a message for the agent)
            # is checked at once; the poll is the fallback for a lost signal.
            if stop is None and (wakeups.consume_wake() or now >= next_check):
                next_check = now + STATUS_CHECK_SECONDS
                with outage.tolerated(probe=True):
                    stop, stop_reason = _check_work_order(work_order, worker)
                    if stop is None:
                        # Operator messages queued for this agent, in order.
                        agent_link.inbox_deliver_to_executor(task=work_order.task, executor=executor)
                if stop is None and (reason := ask_failure(executor.context)):
                    stop, stop_reason = Stop.ASK_FAILED, reason
            if stop and interrupted_at is None:
                interrupted_at = now
                executor.interrupt()
            elif interrupted_at is not None and now - interrupted_at > settings.AGENTVINE_INTERRUPT_GRACE_SECONDS:
                executor.kill()
    except ExecutorConfigError:
        _with_database(buffer.flush)
        raise
    except Exception as exc:
        executor.kill()
        if fence.fenced.is_set():
            # Its database call failed after the fence fired: still abandoned.
            logger.info("fenced run of work order %s ended: %s", work_order.pk, exc)
            return FENCED
        logger.exception("executor crashed on work order %s", work_order.pk)
        _with_database(buffer.flush)
        _snapshot(work_order, execution, summary="")
        _finish_failed(worker, work_order, execution, f"executor error: {exc}", retryable=True)
        return "failed"
    if fence.fenced.is_set():
        logger.warning("work order %s abandoned by its fenced run: %s", work_order.pk, fence.reason)
        return FENCED
    if stop is None and (reason := ask_failure(executor.context)):
        # The agent ended before the next check noticed.
        stop, stop_reason = Stop.ASK_FAILED, reason
    if stop == Stop.ASK_FAILED:
        buffer.add(f"[agentvine] {stop_reason}\n")
    try:
        _with_database(buffer.flush)
        _with_database(keep_alive)
    except ExecutionFenced as exc:
        stop, stop_reason = Stop.TAKEN, exc.message
    # Every run ends with a commit, whichever way it ends: before the
    # transition, so whoever sees the attempt end sees its changes.
    summary = outcome_event.text if outcome_event and outcome_event.kind == "completed" else ""
    _snapshot(work_order, execution, summary=summary)

    completed = outcome_event is not None and outcome_event.kind == "completed"
    exit_code = outcome_event.data.get("exit_code") if outcome_event else None
    if not completed and stop is None:
        # Usage that came with the agent's last words, or an agent that stopped
        # itself at its budget (claude's error_max_budget_usd).
        budget_refusal = _with_database(lambda: budgets.refusal(work_order.task))
        if budget_refusal is None and outcome_event is not None and outcome_event.data.get("budget_spent"):
            budget_refusal = budgets.Refusal(
                "task", f"the agent stopped at its budget (${executor.context.budget_usd or 0:.4f} left)"
            )
        if budget_refusal is not None:
            stop, stop_reason = Stop.BUDGET, budget_refusal.reason
    if stop == Stop.TAKEN:
        # Cancelled (or taken away) while running: keep the partial output,
        # close the attempt as interrupted, free the slot.
        _close_taken(worker, work_order, stop_reason, execution)
        return "interrupted"
    if stop == Stop.RATE_LIMITED and not completed:
        # Not the work's fault either: back in line with no retry spent, its
        # whole key paused until the provider's reset (queue_app.rate_limits).
        try:
            _with_database(
                lambda: lifecycle.work_order_rate_limited(
                    work_order=work_order, reason=stop_reason, resets_at=rate_limit.get("resets_at")
                )
            )
            _with_database(lambda: worker_release(worker=worker))
        except IllegalTransition:
            logger.info("work order %s was no longer ours to requeue", work_order.pk)
            _close_taken(worker, work_order, stop_reason, execution)
        return stop
    if stop == Stop.BUDGET and not completed:
        # Paused (or waiting for the next day) with its output and changes
        # kept and no retry spent; it resumes in its session.
        try:
            _with_database(
                lambda: lifecycle.work_order_over_budget(
                    work_order=work_order, refusal=budget_refusal, worker=worker, execution=execution
                )
            )
            _with_database(lambda: worker_release(worker=worker))
        except IllegalTransition:
            logger.info("work order %s was no longer ours to pause", work_order.pk)
            _close_taken(worker, work_order, stop_reason, execution)
        return stop
    if stop in (Stop.PREEMPTED, Stop.SHUTDOWN) and not completed:
        # Giving way is not the work's fault: no retry is spent. The partial
        # output is already flushed; the requeue closes the attempt as
        # interrupted and rings a new doorbell (this one is acked when the
        # Celery task returns).
        try:
            _with_database(
                lambda: lifecycle.work_order_requeue(
                    work_order=work_order, reason=stop_reason, preempted=stop == Stop.PREEMPTED
                )
            )
            _with_database(lambda: worker_release(worker=worker))
        except IllegalTransition:
            logger.info("work order %s was no longer ours to requeue", work_order.pk)
            _close_taken(worker, work_order, stop_reason, execution)
        return stop
    if stop == Stop.ASK_FAILED:
        # Configuration, not the work: another try would fail the same way.
        _with_database(lambda: agent_link.ask_failed(work_order=work_order, reason=stop_reason))
        _finish_failed(worker, work_order, execution, stop_reason, retryable=False, exit_code=exit_code)
        return "failed"
    if stop == Stop.TIME_LIMIT:
        # A hung agent would most likely hang again: retried only when its
        # profile says so, instead of holding a slot (retries + 1) times the limit.
        retry = bool(executor.context.profile.get("retry_on_timeout", False))
        _finish_failed(worker, work_order, execution, stop_reason, retryable=retry, exit_code=exit_code)
        return "failed"
    if completed:
        try:
            _with_database(
                lambda: lifecycle.work_order_complete(
                    work_order=work_order, worker=worker, execution=execution, exit_code=exit_code or 0
                )
            )
        except IllegalTransition:
            # Cancelled or taken away as it finished: the attempt still ends.
            _close_taken(worker, work_order, "work order moved on before it completed", execution)
            return "lost"
        return "completed"
    error = outcome_event.text if outcome_event else "agent ended without a result"
    tail = buffer.tail.strip().splitlines()[-5:]
    if tail:
        error = error + "\n" + "\n".join(tail)
    _finish_failed(worker, work_order, execution, error, retryable=True, exit_code=exit_code)
    return "failed"


# What a lost PostgreSQL connection raises (psycopg's AdminShutdown on a
# restart, a refused connection while it is down), as Django wraps it.
DATABASE_ERRORS = (OperationalError, InterfaceError)


def _with_database(call):
    """``call()``, tried again while PostgreSQL is away (a restart, a
    failover), for up to AGENTVINE_DATABASE_RETRY_SECONDS: the run's
    bookkeeping is finished by its runner rather than left to a guardian.
    Every call given here is one transaction (or none): a try that failed
    wrote nothing, and one whose reply was lost is refused on the next try by
    its compare-and-set."""
    deadline = time.monotonic() + settings.AGENTVINE_DATABASE_RETRY_SECONDS
    delay = 0.25
    while True:
        try:
            return call()
        except DATABASE_ERRORS:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("database unreachable; trying again in %.2fs", delay)
            connection.close()
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class _DatabaseOutage:
    """Lets the loop driving an agent ride out a database outage: a failed
    write is dropped from this round (its data waits in memory), the
    connection is made again on the next use, and after
    AGENTVINE_DATABASE_RETRY_SECONDS without a successful status check the
    run gives up."""

    def __init__(self, work_order):
        self.work_order = work_order
        self.since = None

    @contextmanager
    def tolerated(self, *, probe=False):
        try:
            yield
        except DATABASE_ERRORS:
            now = time.monotonic()
            if self.since is None:
                self.since = now
                logger.warning(
                    "database unreachable while running work order %s; its agent goes on", self.work_order.pk
                )
            connection.close()
            if now - self.since > settings.AGENTVINE_DATABASE_RETRY_SECONDS:
                raise
        else:
            if probe and self.since is not None:
                logger.info(
                    "database back after %.1fs (work order %s)", time.monotonic() - self.since, self.work_order.pk
                )
                self.since = None


class _Lease:
    """The run's lease (``Execution.lease_expires_at``), renewed from the loop
    that drives the agent: a runner that stops driving (crashed, stuck) lets
    it expire, and the guardian takes the work back although the slot's
    heartbeat thread still beats. Each renewal that lands resets the run's
    fence (``workers_app.fencing``); renewals come every quarter of the fence
    (or third of the lease), so one slow renewal does not fence a healthy run."""

    def __init__(self, execution, fence):
        self.execution = execution
        self.fence = fence
        self.every = min(settings.AGENTVINE_LEASE_SECONDS / 3, settings.AGENTVINE_FENCE_SECONDS / 4)
        self.next_renewal = time.monotonic() + self.every

    def renew_when_due(self):
        now = time.monotonic()
        if now >= self.next_renewal:
            self.next_renewal = now + self.every
            if lifecycle.execution_lease_renew(execution=self.execution):
                self.fence.renewed()


def snapshot_message(task, execution, summary):
    """The message of a run's snapshot commit: task title, attempt, and the
    agent's final summary when it gave one."""
    lines = [f"{task.title} (attempt {execution.attempt})"]
    if summary and summary.strip():
        lines += ["", summary.strip()]
    return "\n".join(lines)


class _NothingToSend(Exception):
    pass


def _results_start(work_order, execution):
    """A later turn (a message turn, a retry, a run requeued from elsewhere)
    starts from the task's branch as the server has it: on a host whose
    workspace lacks the commits another host's turn sent (or with an empty
    workspace root) they are fetched first. The server's head is kept on
    ``execution.results_known``: the run's upload then sends only what
    follows it. A first run has nothing on the server and asks nothing."""
    execution.results_known = None
    if work_order.kind == WorkOrderKind.RUN_TASK and execution.attempt == 1:
        return
    task = work_order.task
    recorded = (
        Execution.objects.filter(task_id=task.pk)
        .exclude(pk=execution.pk)
        .exclude(head_commit="")
        .order_by("-started_at")
        .values_list("head_commit", flat=True)
        .first()
    )
    if recorded is None:
        return
    if recorded == workspace_head(task=task):
        # This host made (or already fetched) the branch's last commits.
        execution.results_known = recorded
        return
    try:
        execution.results_known = results_fetch(
            api_url=settings.AGENTVINE_API_URL,
            authorization=f"Agent {execution.agent_token}",
            execution_id=execution.pk,
            task=task,
        )
    except (UploadFailed, GitFailed, OSError) as exc:
        logger.warning("task %s: cannot fetch its branch from the server: %s", task.pk, exc)


def _snapshot(work_order, execution, *, summary):
    """Commit the run's workspace on the task's branch and record what changed
    on its execution. A snapshot that fails is logged, not fatal: the run's
    outcome is still recorded."""
    task = work_order.task
    try:
        snapshot = workspace_snapshot(task=task, message=snapshot_message(task, execution, summary))
    except (GitFailed, WorkspaceError, OSError):
        logger.exception("cannot snapshot the workspace of work order %s", work_order.pk)
        return None
    if snapshot is None:
        return None
    try:
        if snapshot.head_commit in (snapshot.base_commit, getattr(execution, "results_known", None)):
            # The branch is still at its base, or where the server has it: no commits to send.
            raise _NothingToSend
        # The server keeps the commits and records the diff from its copy.
        results_upload(
            api_url=settings.AGENTVINE_API_URL,
            authorization=f"Agent {execution.agent_token}",
            execution_id=execution.pk,
            task=task,
            snapshot=snapshot,
            known=getattr(execution, "results_known", None),
        )
    except (_NothingToSend, UploadFailed, GitFailed, OSError) as exc:
        if not isinstance(exc, _NothingToSend):
            # The commit stays on this host's branch; what it changed is still recorded.
            logger.warning("results of work order %s not sent to the server: %s", work_order.pk, exc)
        _with_database(
            lambda: execution_record_result(
                execution=execution,
                base_commit=snapshot.base_commit,
                head_commit=snapshot.head_commit,
                changed_files=snapshot.files,
            )
        )
    return snapshot


def _record_usage(execution, usage):
    execution_record_usage(
        execution=execution,
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        cost_usd=Decimal(str(round(float(usage.get("cost_usd") or 0), 6))),
    )


def _finish_failed(worker, work_order, execution, error, *, retryable, exit_code=None):
    try:
        _with_database(
            lambda: lifecycle.work_order_fail(
                work_order=work_order,
                worker=worker,
                execution=execution,
                error=error,
                exit_code=exit_code,
                retryable=retryable,
            )
        )
    except IllegalTransition:
        # Someone else (cancel, guardian) already moved it on.
        logger.info("work order %s was no longer ours to fail", work_order.pk)
        _close_taken(worker, work_order, error, execution)


def _close_taken(worker, work_order, reason, execution):
    """The work order moved on without this run (cancelled, requeued): its
    attempt ends interrupted with its token and session, and the slot is
    free; if whoever moved it on closed the attempt already, only the slot."""
    try:
        _with_database(
            lambda: lifecycle.work_order_interrupted(
                work_order=work_order, worker=worker, reason=reason, execution=execution
            )
        )
    except IllegalTransition:
        logger.info("attempt of work order %s was already closed", work_order.pk)
        _with_database(lambda: worker_release(worker=worker))
