"""The work-order lifecycle: every transition of a work order and its
execution (one attempt), with the side effects each one owns.

    queued ──claim──▶ claimed ──start──▶ running ──▶ completed
      ▲                                   │  ▲
      │                                   ▼  └── waiting (agent asked a human)
      └── requeue (stalled / preempted / retry with backoff) ◀── fail ──▶ dead
      ▲                                   │
      └──── resume (budget raised) ◀── paused (its task's budget spent)

A transition is ``UPDATE … WHERE id=… AND status IN (…)``; zero rows means
somebody else got there first (a duplicate doorbell, a cancel, a guardian), and
the service raises :class:`IllegalTransition` or returns ``None`` for the
expected race of claiming. Celery dispatch happens only after commit
(``queue_app.dispatch``).

What a transition owns, it writes in its own statement or transaction: the
task following its run work order, the slot's status, the attempt's closing,
its agent token (``queue_app.credentials``) and its agent session
(``queue_app.run_sessions``). A run's end is keyed by its execution, never by
its work order, so a stale run never touches the run that replaced it. Other
apps join a transition through the hooks below, connected in their
``AppConfig.ready()``; the engine imports none of them.
"""

import copy
import logging
import random
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from agentvine import db, events
from agentvine.db import insert_sql, update_returning, update_sql
from agentvine.errors import ExecutionFenced, IllegalTransition, PermissionDenied
from agentvine.wakeups import work_order_wake
from queue_app import budgets, concurrency, credentials, fairness, rate_limits, run_sessions
from queue_app.dispatch import dispatch_new_on_commit, dispatch_on_commit
from queue_app.models import (
    ACTIVE_STATUSES,
    Execution,
    ExecutionStatus,
    WorkOrder,
    WorkOrderKind,
    WorkOrderStatus,
)
from queue_app.preemption import preempt_on_commit
from tasks_app.models import PRIORITY_RANK, Priority, Task, TaskStatus
from workers_app.models import Worker, WorkerStatus

logger = logging.getLogger(__name__)

ERR_NOT_CLAIMABLE = "work order is not queued"
ERR_NOT_YOURS = "work order belongs to another worker"
ERR_CANNOT_START = "work order must be claimed by this worker to start"
ERR_CANNOT_COMPLETE = "work order is not running on this worker"
ERR_CANNOT_FAIL = "work order is not active on this worker"
ERR_CANNOT_CANCEL = "work order is already finished"
ERR_CANNOT_REQUEUE = "work order is not active"
ERR_CANNOT_RETRY = "only failed, dead or cancelled work can be retried"
ERR_CANNOT_PAUSE = "work order is not queued or active"
ERR_LOST_TOO_OFTEN = "gave up after {lost} attempts lost with their workers"
ERR_STILL_YOURS = "work order is still active on this worker: complete or fail it"
ERR_NO_RUNNING_ATTEMPT = "this worker has no running attempt of this work order"
ERR_FENCED = "execution {execution} is no longer the live run of its work order"

# Task status follows the status of its run work order.
TASK_STATUS_FOR = {
    WorkOrderStatus.QUEUED: TaskStatus.QUEUED,
    WorkOrderStatus.CLAIMED: TaskStatus.QUEUED,
    WorkOrderStatus.RUNNING: TaskStatus.IN_PROGRESS,
    WorkOrderStatus.WAITING: TaskStatus.IN_PROGRESS,
    WorkOrderStatus.COMPLETED: TaskStatus.COMPLETED,
    WorkOrderStatus.FAILED: TaskStatus.FAILED,
    WorkOrderStatus.DEAD: TaskStatus.FAILED,
    WorkOrderStatus.CANCELLED: TaskStatus.CANCELLED,
    WorkOrderStatus.PAUSED: TaskStatus.PAUSED_BUDGET,
}


# --- hooks --------------------------------------------------------------------

# An attempt failed; sent inside the failing transaction with ``work_order``
# (as it now is), ``execution`` (the failed attempt) and ``retry`` (whether the
# work order runs again) and ``reason``. ``chat_app`` returns the messages a
# failed message turn took to the inbox (or fails them with the turn).
attempt_failed = Signal()

# A run ended (any way: completed, failed, interrupted, requeued, abandoned);
# sent with ``execution`` and ``now`` while its end is built. Receivers
# return a list of changes (``(sql, params)``, as ``agentvine.db`` builds
# them) written with the end, in its own statement: ``chat_app`` closes the
# questions the run left unanswered.
run_ended = Signal()

# A task's run work order ended for good (completed, failed, dead or
# cancelled); sent inside the transaction that ended it with ``work_order``
# (as it now is). ``tasks_app.graph`` queues the dependants it released, in
# that same transaction.
run_task_finished = Signal()

_FINISHED = (WorkOrderStatus.COMPLETED, WorkOrderStatus.FAILED, WorkOrderStatus.DEAD, WorkOrderStatus.CANCELLED)


def _run_task_finished(work_order):
    if work_order.kind == WorkOrderKind.RUN_TASK and work_order.status in _FINISHED:
        run_task_finished.send(sender=WorkOrder, work_order=work_order)


# A work order completed; sent after its transition (committed unless the
# caller holds a transaction) with ``work_order`` as it now is. ``chat_app``
# notifies the operators who subscribed to completions.
work_order_completed = Signal()


# --- publishing ---------------------------------------------------------------


def work_order_payload(work_order):
    return {
        "id": str(work_order.id),
        "task_id": str(work_order.task_id),
        "kind": work_order.kind,
        "status": work_order.status,
        "priority": work_order.priority,
        "worker_id": str(work_order.worker_id) if work_order.worker_id else None,
        "retry_count": work_order.retry_count,
        "last_error": work_order.last_error[-500:],
    }


def _work_order_event(work_order):
    groups = [events.task_group(work_order.task_id)]
    if work_order.worker_id:
        groups.append(events.worker_group(work_order.worker_id))
    return "work_order.updated", work_order_payload(work_order), groups


