"""Reads of workers and sessions shared by pages and APIs."""

from django.db.models import Count

from workers_app.models import AgentSession, Worker, WorkerStatus


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
