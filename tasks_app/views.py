"""Operator pages: overview, tasks, task detail."""

import base64
import uuid

from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from agentvine.console import operator_required
from agentvine.errors import DomainError
from agentvine.pagination import BigTablePaginator
from chat_app.selectors import message_history, pending_questions
from queue_app.models import WorkOrder, WorkOrderStatus
from queue_app.selectors import queue_stats
from tasks_app import graph_selectors, results, selectors, services
from tasks_app.forms import TaskCreateForm, TaskFilterForm
from tasks_app.models import Priority, Task, TaskStatus
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


# The throughput chart's drawing area inside its SVG viewBox (0 0 360 140),
# about the panel's width so its labels keep their size: room on the left
# for the count axis and below for the time axis.
CHART_LEFT, CHART_TOP, CHART_WIDTH, CHART_HEIGHT = 28, 8, 326, 100


def throughput_bars(throughput, *, peak):
    """``(minute, n, x, y, height)`` per minute, in the chart's coordinates."""
    step = CHART_WIDTH / max(len(throughput), 1)
    bars = []
    for i, (minute, n) in enumerate(throughput):
        height = round(CHART_HEIGHT * n / peak, 1)
        bars.append(
            (minute, n, round(CHART_LEFT + i * step + 0.7, 1), round(CHART_TOP + CHART_HEIGHT - height, 1), height)
        )
    return bars


@operator_required
def overview(request):
    throughput = selectors.throughput_per_minute(minutes=60)
    peak = max((n for _, n in throughput), default=0) or 1
    now = timezone.now()
    running = list(selectors.running_executions(limit=20))
    for execution in running:
        execution.elapsed_seconds = (now - execution.started_at).total_seconds()
        execution.quiet_seconds = selectors.quiet_seconds(execution, now=now)
    stats = queue_stats(active_only=True)
    context = {
        "stats": stats,
        "pending_questions": list(pending_questions()[:20]),
        "worker_counts": worker_status_counts(),
        "workers": list(worker_list()[:50]),
        "running": running,
        "recent": list(WorkOrder.objects.select_related("task", "worker").order_by("-updated_at")[:15]),
        "throughput": throughput_bars(throughput, peak=peak),
        "throughput_peak": peak,
        "fleet": selectors.fleet_stats(now=now),
        "throughput_total": sum(n for _, n in throughput),
        "spend": selectors.spend_overview(paused=stats["by_status"][WorkOrderStatus.PAUSED], now=now),
    }
    return render(request, "console/overview.html", context)


@operator_required
def task_list(request):
    # Its own ids: the create form beside it has Type and Priority fields too.
    filters = TaskFilterForm(request.GET or None, auto_id="filter_%s")
    criteria = filters.cleaned_data if filters.is_valid() else {}
    tasks = selectors.task_list(**{k: v for k, v in criteria.items() if v})
    page = BigTablePaginator(tasks, PAGE_SIZE).get_page(request.GET.get("page"))
    queued_ids = [t.id for t in page.object_list if t.status == TaskStatus.QUEUED]
    positions = selectors.queue_positions(task_ids=queued_ids) if queued_ids else {}
    for t in page.object_list:
        t.queue_position = positions.get(t.id)
    form = TaskCreateForm()
    if request.method == "POST":
        form = TaskCreateForm(request.POST)
        if form.is_valid():
            try:
                values = dict(form.cleaned_data)
                if values["budget_usd"] is None:
                    del values["budget_usd"]  # left empty: its type's default
                task = services.task_create(created_by=request.user, **values)
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
        {
            "filters": filters,
            "page": page,
            "form": form,
            "query": query.urlencode(),
            "priorities": Priority.choices,
            "bulk_max": BULK_MAX,
        },
        status=400 if form.errors else 200,
    )


ERR_NO_SUCH_ATTEMPT = "This task has no attempt {attempt}."