def worker_event(worker):
    """``worker``'s current state as a ``(type, payload, groups)`` live event."""
    payload = {
        "id": str(worker.id),
        "name": worker.name,
        "status": worker.status,
        "hostname": worker.hostname,
        "current_work_order_id": str(worker.current_work_order_id) if worker.current_work_order_id else None,
    }
    return "worker.updated", payload, [events.worker_group(worker.id)]


def _publish_work_order(work_order):
    event_type, payload, groups = _work_order_event(work_order)
    events.publish(event_type, payload, groups=groups)


# --- helpers --------------------------------------------------------------------


def _task_status_update(work_order, *, now):
    """``(where, changes)`` making the task follow its run work order, or
    None for a message delivery (those don't move the task)."""
    if work_order.kind != WorkOrderKind.RUN_TASK:
        return None
    status = TASK_STATUS_FOR[work_order.status]
    finished = status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
    changes = {"status": status, "updated_at": now, "completed_at": now if finished else None}
    return {"pk": work_order.task_id}, changes


def _sync_task_status(work_order, *, now):
    """Make the task follow its run work order (message deliveries don't count).

    The updated task comes back with the UPDATE and is attached to
    ``work_order``, so callers that go on to use the task never read it again.
    """
    update = _task_status_update(work_order, now=now)
    if update is None:
        return
    tasks = update_returning(Task, update[0], **update[1])
    if tasks:
        work_order.task = tasks[0]


def _claim_update(work_order_id, *, worker, now, **changes):
    """``(where, changes)`` of the claim: queued → ``changes["status"]`` for
    ``worker``, unless it is still backing off."""
    where = {"pk": work_order_id, "status__in": [WorkOrderStatus.QUEUED], "not_before__isnull_or_lte": now}
    return where, {"worker_id": worker.id, "claimed_at": now, "updated_at": now, **changes}


def _cas_claim(work_order_id, *, worker, now, **changes):
    """The claim (:func:`_claim_update`) as a compare-and-set; the updated row or None."""
    where, changes = _claim_update(work_order_id, worker=worker, now=now, **changes)
    rows = update_returning(WorkOrder, where, **changes)
    return rows[0] if rows else None


def _cas(work_order_id, *, from_statuses, where=None, **changes):
    """Compare-and-set one work order (``where``: more conditions, as
    ``agentvine.db`` takes them); returns the updated row or None."""
    changes.setdefault("updated_at", timezone.now())
    conditions = {"pk": work_order_id, "status__in": list(from_statuses), **(where or {})}
    rows = update_returning(WorkOrder, conditions, **changes)
    return rows[0] if rows else None


def _task_status_sql(work_order, *, now):
    """:func:`_sync_task_status` as a change for ``events.publish`` (None: no change)."""
    update = _task_status_update(work_order, now=now)
    return None if update is None else update_sql(Task, update[0], **update[1])


def _worker_change(worker, *, status, work_order_id, now, apply=True):
    """``worker``'s new status as a change, and its ``worker.updated`` event;
    ``apply`` sets it on ``worker`` at once (else :func:`_worker_apply` does,
    once it is written)."""
    changed = copy.copy(worker)
    _worker_apply(changed, status=status, work_order_id=work_order_id, now=now)
    change = update_sql(Worker, {"pk": worker.pk}, status=status, current_work_order_id=work_order_id, updated_at=now)
    if apply:
        _worker_apply(worker, status=status, work_order_id=work_order_id, now=now)
    return change, worker_event(changed)


def _worker_apply(worker, *, status, work_order_id, now):
    worker.status, worker.current_work_order_id, worker.updated_at = status, work_order_id, now


def _run_end_sql(execution, *, now, in_transaction=True):
    """What ends with the run ``execution``: its agent tokens, and its
    session goes idle (it stays for a follow-up until terminated). Nothing
    without an execution (a claim that never started). Inside a transaction
    the next work of its concurrency key gets a doorbell after commit;
    otherwise (``in_transaction=False``) the caller rings it once written."""
    if execution is None:
        return []
    changes = [credentials.agent_token_revoke_sql(execution_id=execution.pk, now=now)]
    if in_transaction:
        concurrency.next_in_key_on_commit(work_order_id=execution.work_order_id)
    session = run_sessions.agent_session_release_sql(execution=execution, now=now)
    if session is not None:
        changes.append(session)
    for _, joined in run_ended.send(sender=Execution, execution=execution, now=now):
        changes.extend(joined)
    return changes


def _live_execution_guard(guard, execution):
    """``guard`` (``(sql, params)`` of an UPDATE of the work order) made to
    match only while ``execution`` is still running: the live run."""
    executions, connection = db.table(Execution)
    where, params = executions.where({"pk": execution.pk, "status": ExecutionStatus.RUNNING}, connection)
    sql, guard_params = guard
    return f"{sql} AND EXISTS (SELECT 1 FROM {executions.name} WHERE {where})", (*guard_params, *params)


def _lock_live_execution(work_order, execution):
    """Lock ``execution`` in the caller's transaction; :class:`ExecutionFenced`
    unless it is still the live (running) run of ``work_order``. A requeue
    takes the work order's lock first and closes its running attempts, so
    under these locks the answer holds until commit."""
    if execution is None:
        return
    live = Execution.objects.select_for_update().filter(
        pk=execution.pk, work_order_id=work_order.pk, status=ExecutionStatus.RUNNING
    )
    if not live.exists():
        raise ExecutionFenced(ERR_FENCED.format(execution=execution.pk))


def execution_assert_live(*, work_order, execution):
    """In the caller's transaction, with ``work_order`` locked: raise
    :class:`ExecutionFenced` unless ``execution`` is its live run."""
    _lock_live_execution(work_order, execution)


def _lease_until(now):
    return now + timedelta(seconds=settings.AGENTVINE_LEASE_SECONDS)


