"""Subtasks: a running agent splits its work into tasks of its own, and may
wait for them as it would wait for a human.

``create_subtask`` (MCP) and ``agentvine-subtask create`` (command agents)
make a child task of the agent's task: attributed to that agent, with the
parent's repository, branch, executor and priority, at most
AGENTVINE_MAX_SUBTASKS per task, announced live on the parent's page.

``wait_for_subtasks`` marks the parent as waiting and the agent ends its
turn: the slot is freed and the agent's session is kept (idle, as after any
run). When the last subtask ends, :func:`subtasks_on_run_finished` puts one
message with every subtask's summary in the agent's inbox, in the same
transaction; the inbox gives it a turn that resumes its session with that
message as its prompt (``chat_app.services.agent_next_turn``).
"""

from django.conf import settings
from django.db import transaction

from agentvine import events
from agentvine.errors import IllegalTransition, ValidationFailed
from chat_app import services
from tasks_app import graph_selectors
from tasks_app import services as task_services
from tasks_app.models import Task, TaskStatus

ERR_TOO_MANY = "this task already has {limit} subtasks (AGENTVINE_MAX_SUBTASKS)"
ERR_NOT_A_SIBLING = "depends_on may name only subtasks of this task: {id}"
ERR_NO_SUBTASKS = "this task has no subtasks to wait for"
# The end of each subtask's output its parent reads.
SUMMARY_CHARS = 1500
ENDED = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
SUMMARY_HEADER = "Your {count} subtasks have ended. Their summaries:"


def subtask_create(*, work_order, execution, title, description="", depends_on=()):
    """A new task, child of ``work_order``'s task, made by its running agent;
    ``depends_on`` may name only subtasks of the same task."""
    with transaction.atomic():
        # The parent's row lock counts its subtasks one creation at a time.
        parent = Task.objects.select_for_update().get(pk=work_order.task_id)
        siblings = {str(pk) for pk in Task.objects.filter(spawned_by=parent).values_list("pk", flat=True)}
        if len(siblings) >= settings.AGENTVINE_MAX_SUBTASKS:
            raise IllegalTransition(ERR_TOO_MANY.format(limit=settings.AGENTVINE_MAX_SUBTASKS))
        for parent_id in depends_on:
            if str(parent_id) not in siblings:
                raise ValidationFailed(ERR_NOT_A_SIBLING.format(id=parent_id), field="depends_on")
        attempt = f" (attempt {execution.attempt})" if execution is not None else ""
        child = task_services.task_create(
            title=title,
            description=description,
            task_type=parent.task_type,
            priority=parent.priority,
            repository_url=parent.repository_url,
            branch_name=parent.branch_name,
            executor=parent.executor,
            created_by=parent.created_by,
            depends_on=[str(pk) for pk in depends_on],
            spawned_by=parent,
            created_by_agent=f"agent of {parent.title!r}{attempt}"[:200],
        )
        events.publish(
            "task.subtask_created",
            {"id": str(child.pk), "parent_id": str(parent.pk), "title": child.title, "status": child.status},
            groups=[events.task_group(parent.pk)],
        )
    return child


def subtasks_summary(*, parent):
    """One text with every subtask of ``parent``: title, end state, the end of its output."""
    subtasks = list(Task.objects.filter(spawned_by=parent).order_by("created_at", "pk"))
    lines = [SUMMARY_HEADER.format(count=len(subtasks))]
    for number, task in enumerate(subtasks, start=1):
        run = task.executions.order_by("-started_at").first()
        tail = ((run.output_tail or run.error) if run is not None else task.blocked_reason).strip()
        lines.append(f"\n{number}. {task.title} [{task.status}] (task {task.pk})")
        if tail:
            lines.append(tail[-SUMMARY_CHARS:])
    return "\n".join(lines)


def subtasks_wait(*, work_order):
    """The agent of ``work_order``'s task waits for its subtasks: ``{"waiting":
    True, "pending": n}`` (it ends its turn and is resumed with their
    summaries), or, if every one has ended already, ``{"waiting": False,
    "summary": …}``."""
    with transaction.atomic():
        parent = Task.objects.select_for_update().get(pk=work_order.task_id)
        subtasks = Task.objects.filter(spawned_by=parent)
        if not subtasks.exists():
            raise IllegalTransition(ERR_NO_SUBTASKS)
        pending = subtasks.exclude(status__in=ENDED).count()
        if not pending:
            return {"waiting": False, "pending": 0, "summary": subtasks_summary(parent=parent)}
        Task.objects.filter(pk=parent.pk).update(awaiting_subtasks=True)
        events.publish(
            "task.updated",
            {"id": str(parent.pk), "status": parent.status, "awaiting_subtasks": True},
            groups=[events.task_group(parent.pk)],
        )
    return {"waiting": True, "pending": pending, "summary": ""}


def subtasks_on_run_finished(sender, work_order, **kwargs):
    """``run_task_finished`` hook: when the last subtask of a waiting parent
    ends, its summaries go to the parent agent's inbox (its next turn), in
    the transaction that ended it. The parent's row lock makes two subtasks
    ending together send them once (the second sees the first's end)."""
    _, spawned_by_id, _ = graph_selectors.finished_task_links(work_order=work_order)
    if spawned_by_id is None:
        return
    # Locked whatever its flag says: a wait that counted this subtask as
    # running holds the lock first (its flag is seen here once it commits); a
    # wait that comes after this commit counts it ended.
    parent = Task.objects.select_for_update().filter(pk=spawned_by_id).first()
    if parent is None or not parent.awaiting_subtasks:
        return
    if Task.objects.filter(spawned_by=parent).exclude(status__in=ENDED).exists():
        return
    Task.objects.filter(pk=parent.pk).update(awaiting_subtasks=False)
    services.message_send(
        sender=services.system_profile(),
        text=subtasks_summary(parent=parent),
        task=parent,
        recipient=services.agent_profile(task=parent),
    )
