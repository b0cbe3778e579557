"""The review buttons of the task page (approve, request changes, rebase,
open pull request), through the same services as ``POST tasks/{id}/review/``."""

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from agentvine.console import operator_required
from agentvine.errors import DomainError
from tasks_app import review
from tasks_app.models import ReviewAction, Task

DONE = {
    "merged": "Approved: merged into {base}.",
    "fast_forward": "Approved: {base} fast-forwarded to the task's branch.",
    "already_merged": "Approved: {base} already holds the task's branch.",
    "conflict": "Not merged: the branch conflicts with {base}.",
    "changes_requested": "Changes requested: the agent's next turn starts with your comment.",
    "pull_request": "Pull request opened.",
}


@operator_required
@require_POST
def task_review(request, task_id):
    task = get_object_or_404(Task, pk=task_id)
    action = request.POST.get("action", "")
    try:
        if action == ReviewAction.APPROVE:
            task, decision = review.review_approve(task=task, user=request.user, into=request.POST.get("into", ""))
        elif action == ReviewAction.REQUEST_CHANGES:
            task, decision = review.review_request_changes(
                task=task, user=request.user, comment=request.POST.get("comment", "")
            )
        elif action == ReviewAction.REBASE:
            task, decision = review.review_rebase(task=task, user=request.user)
        elif action == ReviewAction.OPEN_PULL_REQUEST:
            task, decision = review.review_open_pull_request(task=task, user=request.user)
        else:
            messages.error(request, "Unknown review action.")
            return redirect("task-detail", task_id=task.id)
    except DomainError as exc:
        messages.error(request, f"Cannot {action.replace('_', ' ')}: {exc.message}.")
    else:
        text = DONE[decision.outcome].format(base=decision.base_branch)
        (messages.error if decision.outcome == "conflict" else messages.success)(request, text)
    return redirect("task-detail", task_id=task.id)