def execution_lease_renew(*, execution):
    """The runner of ``execution`` is alive: extend its lease. False once the
    run is no longer running (closed by someone else)."""
    rows = Execution.objects.filter(pk=execution.pk, status=ExecutionStatus.RUNNING).update(
        lease_expires_at=_lease_until(timezone.now())
    )
    return rows == 1


def execution_leases_renew(*, worker, work_order=None):
    """A remote worker's word that it still drives its runs (of ``work_order``
    only, when given): its heartbeat, and its runner's poll of its work order.
    Returns ``{execution id: lease expiry}`` of the runs renewed: its live runs."""
    runs = Execution.objects.filter(worker=worker, status=ExecutionStatus.RUNNING)
    if work_order is not None:
        runs = runs.filter(work_order=work_order)
    until = _lease_until(timezone.now())
    if not runs.update(lease_expires_at=until):
        return {}
    return {str(pk): until for pk in runs.filter(lease_expires_at=until).values_list("pk", flat=True)}


def execution_abandon(*, execution, reason):
    """The run ``execution`` lost its runner after its work order moved on
    (cancelled while its worker was dead, say): it ends ``interrupted`` with
    its token, session and open questions, and its slot is free again if it
    is still marked busy with it. None if it was no longer running."""
    now = timezone.now()
    with transaction.atomic():
        locked = Execution.objects.select_for_update().filter(pk=execution.pk, status=ExecutionStatus.RUNNING).first()
        if locked is None:
            return None
        closing = _close_execution_sql(locked, status=ExecutionStatus.INTERRUPTED, now=now, error=reason)
        changes = [closing, *_run_end_sql(locked, now=now)]
        payload = {"id": str(locked.pk), "task_id": str(locked.task_id), "status": ExecutionStatus.INTERRUPTED}
        published = [("execution.updated", {**payload, "error": reason[-500:]}, [events.task_group(locked.task_id)])]
        worker = (
            Worker.objects.filter(pk=locked.worker_id, current_work_order_id=locked.work_order_id)
            .exclude(status=WorkerStatus.OFFLINE)
            .first()
        )
        if worker is not None:
            change, event = _worker_change(worker, status=WorkerStatus.IDLE, work_order_id=None, now=now)
            changes.append(change)
            published.append(event)
        events.publish_many(published, changes=changes)
    locked.status, locked.completed_at, locked.error = ExecutionStatus.INTERRUPTED, now, reason[-10000:]
    return locked


def execution_release(*, execution):
    """The run ``execution`` ended without a transition that ended it (its
    runner crashed out): its token stops working and its session goes idle,
    both only if still this run's."""
    changes = _run_end_sql(execution, now=timezone.now())
    if not changes:
        return
    _, connection = db.table(WorkOrder)
    with transaction.atomic(), connection.cursor() as cursor:
        for change in changes:
            cursor.execute(*change)


def _transition(work_order, *, worker=None, worker_status=None, changes=(), now, apply=True):
    """What publishing ``work_order``'s new state writes: ``(events,
    changes)`` with ``changes``, the task following it and, given a worker,
    that worker's new status."""
    changes = [*changes, _task_status_sql(work_order, now=now)]
    published = [_work_order_event(work_order)]
    if worker is not None:
        busy_with = work_order.id if worker_status in (WorkerStatus.BUSY, WorkerStatus.WAITING) else None
        change, event = _worker_change(worker, status=worker_status, work_order_id=busy_with, now=now, apply=apply)
        changes.append(change)
        published.append(event)
    return published, [change for change in changes if change is not None]


def _publish_transition(work_order, *, worker=None, worker_status=None, changes=(), now):
    """Publish ``work_order``'s new state (:func:`_transition`): one statement."""
    published, changes = _transition(work_order, worker=worker, worker_status=worker_status, changes=changes, now=now)
    events.publish_many(published, changes=changes)


def retry_backoff_seconds(retry_count):
    """Exponential backoff with full jitter, capped."""
    base = settings.AGENTVINE_RETRY_BACKOFF_BASE
    ceiling = min(settings.AGENTVINE_RETRY_BACKOFF_MAX, base * (2 ** max(retry_count - 1, 0)))
    return random.uniform(ceiling / 2, ceiling)


# --- transitions ----------------------------------------------------------------


def work_order_new(*, task, kind=WorkOrderKind.RUN_TASK, priority=None, max_retries=None):
    """An unsaved queued work order for ``task``; :func:`work_orders_insert` writes it."""
    priority = priority or task.priority
    return WorkOrder(
        task=task,
        kind=kind,
        priority=priority,
        priority_rank=PRIORITY_RANK[priority],
        concurrency_key=concurrency.concurrency_key_for(task.executor)[0],
        scope_key=concurrency.scope_key_for(task)[0],
        fair_key=fairness.fair_key_for(task),
        line_at=fairness.line_at(),
        max_retries=settings.AGENTVINE_MAX_RETRIES if max_retries is None else max_retries,
    )


def work_orders_insert(work_orders, *, changes=(), published=()):
    """Write new queued ``work_orders`` (with ``changes`` and events of the
    caller's, as ``events.publish_many`` takes them) in one statement, their
    tasks following; each doorbell rings after commit."""
    changes, published = list(changes), list(published)
    # The limits as configured now, before the orders that count against them.
    limits = {}
    for work_order in work_orders:
        for key, limit in (
            concurrency.concurrency_key_for(work_order.task.executor),
            concurrency.scope_key_for(work_order.task),
        ):
            if limit is not None:
                limits[key] = limit
    changes.extend(concurrency.limits_changes(limits))
    # Work of a key paused by a rate limit waits for its reset (queue_app.rate_limits).
    paused = fairness.line_places(work_orders)
    for work_order in work_orders:
        if work_order.concurrency_key in paused:
            work_order.not_before = paused[work_order.concurrency_key]
    for work_order in work_orders:
        changes.append(insert_sql(work_order))
        changes.append(_task_status_sql(work_order, now=work_order.enqueued_at))
        published.append(_work_order_event(work_order))
    events.publish_many(published, changes=[change for change in changes if change is not None])
    for work_order in work_orders:
        dispatch_new_on_commit(work_order)
    high = [work_order for work_order in work_orders if work_order.priority == Priority.HIGH]
    if high:
        preempt_on_commit(high[0])


