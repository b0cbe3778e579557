"""Operator pages: workers and agent sessions."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from agentvine.console import operator_required
from agentvine.errors import DomainError
from queue_app.models import Execution
from workers_app import selectors, services
from workers_app.models import AgentSession, SessionStatus, WorkerStatus

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
@require_POST
def session_terminate(request, session_id):
    session = get_object_or_404(AgentSession, pk=session_id)
    try:
        services.agent_session_terminate(session=session, reason=f"terminated by {request.user.username}")
    except DomainError as exc:
        messages.error(request, f"Cannot terminate: {exc.message}.")
    else:
        messages.success(request, f"Session {session.session_id} terminated; its workspace is removed.")
    return redirect("session-list")


@operator_required
def session_list(request):
    status = request.GET.get("status") if request.GET.get("status") in SessionStatus.values else None
    page = Paginator(selectors.session_list(status=status), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "console/sessions.html",
        {"page": page, "status": status, "statuses": SessionStatus.choices, "session_terminate_enabled": True},
    )
