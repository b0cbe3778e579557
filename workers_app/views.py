"""Operator pages: workers and agent sessions."""

from django.core.paginator import Paginator
from django.shortcuts import render

from agentvine.console import operator_required
from tasks_app.models import Execution
from workers_app import selectors
from workers_app.models import SessionStatus, WorkerStatus

PAGE_SIZE = 50


@operator_required
def worker_list(request):
    status = request.GET.get("status") if request.GET.get("status") in WorkerStatus.values else None
    page = Paginator(selectors.worker_list(status=status), PAGE_SIZE).get_page(request.GET.get("page"))
    workers = list(page.object_list)
    recent = (
        Execution.objects.filter(worker__in=workers)
        .select_related("task")
        .order_by("-started_at")[: 5 * max(len(workers), 1)]
    )
    by_worker = {}
    for execution in recent:
        by_worker.setdefault(execution.worker_id, [])
        if len(by_worker[execution.worker_id]) < 3:
            by_worker[execution.worker_id].append(execution)
    rows = [(worker, by_worker.get(worker.id, [])) for worker in workers]
    return render(
        request,
        "console/workers.html",
        {
            "page": page,
            "rows": rows,
            "status": status,
            "statuses": WorkerStatus.choices,
            "counts": selectors.worker_status_counts(),
        },
    )


@operator_required
def session_list(request):
    status = request.GET.get("status") if request.GET.get("status") in SessionStatus.values else None
    page = Paginator(selectors.session_list(status=status), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "console/sessions.html",
        {"page": page, "status": status, "statuses": SessionStatus.choices},
    )