def work_order_enqueue(*, task, kind=WorkOrderKind.RUN_TASK, priority=None, max_retries=None):
    """Create a queued work order for ``task`` and dispatch it after commit."""
    work_order = work_order_new(task=task, kind=kind, priority=priority, max_retries=max_retries)
    work_orders_insert([work_order])
    return work_order


def _key_full_retried(claim):
    """``claim()`` again when it lost the race for a concurrency key's last
    seat (the trigger refused it, its transaction rolled back): a fresh
    attempt sees the key full and takes other work. None when it keeps losing."""
    for _ in range(concurrency.CLAIM_ATTEMPTS):
        try:
            return claim()
        except DatabaseError as error:
            if not concurrency.is_key_full(error):
                raise
    return None


def work_order_claim(*, worker, work_order_id=None):
    """Claim one queued work order for ``worker``.

    With an id (a Celery doorbell) only that work order is claimed; without one
    (a pull worker) the highest-priority, oldest ready one is. Returns ``None``
    when there is nothing to claim: a duplicate or late doorbell, a cancelled
    order, one still backing off, or one whose concurrency key is full.
    """
    return _key_full_retried(lambda: _work_order_claim(worker=worker, work_order_id=work_order_id))


def _work_order_claim(*, worker, work_order_id):
    now = timezone.now()
    ready = Q(not_before__isnull=True) | Q(not_before__lte=now)
    with transaction.atomic():
        if work_order_id is None:
            # skip_locked: concurrent claimers each take a different row
            # instead of queueing up behind the first one's lock.
            candidate = (
                WorkOrder.objects.select_for_update(skip_locked=True)
                .filter(status=WorkOrderStatus.QUEUED)
                .filter(ready)
                .filter(concurrency.keys_ready())
                .order_by(*fairness.LINE_ORDER)
                .values_list("pk", flat=True)
                .first()
            )
            if candidate is None:
                return None
            work_order_id = candidate
        work_order = _cas_claim(work_order_id, worker=worker, now=now, status=WorkOrderStatus.CLAIMED)
        if work_order is None:
            return None
        _sync_task_status(work_order, now=now)
        if refused := budgets.refusal(work_order.task, now=now):
            # Its budget is spent: the worker gets nothing (queue_app.budgets).
            work_order_over_budget(work_order=work_order, worker=worker, refusal=refused)
            return None
        _publish_work_order(work_order)
    return work_order


def _execution_begin(work_order, *, worker, session, now, attempt=None, changes=()):
    """The running ``work_order``'s new attempt (number ``attempt``, counted
    here if not given), its task and worker marked busy, published with
    ``changes`` of the caller's: one statement.

    The attempt's agent token (its secret, shown once) is on
    ``execution.agent_token``: the agent asks humans with it while it runs.
    """
    if attempt is None:
        attempt = Execution.objects.filter(work_order=work_order).count() + 1
    execution = Execution(
        task_id=work_order.task_id,
        work_order=work_order,
        worker=worker,
        session=session,
        attempt=attempt,
        lease_expires_at=_lease_until(now),
    )
    token, token_change = credentials.agent_token_new(work_order=work_order, execution=execution)
    _publish_transition(
        work_order,
        worker=worker,
        worker_status=WorkerStatus.BUSY,
        changes=[*changes, insert_sql(execution), token_change],
        now=now,
    )
    execution.agent_token = token
    return execution


def work_order_start(*, work_order, worker, session=None):
    """claimed → running; opens a new Execution (one attempt)."""
    now = timezone.now()
    with transaction.atomic():
        fresh = _cas(
            work_order.id,
            from_statuses=[WorkOrderStatus.CLAIMED],
            where={"worker_id": worker.id},
            status=WorkOrderStatus.RUNNING,
            started_at=now,
        )
        if fresh is None:
            raise IllegalTransition(ERR_CANNOT_START)
        execution = _execution_begin(fresh, worker=worker, session=session, now=now)
    return fresh, execution


def work_order_claim_start(*, worker, work_order_id, session_kinds=()):
    """A Celery slot's doorbell (for ``work_order_id``): claim the ready work
    order that comes first in line and start it, queued → running in one
    transaction (nobody else acts on a claimed order in between).

    First in line is the highest priority, then the oldest ``enqueued_at``,
    whichever doorbell rang: a doorbell says "one more is ready", the
    database says which. So work requeued after its worker died keeps its
    place ahead of newer work, even with hundreds of newer doorbells queued
    in the broker ahead of its own. Usually the oldest is the doorbell's own
    order; when another doorbell took it first, that doorbell finds nothing.

    A work order of one of ``session_kinds`` runs in its task's agent session,
    opened or resumed here (``queue_app.run_sessions``).
    Returns ``(work_order, execution, session, resume)`` with the task loaded,
    or ``None`` when there is nothing to claim (as :func:`work_order_claim`).
    Two statements on PostgreSQL: the claim with one read of what the run
    needs, then one write. Work whose concurrency key is full is passed over
    (``queue_app.concurrency``).
    """
    return _key_full_retried(
        lambda: _work_order_claim_start(worker=worker, work_order_id=work_order_id, session_kinds=session_kinds)
    )


def _work_order_claim_start(*, worker, work_order_id, session_kinds):
    now = timezone.now()
    with transaction.atomic():
        claimed = _claim_for_run(work_order_id, worker=worker, now=now)
        if claimed is None:
            return None
        fresh, fresh.task, attempts, current, last_status = claimed
        if refused := budgets.refusal(fresh.task, now=now, task_spent=fresh.task.spent_usd):
            # Its budget is spent: no agent starts (queue_app.budgets).
            work_order_over_budget(work_order=fresh, worker=worker, refusal=refused)
            return None
        session, resume, changes = None, False, []
        if fresh.kind in session_kinds:
            session, resume, change = run_sessions.agent_session_take(
                task=fresh.task, worker=worker, current=current, last_status=last_status, now=now
            )
            changes.append(change)
        execution = _execution_begin(
            fresh, worker=worker, session=session, now=now, attempt=attempts + 1, changes=changes
        )
    return fresh, execution, session, resume


