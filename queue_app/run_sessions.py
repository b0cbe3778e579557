"""The agent session a run works in: taken when the run starts, given back
when it ends.

A task keeps one live session (and with it one workspace), so its next run
resumes the agent's conversation wherever it runs. The engine owns these two
moments because they are written in the run's own statements: the claim of a
Celery slot reads the live session in the same statement
(:func:`queue_app.lifecycle.work_order_claim_start`), and the run's end idles
it with the rest of its end (``bench/slot_run.py`` counts those statements).
Everything else about sessions (create, touch, terminate, the workspace that
goes with them) is ``workers_app.services``'.
"""

import uuid

from django.db import connection, transaction
from django.utils import timezone

from agentvine import db
from agentvine.db import insert_sql, update_sql
from queue_app.models import Execution, ExecutionStatus
from workers_app.models import AgentSession, SessionStatus


def live_session_sql(*, task_id=None, task_column=None, lock):
    """``(sql, params)`` of a SELECT of ``task_id``'s live session (its newest
    one not terminated; a task keeps one) and, as one more column, the status
    of that session's last attempt. ``lock`` locks the session row where the
    database can (PostgreSQL), so two runs of a task never open it at once.
    ``task_column`` instead of ``task_id`` names the task by an outer query's
    column (a LATERAL join).

    Its columns are the session's (:meth:`agentvine.db.Table.select_list`)
    then that status; a caller may run it alone or join it into a bigger read.
    """
    sessions, connection = db.table(AgentSession)
    executions, _ = db.table(Execution)
    ec, sc = executions.columns, sessions.columns
    last_status = (
        f"(SELECT e.{ec['status']} FROM {executions.name} e WHERE e.{ec['session_id']} = s.{sc['id']}"
        f" ORDER BY e.{ec['started_at']} DESC LIMIT 1)"
    )
    if task_column is not None:
        where, params = f"s.{sc['task_id']} = {task_column}", []
    else:
        where, params = sessions.where({"task_id": task_id}, connection, alias="s")
    sql = (
        f"SELECT {sessions.select_list('s')}, {last_status} FROM {sessions.name} s"
        f" WHERE {where} AND s.{sc['status']} <> %s ORDER BY s.{sc['created_at']} DESC LIMIT 1"
    )
    if lock and connection.features.has_select_for_update:
        sql += " FOR UPDATE OF s" if connection.features.has_select_for_update_of else " FOR UPDATE"
    return sql, [*params, SessionStatus.TERMINATED]


def live_session_from_row(row):
    """``(session or None, its last attempt's status or None)`` from the
    columns of :func:`live_session_sql`."""
    sessions, connection = db.table(AgentSession)
    if row is None or row[0] is None:
        return None, None
    return sessions.from_row(row[:-1], connection), row[-1]


def _new_session_id():
    # Claude requires a UUID for --session-id; other agents accept any string.
    return str(uuid.uuid4())


def agent_session_open(*, task, worker):
    """The session a run of ``task`` on ``worker`` works in. Returns ``(session, resume)``.

    A task keeps one live session (and with it one workspace). ``resume`` is
    True when the previous attempt in that session completed or was
    interrupted: the agent saved its conversation and continues it. After a
    failed or crashed attempt the conversation may not exist, so a fresh
    conversation id is assigned; the workspace stays.
    """
    # No savepoint: a database error aborts the caller's transaction anyway.
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(*live_session_sql(task_id=task.pk, lock=True))
        current, last_status = live_session_from_row(cursor.fetchone())
        session, resume, change = agent_session_take(
            task=task, worker=worker, current=current, last_status=last_status, now=timezone.now()
        )
        cursor.execute(*change)
    return session, resume


def agent_session_take(*, task, worker, current, last_status, now):
    """:func:`agent_session_open` once the task's live session ``current``
    (None: it has none; locked by the caller) and the status of its last
    attempt are read (:func:`live_session_sql`).

    Returns ``(session, resume, change)``: ``change`` is the INSERT or UPDATE
    that writes ``session`` as returned, for the caller to send (alone or as a
    change of ``agentvine.events.publish``).
    """
    if current is None:
        session = AgentSession(session_id=_new_session_id(), task=task, worker=worker)
        return session, False, insert_sql(session)
    resume = last_status in (ExecutionStatus.COMPLETED, ExecutionStatus.INTERRUPTED)
    changes = {"worker_id": worker.pk, "status": SessionStatus.ACTIVE, "last_activity_at": now}
    if not resume:
        changes["session_id"] = _new_session_id()
    for name, value in changes.items():
        setattr(current, name, value)
    return current, resume, update_sql(AgentSession, {"pk": current.pk}, **changes)


def agent_session_release_sql(*, execution, now):
    """The run ``execution`` ended: its session goes idle (it stays for a
    follow-up until it is terminated), as a change written with the run's
    end; None when the run had no session.

    Only while the session is still this run's (active on its worker): a
    stale run that ends after the task's next run took the session on
    another worker leaves that run's session alone.
    """
    if execution.session_id is None:
        return None
    sql, params = update_sql(
        AgentSession,
        {"pk": execution.session_id, "status": SessionStatus.ACTIVE, "worker_id": execution.worker_id},
        status=SessionStatus.IDLE,
        last_activity_at=now,
    )
    # Nor when another run of the task took it again on the same worker (a
    # remote worker cut off, back, and given the requeued work): the session
    # is the live run's as long as a newer attempt runs in it.
    executions, connection = db.table(Execution)
    ec = executions.columns
    newer = (
        f" AND NOT EXISTS (SELECT 1 FROM {executions.name} e WHERE e.{ec['session_id']} = %s"
        f" AND e.{ec['status']} = %s AND e.{ec['pk']} <> %s)"
    )
    return sql + newer, (
        *params,
        executions.prepare("session_id", execution.session_id, connection),
        ExecutionStatus.RUNNING.value,
        executions.prepare("pk", execution.pk, connection),
    )
