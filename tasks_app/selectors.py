"""Reads of tasks and executions shared by pages and APIs."""

import statistics
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, DecimalField, IntegerField, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce, TruncMinute
from django.utils import timezone

from queue_app import budgets
from queue_app.models import (
    Execution,
    ExecutionOutputChunk,
    ExecutionStatus,
    WorkOrder,
    WorkOrderKind,
    WorkOrderStatus,
)
from tasks_app.models import Task
from tasks_app.repositories import repository_url_redacted


def execution_output(*, execution):
    """The full output of an execution, in order."""
    chunks = ExecutionOutputChunk.objects.filter(execution=execution).order_by("seq").values_list("text", flat=True)
    return "".join(chunks.iterator(chunk_size=200))


def task_usage(*, task):
    """Tokens and cost of every execution of a task, summed."""
    totals = Execution.objects.filter(task=task).aggregate(
        executions=Count("id"),
        input_tokens=Coalesce(Sum("input_tokens"), 0),
        output_tokens=Coalesce(Sum("output_tokens"), 0),
        cost_usd=Coalesce(
            Sum("cost_usd"), Value(Decimal(0)), output_field=DecimalField(max_digits=14, decimal_places=6)
        ),
    )
    return totals


def execution_output_recent(*, execution, max_chars=65536):
    """``(text, next_seq)``: the last ``max_chars`` of an execution's output,
    without reading it all, and the sequence number of the next chunk."""
    texts, size, next_seq = [], 0, 0
    chunks = ExecutionOutputChunk.objects.filter(execution=execution).order_by("-seq").values_list("seq", "text")
    for seq, text in chunks.iterator(chunk_size=20):
        next_seq = max(next_seq, seq + 1)
        texts.append(text)
        size += len(text)
        if size >= max_chars:
            break
    return "".join(reversed(texts))[-max_chars:], next_seq


def task_list(*, status=None, task_type=None, priority=None, q=None, sort=None):
    """Tasks matching the filters, newest first, or with ``sort="queue"`` the
    queued ones in the order the queue serves them: priority, then each
    operator's turn (queue_app.fairness)."""
    qs = Task.objects.select_related("created_by")
    if sort == "queue":
        # The queue itself: tasks whose run waits, in claim order, read along
        # the work orders' ready-set index (bench/pages.py: "Tasks in queue order").
        qs = qs.filter(work_orders__status=WorkOrderStatus.QUEUED, work_orders__kind=WorkOrderKind.RUN_TASK).order_by(
            "work_orders__priority_rank", "work_orders__line_at", "work_orders__enqueued_at"
        )
    else:
        qs = qs.order_by("-created_at")
    if status:
        qs = qs.filter(status=status)
    if task_type:
        qs = qs.filter(task_type=task_type)
    if priority:
        qs = qs.filter(priority=priority)
    if q:
        # TaskSearchText holds the text and its trigram indexes.
        qs = qs.filter(
            Q(search_text__title__icontains=q)
            | Q(search_text__description__icontains=q)
            | Q(search_text__repository_url__icontains=q)
        )
    return qs


def _last_output_at():
    # The newest chunk by the (execution, seq) unique index: one row per execution.
    newest = ExecutionOutputChunk.objects.filter(execution=OuterRef("pk")).order_by("-seq").values("created_at")[:1]
    return Subquery(newest)


def running_executions(*, limit=20):
    """Running attempts, newest first, each with ``last_output_at`` (None before its first output)."""
    return (
        Execution.objects.filter(status=ExecutionStatus.RUNNING)
        .select_related("task", "worker")
        .annotate(last_output_at=_last_output_at())
        .order_by("-started_at")[:limit]
    )


def quiet_seconds(execution, *, now):
    """How long a running attempt has printed nothing, when that is past
    AGENTVINE_QUIET_WARNING_SECONDS; else None."""
    if execution.status != ExecutionStatus.RUNNING:
        return None
    since = getattr(execution, "last_output_at", None) or execution.started_at
    quiet = (now - since).total_seconds()
    return quiet if quiet >= settings.AGENTVINE_QUIET_WARNING_SECONDS else None