def _claim_for_run(work_order_id, *, worker, now):
    """:func:`_cas_claim` straight to running, and what starting the run
    needs: ``(work_order, its task, attempts so far, the task's live agent
    session (locked) or None, the status of that session's last attempt)``,
    or None when there is nothing to claim.

    On PostgreSQL the claim and the read are one statement (the claim as a
    data-modifying CTE, the session found by a LATERAL join); elsewhere two.
    """
    orders, connection = db.table(WorkOrder)
    if connection.vendor != "postgresql":
        # SQLite: writers take the database lock at BEGIN (transaction_mode
        # IMMEDIATE), so the first in line cannot be claimed by another meanwhile.
        first = (
            WorkOrder.objects.filter(status=WorkOrderStatus.QUEUED)
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
            .filter(concurrency.keys_ready())
            .order_by(*fairness.LINE_ORDER)
            .values_list("pk", flat=True)
            .first()
        )
        if first is None:
            return None
        fresh = _cas_claim(first, worker=worker, now=now, status=WorkOrderStatus.RUNNING, started_at=now)
        if fresh is None:
            return None
        return fresh, *_run_context(fresh)
    claim_sql, claim_params = _claim_first_sql(
        orders, connection, worker=worker, now=now, status=WorkOrderStatus.RUNNING, started_at=now
    )
    tasks, _ = db.table(Task)
    executions, _ = db.table(Execution)
    session_sql, session_params = run_sessions.live_session_sql(
        task_column=f"claimed.{orders.columns['task_id']}", lock=True
    )
    task_spent = _task_spent_sql("t")
    sql = (
        f"WITH claimed AS ({claim_sql} RETURNING {orders.select_list()})"
        f" SELECT claimed.*, {tasks.select_list('t')},"
        f" (SELECT COUNT(*) FROM {executions.name} e"
        f" WHERE e.{executions.columns['work_order_id']} = claimed.{orders.columns['pk']}), {task_spent}, live.*"
        f" FROM claimed JOIN {tasks.name} t ON t.{tasks.columns['pk']} = claimed.{orders.columns['task_id']}"
        f" LEFT JOIN LATERAL ({session_sql}) live ON true"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*claim_params, *session_params])
        row = cursor.fetchone()
    if row is None:
        return None
    width = len(orders.attnames)
    return orders.from_row(row[:width], connection), *_run_context_from_row(row[width:], connection)


def _claim_first_sql(orders, connection, *, worker, now, **changes):
    """``(sql, params)``: the claim (:func:`_claim_update`'s changes) of the
    first ready work order in line, skipping rows another claimer has locked.

    'queued' is written into the statement, not sent as a parameter: a slot's
    generic plan can then use the partial index of the ready set.
    """
    c = orders.columns
    changes = {"worker_id": worker.id, "claimed_at": now, "updated_at": now, **changes}
    sets = ", ".join(f"{c[name]} = %s" for name in changes)
    params = [orders.prepare(name, value, connection) for name, value in changes.items()]
    queued = f"{c['status']} = '{WorkOrderStatus.QUEUED.value}'"
    key_ready = concurrency.ready_sql(orders.name)
    first = (
        f"SELECT {c['pk']} FROM {orders.name} WHERE {queued}"
        f" AND ({c['not_before']} IS NULL OR {c['not_before']} <= %s)"
        f" AND {key_ready}"
        f" ORDER BY {c['priority_rank']}, {c['line_at']}, {c['enqueued_at']} LIMIT 1 FOR UPDATE SKIP LOCKED"
    )
    sql = f"UPDATE {orders.name} SET {sets} WHERE {c['pk']} = ({first}) AND {queued}"
    return sql, [*params, orders.prepare("not_before", now, connection)]