@operator_required
def task_detail(request, task_id):
    task = get_object_or_404(Task.objects.select_related("created_by", "spawned_by"), pk=task_id)
    work_orders = list(task.work_orders.select_related("worker").order_by("-enqueued_at"))
    attempts = selectors.task_attempts(task=task)
    shown = attempts[-1] if attempts else None
    if "attempt" in request.GET:
        # ?attempt=N shows attempt N's output (numbered per task, as listed).
        wanted = request.GET["attempt"]
        if not wanted.isdigit() or not 1 <= int(wanted) <= len(attempts):
            raise Http404(ERR_NO_SUCH_ATTEMPT.format(attempt=wanted[:20]))
        shown = attempts[int(wanted) - 1]
    output, output_next_seq = selectors.execution_output_recent(execution=shown) if shown else ("", 0)
    finished = task.status not in (TaskStatus.QUEUED, TaskStatus.IN_PROGRESS, TaskStatus.BLOCKED)
    context = {
        "task": task,
        "activity": selectors.task_activity(work_orders=work_orders),
        "quiet": [a for a in attempts if a.quiet_seconds is not None],
        "work_orders": work_orders,
        "attempts": attempts,
        "shown": shown,
        "output": output,
        "output_next_seq": output_next_seq,
        "usage": selectors.task_usage(task=task),
        "paused_reason": next((wo.last_error for wo in work_orders if wo.status == WorkOrderStatus.PAUSED), ""),
        "sessions": list(task.sessions.select_related("worker").order_by("-created_at")[:5]),
        "conversation": list(reversed(conversation_recent(task=task, limit=CHAT_MESSAGES))),
        "open_questions": [m for m in pending_questions().filter(task=task)],
        "can_raise": not finished and task.priority in RAISE,
        "can_lower": not finished and task.priority in LOWER,
        "parents": graph_selectors.task_parents(task=task),
        "children": graph_selectors.task_children(task=task),
        "last_review": task.reviews.select_related("by").first() if task.review_status else None,
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
        elif action == "budget":
            paused = task.status == TaskStatus.PAUSED_BUDGET
            task = services.task_update(task=task, budget_usd=request.POST.get("budget_usd", "").strip() or None)
            if task.status == TaskStatus.PAUSED_BUDGET:
                messages.error(request, "Budget set, but the task has spent that much already: it stays paused.")
            else:
                messages.success(request, "Budget set: the task resumes in its session." if paused else "Budget set.")
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


BULK_MAX = 200
BULK_DONE = {
    "cancel": "Cancelled {n} tasks.",
    "retry": "Queued {n} tasks again.",
    "priority": "Set {n} tasks to {priority}.",
}
BULK_REFUSED = {"cancel": "Not cancelled", "retry": "Not retried", "priority": "Priority not changed"}
ERR_BULK_NOTHING_SELECTED = "Select at least one task."
ERR_BULK_BAD_REQUEST = "Unknown bulk action, priority or task id, or more than {max} tasks."


@operator_required
@require_POST
def task_bulk(request):
    """One action on the ticked tasks, each through the same service as its
    own button; what a task refused is reported by its title."""
    action, priority = request.POST.get("action"), request.POST.get("priority")
    try:
        ids = [uuid.UUID(task_id) for task_id in request.POST.getlist("task")]
    except ValueError:
        ids = None
    if (
        ids is None
        or action not in BULK_DONE
        or (action == "priority" and priority not in Priority.values)
        or len(ids) > BULK_MAX
    ):
        return HttpResponseBadRequest(ERR_BULK_BAD_REQUEST.format(max=BULK_MAX))
    next_url = request.POST.get("next")
    if not (next_url and url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()})):
        next_url = reverse("task-list")
    if not ids:
        messages.error(request, ERR_BULK_NOTHING_SELECTED)
        return redirect(next_url)
    done = 0
    for task in Task.objects.filter(pk__in=ids).order_by("created_at"):
        try:
            if action == "cancel":
                services.task_cancel(task=task)
            elif action == "retry":
                services.task_retry(task=task)
            else:
                services.task_set_priority(task=task, priority=priority)
        except DomainError as exc:
            messages.error(request, f"{BULK_REFUSED[action]}: “{task.title}”: {exc.message}.")
        else:
            done += 1
    if done:
        messages.success(request, BULK_DONE[action].format(n=done, priority=priority))
    return redirect(next_url)


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