def throughput_per_minute(*, minutes=60):
    """Completed work orders per minute over the last ``minutes``, oldest first."""

    now = timezone.now().replace(second=0, microsecond=0)
    since = now - timedelta(minutes=minutes - 1)
    rows = (
        WorkOrder.objects.filter(status=WorkOrderStatus.COMPLETED, completed_at__gte=since)
        .annotate(minute=TruncMinute("completed_at"))
        .values("minute")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts = {row["minute"]: row["n"] for row in rows}
    return [(since + timedelta(minutes=i), counts.get(since + timedelta(minutes=i), 0)) for i in range(minutes)]


ATTEMPT_RUN = "run"
ATTEMPT_TURN = "message turn"
ATTEMPT_RETRY = "retry"
ATTEMPT_RESUMED_PREEMPTED = "resumed after preemption"
ATTEMPT_RESUMED = "resumed after interruption"


def _attempt_kind(execution, previous):
    """What an attempt was, from its work order and the attempt before it in that order."""
    base = ATTEMPT_TURN if execution.work_order.kind == WorkOrderKind.DELIVER_MESSAGE else ATTEMPT_RUN
    if previous is None:
        return base
    if previous.status == ExecutionStatus.INTERRUPTED:
        resumed = ATTEMPT_RESUMED_PREEMPTED if "preempt" in previous.error else ATTEMPT_RESUMED
    else:
        resumed = ATTEMPT_RETRY
    return resumed if base == ATTEMPT_RUN else f"{base}, {resumed}"


def task_attempts(*, task, now=None):
    """Every attempt of every work order of ``task``, oldest first, each with
    ``number`` (1, 2, 3 … across the task's work orders), ``kind`` (run,
    message turn, retry, resumed after preemption) and ``duration_seconds``
    (up to ``now`` while it runs)."""
    now = now or timezone.now()
    executions = list(
        Execution.objects.filter(task=task)
        .select_related("worker", "work_order")
        .annotate(last_output_at=_last_output_at())
        .defer("output_tail", "work_order__last_error")
        .order_by("started_at", "id")
    )
    last_of_order = {}
    for number, execution in enumerate(executions, start=1):
        execution.number = number
        execution.kind = _attempt_kind(execution, last_of_order.get(execution.work_order_id))
        execution.duration_seconds = ((execution.completed_at or now) - execution.started_at).total_seconds()
        execution.quiet_seconds = quiet_seconds(execution, now=now)
        last_of_order[execution.work_order_id] = execution
    return executions


TASK_ACTIVITY = {
    (WorkOrderKind.RUN_TASK, WorkOrderStatus.QUEUED): "queued for an agent",
    (WorkOrderKind.RUN_TASK, WorkOrderStatus.CLAIMED): "agent starting",
    (WorkOrderKind.RUN_TASK, WorkOrderStatus.RUNNING): "agent working",
    (WorkOrderKind.RUN_TASK, WorkOrderStatus.WAITING): "agent waiting for an answer",
    (WorkOrderKind.DELIVER_MESSAGE, WorkOrderStatus.QUEUED): "message turn queued",
    (WorkOrderKind.DELIVER_MESSAGE, WorkOrderStatus.CLAIMED): "agent starting a message turn",
    (WorkOrderKind.DELIVER_MESSAGE, WorkOrderStatus.RUNNING): "agent working on a message turn",
    (WorkOrderKind.DELIVER_MESSAGE, WorkOrderStatus.WAITING): "agent waiting for an answer in a message turn",
}


def task_activity(*, work_orders):
    """What the task's agent is doing now, from its work orders (newest first):
    a completed task can have an agent busy with a message turn."""
    for work_order in work_orders:
        activity = TASK_ACTIVITY.get((work_order.kind, work_order.status))
        if activity:
            return activity
    return ""


def queue_positions(*, task_ids):
    """``{task_id: position}`` of the given tasks' queued runs in the line the
    claim serves (``priority_rank``, ``line_at``, then ``enqueued_at``:
    queue_app.fairness; 1 is next). One
    correlated count per listed task over the queued rows only (the ready-state
    index), not a numbering of the whole backlog."""
    queued = WorkOrder.objects.filter(status=WorkOrderStatus.QUEUED, kind=WorkOrderKind.RUN_TASK)
    ahead = (
        queued.filter(
            Q(priority_rank__lt=OuterRef("priority_rank"))
            | Q(priority_rank=OuterRef("priority_rank"), line_at__lt=OuterRef("line_at"))
            | Q(
                priority_rank=OuterRef("priority_rank"),
                line_at=OuterRef("line_at"),
                enqueued_at__lte=OuterRef("enqueued_at"),
            )
        )
        .order_by()
        .values("status")
        .annotate(n=Count("id"))
        .values("n")
    )
    rows = queued.filter(task_id__in=list(task_ids)).annotate(position=Subquery(ahead, output_field=IntegerField()))
    return dict(rows.values_list("task_id", "position"))


def fleet_stats(*, now=None):
    """Per worker and per executor: attempts completed and failed over the
    last hour and day, median duration and cost over the day.

    ``{"workers": [row, …], "executors": [row, …]}``, each row a dict with
    ``name``, ``completed_hour``, ``failed_hour``, ``completed_day``,
    ``failed_day``, ``median_seconds`` and ``cost_usd``; busiest first.
    One query over the day's finished attempts (the status/started index).
    """
    now = now or timezone.now()
    day, hour = now - timedelta(days=1), now - timedelta(hours=1)
    finished = (
        Execution.objects.filter(
            status__in=[ExecutionStatus.COMPLETED, ExecutionStatus.FAILED],
            started_at__gte=day - timedelta(days=1),
            completed_at__gte=day,
        )
        .order_by()
        .values_list("worker__name", "task__executor", "status", "started_at", "completed_at", "cost_usd")
    )
    groups = {"workers": {}, "executors": {}}
    for worker_name, executor, status, started_at, completed_at, cost in finished.iterator(chunk_size=2000):
        for kind, name in (
            ("workers", worker_name or "—"),
            ("executors", executor or settings.AGENTVINE_DEFAULT_EXECUTOR),
        ):
            row = groups[kind].setdefault(
                name,
                {
                    "name": name,
                    "completed_hour": 0,
                    "failed_hour": 0,
                    "completed_day": 0,
                    "failed_day": 0,
                    "durations": [],
                    "cost_usd": Decimal(0),
                },
            )
            outcome = "completed" if status == ExecutionStatus.COMPLETED else "failed"
            row[f"{outcome}_day"] += 1
            if completed_at >= hour:
                row[f"{outcome}_hour"] += 1
            row["durations"].append((completed_at - started_at).total_seconds())
            row["cost_usd"] += cost or 0
    result = {}
    for kind, rows in groups.items():
        for row in rows.values():
            row["median_seconds"] = statistics.median(row.pop("durations"))
        result[kind] = sorted(rows.values(), key=lambda r: (-(r["completed_day"] + r["failed_day"]), r["name"]))
    return result


def spend_overview(*, paused, days=7, now=None):
    """The Overview's spend: per day, operator, executor and repository over
    the last ``days`` days (queue_app.budgets, one read), today's against the
    daily budgets, and ``paused`` (the work orders paused on a budget)."""
    by = budgets.spend_by_every_group(days=days, now=now)
    for row in by["repository"]:
        row["key"] = repository_url_redacted(row["key"])
    today = budgets.day_start(now).date().isoformat()
    return {
        "days": days,
        "by": by,
        "total": sum((row["cost_usd"] for row in by["day"]), budgets.ZERO),
        "today": next((row["cost_usd"] for row in by["day"] if row["key"] == today), budgets.ZERO),
        "daily_budget": settings.AGENTVINE_DAILY_BUDGET_USD,
        "operator_daily_budget": settings.AGENTVINE_OPERATOR_DAILY_BUDGET_USD,
        "paused": paused,
    }