def _run_context(work_order):
    """What starting ``work_order`` needs (see :func:`_claim_for_run`), in one read."""
    tasks, connection = db.table(Task)
    executions, _ = db.table(Execution)
    session_sql, session_params = run_sessions.live_session_sql(task_id=work_order.task_id, lock=True)
    attempts_where, attempts_params = executions.where({"work_order_id": work_order.pk}, connection)
    task_where, task_params = tasks.where({"pk": work_order.task_id}, connection, alias="t")
    task_spent = _task_spent_sql("t")
    sql = (
        f"SELECT {tasks.select_list('t')}, (SELECT COUNT(*) FROM {executions.name} WHERE {attempts_where}),"
        f" {task_spent}, live.*"
        f" FROM {tasks.name} t LEFT JOIN ({session_sql}) live ON 1 = 1 WHERE {task_where}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*attempts_params, *session_params, *task_params])
        row = cursor.fetchone()
    return _run_context_from_row(row, connection)


def _task_spent_sql(task_alias):
    """What the runs of the task (``task_alias``, a row of its table) spent,
    as a column, NULL when the task has no budget (the sum is then not
    computed): read with the claim, so a task budget costs the claim no
    statement of its own (queue_app.budgets)."""
    executions, _ = db.table(Execution)
    tasks, _ = db.table(Task)
    e, t = executions.columns, tasks.columns
    total = (
        f"(SELECT COALESCE(SUM(s.{e['cost_usd']}), 0) FROM {executions.name} s"
        f" WHERE s.{e['task_id']} = {task_alias}.{t['pk']})"
    )
    return f"CASE WHEN {task_alias}.{t['budget_usd']} IS NULL THEN NULL ELSE {total} END"


def _run_context_from_row(row, connection):
    """``(task, attempts, session or None, last status)`` from a row of the
    task's columns, the attempt count, what the task's runs spent (set on the
    task as ``spent_usd``), then :func:`live_session_sql`'s."""
    tasks, _ = db.table(Task)
    width = len(tasks.attnames)
    task = tasks.from_row(row[:width], connection)
    task.spent_usd = None if row[width + 1] is None else budgets.dollars_read(row[width + 1])
    session, last_status = run_sessions.live_session_from_row(row[width + 2 :])
    return task, row[width], session, last_status


def _close_execution_sql(execution, *, status, now, exit_code=None, error=""):
    """Closing the running ``execution`` as a change (None without one)."""
    if execution is None:
        return None
    return update_sql(
        Execution,
        {"pk": execution.pk, "status": ExecutionStatus.RUNNING},
        status=status,
        completed_at=now,
        exit_code=exit_code,
        error=error[-10000:],
    )


def work_order_complete(*, work_order, worker, execution=None, exit_code=0):
    """running/waiting → completed on ``worker``; its attempt closes, the
    run's token is revoked, its session goes idle, the worker is free.

    One statement when ``work_order`` is still as this worker started it (a
    compare-and-set on its status, worker, priority and retry count, which
    the published state is built from); otherwise (an operator changed its
    priority meanwhile, say) a re-read decides.
    """
    now = timezone.now()
    completion = {"status": WorkOrderStatus.COMPLETED, "completed_at": now, "last_error": "", "updated_at": now}
    closing = _close_execution_sql(execution, status=ExecutionStatus.COMPLETED, now=now, exit_code=exit_code)
    run_end = [closing, *_run_end_sql(execution, now=now, in_transaction=False)]
    done = copy.copy(work_order)
    for name, value in {**completion, "worker_id": worker.id}.items():
        setattr(done, name, value)
    guard = update_sql(
        WorkOrder,
        {
            "pk": work_order.pk,
            "status__in": [WorkOrderStatus.RUNNING, WorkOrderStatus.WAITING],
            "worker_id": worker.id,
            "priority": work_order.priority,
            "retry_count": work_order.retry_count,
        },
        **completion,
    )
    if execution is not None:
        # Fencing: a stale run of this work order (requeued under it, then
        # started again on this same worker) cannot complete the live one.
        guard = _live_execution_guard(guard, execution)
    published, changes = _transition(
        done, worker=worker, worker_status=WorkerStatus.IDLE, changes=run_end, now=now, apply=False
    )
    # One transaction with what the completion releases (run_task_finished):
    # a dependant is queued with its last parent's completion or not at all.
    with transaction.atomic():
        rows = events.publish_guarded(published, guard=(WorkOrder, *guard), changes=changes)
        if rows is not None:
            _run_task_finished(rows[0])
    if rows is not None:
        _worker_apply(worker, status=WorkerStatus.IDLE, work_order_id=None, now=now)
        work_order_completed.send(sender=WorkOrder, work_order=done)
        concurrency.next_in_key_on_commit(
            work_order_id=work_order.pk, key=work_order.concurrency_key, scope_key=work_order.scope_key
        )
        return rows[0]
    with transaction.atomic():
        concurrency.next_in_key_on_commit(
            work_order_id=work_order.pk, key=work_order.concurrency_key, scope_key=work_order.scope_key
        )
        fresh = _cas(
            work_order.id,
            from_statuses=[WorkOrderStatus.RUNNING, WorkOrderStatus.WAITING],
            where={"worker_id": worker.id},
            **completion,
        )
        if fresh is None:
            raise IllegalTransition(ERR_CANNOT_COMPLETE)
        # Under the work order's lock (the order a requeue takes them in).
        _lock_live_execution(work_order, execution)
        _publish_transition(fresh, worker=worker, worker_status=WorkerStatus.IDLE, changes=run_end, now=now)
        _run_task_finished(fresh)
    work_order_completed.send(sender=WorkOrder, work_order=fresh)
    return fresh


def work_order_fail(*, work_order, worker, error, execution=None, exit_code=None, retryable=True):
    """Record a failed attempt: retry later with backoff, or end ``dead``.

    A non-retryable failure (bad configuration, missing binary) ends
    ``failed`` at once: retrying cannot help.
    """
    now = timezone.now()
    with transaction.atomic():
        current = WorkOrder.objects.select_for_update().filter(pk=work_order.id).first()
        _lock_live_execution(work_order, execution)
        if current is None or current.status not in ACTIVE_STATUSES or current.worker_id != worker.id:
            raise IllegalTransition(ERR_CANNOT_FAIL)
        closing = _close_execution_sql(
            execution, status=ExecutionStatus.FAILED, now=now, exit_code=exit_code, error=error
        )
        countdown = None
        if not retryable:
            changes = {"status": WorkOrderStatus.FAILED, "completed_at": now}
        elif current.retry_count < current.max_retries:
            countdown = retry_backoff_seconds(current.retry_count + 1)
            changes = {
                "status": WorkOrderStatus.QUEUED,
                "retry_count": current.retry_count + 1,
                "not_before": now + timedelta(seconds=countdown),
                "worker_id": None,
                "enqueued_at": now,
                # Placed anew in its own priority's line (queue_app.fairness).
                "priority_rank": PRIORITY_RANK[current.priority],
                "line_at": fairness.line_place(
                    priority_rank=PRIORITY_RANK[current.priority], fair_key=current.fair_key, at=now
                ),
            }
        else:
            changes = {"status": WorkOrderStatus.DEAD, "completed_at": now}
        fresh = _cas(current.id, from_statuses=ACTIVE_STATUSES, last_error=error[-10000:], **changes)
        changes = [closing, *_run_end_sql(execution, now=now)]
        _publish_transition(fresh, worker=worker, worker_status=WorkerStatus.IDLE, changes=changes, now=now)
        if execution is not None:
            attempt_failed.send(
                sender=WorkOrder,
                work_order=fresh,
                execution=execution,
                retry=fresh.status == WorkOrderStatus.QUEUED,
                reason=error,
            )
        if fresh.status == WorkOrderStatus.QUEUED:
            dispatch_on_commit(fresh.id, countdown=countdown)
        _run_task_finished(fresh)
    return fresh


def work_order_interrupted(*, work_order, worker, reason="", execution=None):
    """A worker stopped its agent because the work order moved on without it
    (cancelled, requeued, taken by a guardian): its running attempt ends
    ``interrupted`` with the partial output kept, the run's agent token is
    revoked, its session goes idle and the worker is free again.

    Refused while the work order is still active on ``worker`` (that run
    ends by completing or failing) or when ``worker`` runs no attempt of it.
    """
    now = timezone.now()
    with transaction.atomic():
        current = WorkOrder.objects.select_for_update().get(pk=work_order.pk)
        if current.status in ACTIVE_STATUSES and current.worker_id == worker.id:
            raise IllegalTransition(ERR_STILL_YOURS)
        running = Execution.objects.select_for_update().filter(
            work_order=current, worker=worker, status=ExecutionStatus.RUNNING
        )
        if execution is not None:
            # The run that stopped, not whichever attempt of the work order runs now.
            running = running.filter(pk=execution.pk)
        execution = running.order_by("-attempt").first()
        if execution is None:
            raise IllegalTransition(ERR_NO_RUNNING_ATTEMPT)
        error = reason or f"work order became {current.status}"
        closing = _close_execution_sql(execution, status=ExecutionStatus.INTERRUPTED, now=now, error=error)
        changes = [closing, *_run_end_sql(execution, now=now)]
        change, event = _worker_change(worker, status=WorkerStatus.IDLE, work_order_id=None, now=now)
        events.publish_many([event], changes=[*changes, change])
    # The row is locked and running: the closing above applied as written.
    execution.status, execution.completed_at, execution.error = ExecutionStatus.INTERRUPTED, now, error[-10000:]
    return execution


def work_order_cancel(*, work_order, reason="cancelled by operator"):
    """Cancel queued or active work; a running agent notices and stops."""
    now = timezone.now()
    with transaction.atomic():
        fresh = _cas(
            work_order.id,
            from_statuses=[WorkOrderStatus.QUEUED, WorkOrderStatus.PAUSED, *ACTIVE_STATUSES],
            status=WorkOrderStatus.CANCELLED,
            completed_at=now,
            last_error=reason,
        )
        if fresh is None:
            raise IllegalTransition(ERR_CANNOT_CANCEL)
        _sync_task_status(fresh, now=now)
        _publish_work_order(fresh)
        transaction.on_commit(lambda: work_order_wake(work_order_id=fresh.id))
        _run_task_finished(fresh)
    return fresh


def work_order_requeue(*, work_order, reason, lost=False, preempted=False, not_before=None):
    """Put active work back in the queue (dead worker, preemption, shutdown,
    an operator's requeue).

    None of these is the work's fault: no retry is spent, and the work keeps
    its place in line (its ``enqueued_at``: claims take the oldest ready work
    of a priority first). ``lost`` says the attempt died with its worker: the
    lost attempts are counted apart, and work whose runs keep killing their
    workers ends ``dead`` after AGENTVINE_MAX_LOST_ATTEMPTS of them (poison).
    ``preempted`` counts a priority preemption against AGENTVINE_PREEMPT_MAX.
    ``not_before``: the work waits until then (a rate limit's reset).
    """
    now = timezone.now()
    with transaction.atomic():
        current = WorkOrder.objects.select_for_update().filter(pk=work_order.id).first()
        if current is None or current.status not in ACTIVE_STATUSES:
            raise IllegalTransition(ERR_CANNOT_REQUEUE)
        lost_count = current.lost_count + (1 if lost else 0)
        if lost_count >= settings.AGENTVINE_MAX_LOST_ATTEMPTS:
            reason = f"{reason}; {ERR_LOST_TOO_OFTEN.format(lost=lost_count)}"
            changes = {"status": WorkOrderStatus.DEAD, "completed_at": now, "lost_count": lost_count}
        else:
            changes = {
                "status": WorkOrderStatus.QUEUED,
                "lost_count": lost_count,
                "worker_id": None,
                "not_before": not_before,
                "preempt_count": current.preempt_count + (1 if preempted else 0),
            }
        fresh = _cas(current.id, from_statuses=ACTIVE_STATUSES, last_error=reason, preempt_requested_at=None, **changes)
        _attempts_close(
            current, status=ExecutionStatus.FAILED if lost else ExecutionStatus.INTERRUPTED, reason=reason, now=now
        )
        _sync_task_status(fresh, now=now)
        _publish_work_order(fresh)
        if fresh.status == WorkOrderStatus.QUEUED:
            wait = (not_before - now).total_seconds() if not_before else 0
            dispatch_on_commit(fresh.id, countdown=wait if wait > 0 else None)
        _run_task_finished(fresh)
    return fresh


def _attempts_close(current, *, status, reason, now):
    """The running attempts of ``current`` (locked, taken off its worker)
    end ``status`` with their tokens and sessions, as any run's end, and its
    worker no longer holds it."""
    running = list(Execution.objects.select_for_update().filter(work_order=current, status=ExecutionStatus.RUNNING))
    Execution.objects.filter(pk__in=[execution.pk for execution in running]).update(
        status=status, completed_at=now, error=reason
    )
    with db.table(WorkOrder)[1].cursor() as cursor:
        for execution in running:
            for change in _run_end_sql(execution, now=now):
                cursor.execute(*change)
    if not running and current.status in ACTIVE_STATUSES:
        # Taken back before its agent started: the seats it held are free again.
        concurrency.next_in_key_on_commit(
            work_order_id=current.pk, key=current.concurrency_key, scope_key=current.scope_key
        )
    if current.worker_id:
        Worker.objects.filter(pk=current.worker_id, current_work_order_id=current.id).update(
            current_work_order_id=None, updated_at=now
        )


def work_order_pause(*, work_order, reason):
    """Queued or active work whose task's budget is spent waits ``paused``
    (its task ``paused_budget``) until :func:`work_orders_resume`: a running
    attempt ends interrupted (its output and changes are already kept), no
    retry is spent, and it keeps its place in line."""
    now = timezone.now()
    statuses = [WorkOrderStatus.QUEUED, *ACTIVE_STATUSES]
    with transaction.atomic():
        current = WorkOrder.objects.select_for_update().filter(pk=work_order.id).first()
        if current is None or current.status not in statuses:
            raise IllegalTransition(ERR_CANNOT_PAUSE)
        fresh = _cas(
            current.id,
            from_statuses=statuses,
            status=WorkOrderStatus.PAUSED,
            worker_id=None,
            not_before=None,
            preempt_requested_at=None,
            last_error=reason,
        )
        _attempts_close(current, status=ExecutionStatus.INTERRUPTED, reason=reason, now=now)
        if fresh.kind == WorkOrderKind.RUN_TASK:
            _sync_task_status(fresh, now=now)
        else:
            # A message turn's budget is its task's: the task shows why it waits.
            Task.objects.filter(pk=fresh.task_id).update(status=TaskStatus.PAUSED_BUDGET, updated_at=now)
        _publish_work_order(fresh)
        events.publish(
            "task.paused_budget",
            {"task_id": str(fresh.task_id), "reason": reason},
            groups=[events.task_group(fresh.task_id)],
        )
    return fresh


def work_orders_resume(*, task):
    """``task``'s paused work goes back to the queue in its old place, with
    its retries and its session (after its budget was raised). Returns the
    work orders resumed."""
    now = timezone.now()
    resumed = []
    with transaction.atomic():
        paused = list(
            WorkOrder.objects.select_for_update()
            .filter(task_id=task.pk, status=WorkOrderStatus.PAUSED)
            .order_by("enqueued_at")
        )
        for work_order in paused:
            fresh = _cas(work_order.id, from_statuses=[WorkOrderStatus.PAUSED], status=WorkOrderStatus.QUEUED)
            _sync_task_status(fresh, now=now)
            _publish_work_order(fresh)
            dispatch_on_commit(fresh.id)
            resumed.append(fresh)
        if resumed and not any(order.kind == WorkOrderKind.RUN_TASK for order in resumed):
            # Only message turns waited: the task shows its run's state again.
            run = (
                WorkOrder.objects.filter(task_id=task.pk, kind=WorkOrderKind.RUN_TASK).order_by("-enqueued_at").first()
            )
            if run is not None:
                _sync_task_status(run, now=now)
    return resumed


def work_order_over_budget(*, work_order, refusal, worker=None, execution=None):
    """``work_order``'s run may not go on (a :class:`queue_app.budgets.Refusal`):
    past a daily budget it waits queued for the next day; past its task's
    budget it is paused (:func:`work_order_pause`), or fails for good when
    AGENTVINE_BUDGET_EXCEEDED is ``fail``."""
    if refusal.until is not None:
        return work_order_requeue(work_order=work_order, reason=refusal.reason, not_before=refusal.until)
    if settings.AGENTVINE_BUDGET_EXCEEDED == "fail" and worker is not None:
        return work_order_fail(
            work_order=work_order, worker=worker, execution=execution, error=refusal.reason, retryable=False
        )
    return work_order_pause(work_order=work_order, reason=refusal.reason)


def work_order_rate_limited(*, work_order, reason, resets_at=None):
    """The provider refused ``work_order``'s agent for now: its concurrency key
    pauses until the reset (``resets_at``, epoch seconds, or a backoff) and the
    work goes back to the queue until then, keeping its place, its session
    and its retries (queue_app.rate_limits)."""
    with transaction.atomic():
        until = rate_limits.key_pause(key=work_order.concurrency_key, resets_at=resets_at, reason=reason)
        return work_order_requeue(
            work_order=work_order, reason=f"rate limited until {until:%H:%M:%S} UTC: {reason}", not_before=until
        )


def work_order_retry(*, work_order):
    """An operator's retry: failed, dead or cancelled work goes back to queued."""
    now = timezone.now()
    with transaction.atomic():
        fresh = _cas(
            work_order.id,
            from_statuses=[WorkOrderStatus.FAILED, WorkOrderStatus.DEAD, WorkOrderStatus.CANCELLED],
            status=WorkOrderStatus.QUEUED,
            retry_count=0,
            worker_id=None,
            not_before=None,
            completed_at=None,
            enqueued_at=now,
            priority_rank=PRIORITY_RANK[work_order.priority],
            line_at=fairness.line_place(
                priority_rank=PRIORITY_RANK[work_order.priority], fair_key=work_order.fair_key, at=now
            ),
        )
        if fresh is None:
            raise IllegalTransition(ERR_CANNOT_RETRY)
        _sync_task_status(fresh, now=now)
        _publish_work_order(fresh)
        dispatch_on_commit(fresh.id)
    return fresh


def work_order_set_waiting(*, work_order, worker, waiting):
    """running ⇄ waiting while the agent waits for a human answer."""
    source, target = (
        (WorkOrderStatus.RUNNING, WorkOrderStatus.WAITING)
        if waiting
        else (WorkOrderStatus.WAITING, WorkOrderStatus.RUNNING)
    )
    with transaction.atomic():
        fresh = _cas(work_order.id, from_statuses=[source], where={"worker_id": worker.id}, status=target)
        if fresh is None:
            raise IllegalTransition(ERR_NOT_YOURS if work_order.worker_id != worker.id else ERR_CANNOT_COMPLETE)
        status = WorkerStatus.WAITING if waiting else WorkerStatus.BUSY
        change, event = _worker_change(worker, status=status, work_order_id=fresh.id, now=timezone.now())
        events.publish_many([_work_order_event(fresh), event], changes=[change])
    return fresh


def work_order_assert_owner(*, work_order, worker):
    if work_order.worker_id != worker.id:
        raise PermissionDenied(ERR_NOT_YOURS)
