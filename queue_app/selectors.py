"""Reads of the queue shared by pages, APIs and benchmarks."""

from django.db.models import Count, Min
from django.utils import timezone

from queue_app.models import ACTIVE_STATUSES, ConcurrencyLimit, WorkOrder, WorkOrderStatus
from queue_app.rate_limits import rate_limited_keys
from tasks_app.models import Priority


def queue_stats(*, active_only=False):
    """Depth per priority and per status, the oldest waiting age per
    priority, the keys paused by a rate limit (queue_app.rate_limits) and the
    concurrency keys with a limit, with their seats taken (queue_app.concurrency).

    ``active_only`` counts only unfinished statuses: finished work orders are
    most of a long-lived table, and a page refreshed live should not count
    them every time (the (status, priority) index keeps this an index scan).
    """
    now = timezone.now()
    by_status = {status: 0 for status in WorkOrderStatus.values}
    counted = WorkOrder.objects.all()
    if active_only:
        counted = counted.filter(status__in=[WorkOrderStatus.QUEUED, WorkOrderStatus.PAUSED, *ACTIVE_STATUSES])
    for row in counted.values("status").annotate(n=Count("id")).order_by():
        by_status[row["status"]] = row["n"]
    depth = {priority: 0 for priority in Priority.values}
    oldest = {priority: None for priority in Priority.values}
    rows = (
        WorkOrder.objects.filter(status=WorkOrderStatus.QUEUED)
        .values("priority")
        .annotate(n=Count("id"), oldest=Min("enqueued_at"))
        .order_by()
    )
    for row in rows:
        depth[row["priority"]] = row["n"]
        oldest[row["priority"]] = (now - row["oldest"]).total_seconds()
    return {
        "depth": depth,
        "by_status": by_status,
        "oldest_waiting_seconds": oldest,
        "rate_limited": rate_limited_keys(now=now),
        "concurrency_keys": list(ConcurrencyLimit.objects.order_by("key").values("key", "running", "max_running")),
    }
