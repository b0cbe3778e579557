"""Operator pages: overview, tasks, task detail."""

import base64

from django.contrib import messages
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from agentvine.console import operator_required
from agentvine.errors import DomainError
from agentvine.pagination import BigTablePaginator
from chat_app.selectors import message_history, pending_questions
from queue_app.models import WorkOrder
from queue_app.selectors import queue_stats
from tasks_app import results, selectors, services
from tasks_app.forms import TaskCreateForm, TaskFilterForm
from tasks_app.models import Priority, Task
from workers_app.authentication import TokenAuthentication, WorkerPrincipal
from workers_app.selectors import worker_list, worker_status_counts

PAGE_SIZE = 25
ERR_GIT_AUTH = "sign in or send an operator API token"
ERR_GIT_READ_ONLY = "the results repository is read-only: only fetch and clone are served"
CHAT_MESSAGES = 50
RAISE = {Priority.LOW: Priority.NORMAL, Priority.NORMAL: Priority.HIGH}
LOWER = {Priority.HIGH: Priority.NORMAL, Priority.NORMAL: Priority.LOW}


def conversation_recent(*, task, limit):
    """The newest ``limit`` messages of a task's conversation, newest first."""
    return list(
        message_history(conversation=str(task.id)).select_related("sender").order_by("-created_at", "-id")[:limit]
    )


@operator_required
def overview(request):
    throughput = selectors.throughput_per_minute(minutes=60)
    peak = max((n for _, n in throughput), default=0) or 1
    context = {
        "stats": queue_stats(active_only=True),
        "pending_questions": list(pending_questions()[:20]),
        "worker_counts": worker_status_counts(),
        "workers": list(worker_list()[:50]),
        "running": list(selectors.running_executions(limit=20)),
        "recent": list(WorkOrder.objects.select_related("task", "worker").order_by("-updated_at")[:15]),
        "throughput": [(minute, n, round(100 * n / peak)) for minute, n in throughput],
        "throughput_total": sum(n for _, n in throughput),
    }
    return render(request, "console/overview.html", context)


@operator_required
def task_list(request):
    filters = TaskFilterForm(request.GET or None)
    criteria = filters.cleaned_data if filters.is_valid() else {}
    tasks = selectors.task_list(**{k: v for k, v in criteria.items() if v})
    page = BigTablePaginator(tasks, PAGE_SIZE).get_page(request.GET.get("page"))
    form = TaskCreateForm()
    if request.method == "POST":
        form = TaskCreateForm(request.POST)
        if form.is_valid():
            try:
                task = services.task_create(created_by=request.user, **form.cleaned_data)
            except DomainError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                messages.success(request, f"Task “{task.title}” queued.")
                return redirect("task-detail", task_id=task.id)
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "console/tasks.html",
        {"filters": filters, "page": page, "form": form, "query": query.urlencode()},
        status=400 if form.errors else 200,
    )


@operator_required
def task_detail(request, task_id):
    task = get_object_or_404(Task.objects.select_related("created_by"), pk=task_id)
    work_orders = list(task.work_orders.select_related("worker").order_by("-enqueued_at"))
    executions = list(task.executions.select_related("worker", "session").order_by("-started_at"))
    latest = executions[0] if executions else None
    output, output_next_seq = selectors.execution_output_recent(execution=latest) if latest else ("", 0)
    context = {
        "task": task,
        "work_orders": work_orders,
        "executions": executions,
        "latest": latest,
        "output": output,
        "output_next_seq": output_next_seq,
        "usage": selectors.task_usage(task=task),
        "sessions": list(task.sessions.select_related("worker").order_by("-created_at")[:5]),
        "conversation": list(reversed(conversation_recent(task=task, limit=CHAT_MESSAGES))),
        "open_questions": [m for m in pending_questions().filter(task=task)],
        "can_raise": task.priority in RAISE,
        "can_lower": task.priority in LOWER,
    }
    return render(request, "console/task_detail.html", context)


@operator_required
@require_POST
def task_action(request, task_id, action):
    task = get_object_or_404(Task, pk=task_id)
    try:
        if action == "cancel":
            services.task_cancel(task=task)
            messages.success(request, "Task cancelled.")
        elif action == "retry":
            services.task_retry(task=task)
            messages.success(request, "Task queued again.")
        elif action in ("raise", "lower") and task.priority in (RAISE if action == "raise" else LOWER):
            target = (RAISE if action == "raise" else LOWER)[task.priority]
            services.task_set_priority(task=task, priority=target)
            messages.success(request, f"Priority set to {target}.")
        else:
            messages.error(request, f"Cannot {action} this task.")
    except DomainError as exc:
        messages.error(request, f"Cannot {action}: {exc.message}.")
    next_url = request.POST.get("next")
    if next_url and url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        return redirect(next_url)
    return redirect("task-detail", task_id=task.id)


def _git_client_operator(request):
    """The operator behind a git client's request: a signed-in session, or an
    operator API token as ``Authorization: Token …`` or as the password of
    HTTP Basic auth (what ``git clone https://x:TOKEN@host/…`` sends)."""
    if request.user.is_authenticated and request.user.is_active and request.user.is_staff:
        return request.user
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            credentials = base64.b64decode(credentials.strip()).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return None
        request.META["HTTP_AUTHORIZATION"] = f"Token {credentials}"
        # ``request.headers`` is cached from META at first use.
        request.__dict__.pop("headers", None)
    try:
        found = TokenAuthentication().authenticate(Request(request))
    except AuthenticationFailed:
        return None
    user = found[0] if found else None
    if user is None or isinstance(user, WorkerPrincipal) or not (user.is_active and user.is_staff):
        return None
    return user


@csrf_exempt
def results_git(request, task_id, git_path):
    """The task's results repository over git's smart HTTP, read-only."""
    if _git_client_operator(request) is None:
        response = HttpResponse(ERR_GIT_AUTH, status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Basic realm="AgentVine results"'
        return response
    task = get_object_or_404(Task, pk=task_id)
    if request.method not in ("GET", "POST"):
        return HttpResponse(status=405)
    served = results.results_http_backend(
        task=task,
        method=request.method,
        git_path=git_path,
        query=request.GET,
        content_type=request.content_type if request.method == "POST" else "",
        content_encoding=request.headers.get("Content-Encoding", ""),
        body=request.body if request.method == "POST" else b"",
    )
    if served is None:
        return HttpResponse(ERR_GIT_READ_ONLY, status=403, content_type="text/plain")
    status, headers, chunks = served
    response = StreamingHttpResponse(chunks, status=status)
    for name, value in headers.items():
        response[name] = value
    return response
