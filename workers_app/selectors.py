"""Reads of workers and sessions shared by pages and APIs."""

from django.db.models import Count

from agentvine import db
from workers_app.models import AgentSession, SessionStatus, Worker, WorkerStatus


def worker_list(*, status=None):
    qs = Worker.objects.select_related("current_work_order__task").order_by("status", "name")
    if status:
        qs = qs.filter(status=status)
    return qs


def worker_status_counts():
    counts = {status: 0 for status in WorkerStatus.values}
    for row in Worker.objects.values("status").annotate(n=Count("id")).order_by():
        counts[row["status"]] = row["n"]
    return counts


def session_list(*, status=None):
    qs = AgentSession.objects.select_related("task", "worker").order_by("-last_activity_at")
    if status:
        qs = qs.filter(status=status)
    return qs


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
    from tasks_app.models import Execution

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
