"""Operator pages for chat: the message history, answering and messaging agents."""

from django.contrib import messages as flash
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from agentvine.console import operator_required
from agentvine.errors import DomainError
from agentvine.pagination import BigTablePaginator
from chat_app import selectors, services
from chat_app.models import DeliveryStatus, MessageKind
from tasks_app.models import Task

PAGE_SIZE = 50
FILTERS = ("sender", "recipient", "task", "status", "kind", "text")
ERR_NO_SUCH_TASK = "No task has the id “{task}”: give a task's full id (from its page's address) or clear the filter."


@operator_required
def message_list(request):
    criteria = {key: request.GET.get(key, "").strip() for key in FILTERS}
    if criteria["status"] not in DeliveryStatus.values:
        criteria["status"] = ""
    if criteria["kind"] not in MessageKind.values:
        criteria["kind"] = ""
    task = None
    if criteria["task"]:
        task = Task.objects.filter(pk=criteria["task"]).first() if _is_uuid(criteria["task"]) else None
    history = selectors.message_history(
        sender=criteria["sender"] or None,
        recipient=criteria["recipient"] or None,
        task=task if criteria["task"] else None,
        status=criteria["status"] or None,
        kind=criteria["kind"] or None,
        text=criteria["text"] or None,
    ).select_related("task")
    filter_error = ""
    if criteria["task"] and task is None:
        history = history.none()
        filter_error = ERR_NO_SUCH_TASK.format(task=criteria["task"][:80])
    # Newest first for a person reading; the selector's order is oldest first.
    history = history.order_by("-created_at", "-id")
    page = BigTablePaginator(history, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "console/messages.html",
        {
            "page": page,
            "criteria": criteria,
            "query": query.urlencode(),
            "statuses": DeliveryStatus.choices,
            "kinds": MessageKind.choices,
            "filter_error": filter_error,
        },
        status=400 if filter_error else 200,
    )


def _is_uuid(value):
    import uuid

    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@operator_required
@require_POST
def question_answer(request, task_id, question_id):
    task = get_object_or_404(Task, pk=task_id)
    try:
        question = selectors.question_get(question_id=question_id)
        services.question_answer(
            question=question,
            answer_text=request.POST.get("answer", ""),
            answered_by=services.operator_profile(user=request.user),
        )
    except DomainError as exc:
        flash.error(request, f"Answer not sent: {exc.message}.")
    else:
        flash.success(request, "Answer sent to the agent.")
    return redirect("task-detail", task_id=task.id)


@operator_required
@require_POST
def task_message(request, task_id):
    task = get_object_or_404(Task, pk=task_id)
    try:
        services.operator_message_send(
            user=request.user, conversation_id=str(task.id), text=request.POST.get("text", "")
        )
    except DomainError as exc:
        flash.error(request, f"Message not sent: {exc.message}.")
    else:
        flash.success(request, "Message queued for the agent.")
    return redirect("task-detail", task_id=task.id)
