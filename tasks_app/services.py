"""Writes for tasks and executions."""

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agentvine import events
from agentvine.db import insert_sql
from agentvine.errors import IllegalTransition, ValidationFailed
from queue_app import budgets, dispatch, fairness, lifecycle
from queue_app.models import (
    ACTIVE_STATUSES,
    WorkOrder,
    WorkOrderKind,
    WorkOrderStatus,
)
from tasks_app import graph
from tasks_app.models import PRIORITY_RANK, Priority, Task, TaskDependency, TaskSearchText, TaskStatus, TaskType
from tasks_app.repositories import repository_url_check

ERR_TITLE_REQUIRED = "title is required"
ERR_UNKNOWN_EXECUTOR = "unknown executor profile"
ERR_BAD_TYPE = "unknown task type"
ERR_BAD_PRIORITY = "unknown priority"
ERR_TASK_FINISHED = "task is already finished"
ERR_NOTHING_TO_RETRY = "task has no failed, dead or cancelled work to retry"
ERR_PROMPT_TOO_LONG = "the task is longer than {limit} characters (AGENTVINE_MAX_PROMPT_CHARS)"

# A budget not given (None means no budget): a new task gets its type's
# default, an edit leaves it as it is.
UNCHANGED = object()


# Search covers the beginning of a long description: a trigram index over
# a megabyte of text would cost every creation and edit far more than a
# search gains from its end.
SEARCHABLE_DESCRIPTION_CHARS = 100_000


def _validate_prompt_size(*, title, description):
    limit = settings.AGENTVINE_MAX_PROMPT_CHARS
    if len(title or "") + len(description or "") > limit:
        raise ValidationFailed(ERR_PROMPT_TOO_LONG.format(limit=limit), field="description")


def _validate(*, title, task_type, priority, executor, description=""):
    if not title or not title.strip():
        raise ValidationFailed(ERR_TITLE_REQUIRED, field="title")
    _validate_prompt_size(title=title, description=description)
    if task_type not in TaskType.values:
        raise ValidationFailed(ERR_BAD_TYPE, field="task_type")
    if priority not in Priority.values:
        raise ValidationFailed(ERR_BAD_PRIORITY, field="priority")
    if executor and executor not in settings.AGENTVINE_EXECUTORS:
        raise ValidationFailed(ERR_UNKNOWN_EXECUTOR, field="executor")


def task_spec_check(spec):
    """Raise ValidationFailed unless ``spec`` (task_create's arguments) could create a task."""
    _validate(
        title=spec.get("title"),
        task_type=spec.get("task_type"),
        priority=spec.get("priority"),
        executor=spec.get("executor") or "",
        description=spec.get("description") or "",
    )
    repository_url_check(spec.get("repository_url") or "")


def task_create(
    *,
    title,
    description="",
    task_type=TaskType.FEATURE,
    priority=Priority.NORMAL,
    repository_url="",
    branch_name="",
    executor="",
    created_by=None,
    max_retries=None,
    depends_on=None,
    spawned_by=None,
    created_by_agent="",
    budget_usd=UNCHANGED,
    concurrency_key="",
):
    """Create a task and its first work order; the doorbell rings after commit.

    With ``depends_on`` (parent ids, or dicts ``{"task", "on_failure",
    "base"}``) the task waits ``blocked``, without a work order, until every
    parent is completed (``tasks_app.graph``).
    """
    spec = {
        "title": title,
        "description": description,
        "task_type": task_type,
        "priority": priority,
        "repository_url": repository_url,
        "branch_name": branch_name,
        "executor": executor,
        "max_retries": max_retries,
        "depends_on": depends_on,
        "spawned_by": spawned_by,
        "created_by_agent": created_by_agent,
        "concurrency_key": concurrency_key,
    }
    if budget_usd is not UNCHANGED:
        spec["budget_usd"] = budget_usd
    return tasks_create(specs=[spec], created_by=created_by)[0]


def tasks_create(*, specs, created_by=None):
    """Create tasks (one dict of :func:`task_create`'s arguments each) and
    their first work orders, all or none: one statement, doorbells after commit.

    Every spec is validated before anything is written; a bad one raises
    ValidationFailed naming its index among ``specs``.
    """
    defaults = {"description": "", "task_type": TaskType.FEATURE, "priority": Priority.NORMAL}
    specs = [{**defaults, **spec} for spec in specs]
    for index, spec in enumerate(specs):
        try:
            spec["depends_on"] = graph.dependency_specs(spec.get("depends_on"))
            _validate(
                title=spec.get("title"),
                task_type=spec["task_type"],
                priority=spec["priority"],
                executor=spec.get("executor") or "",
                description=spec["description"],
            )
            repository_url_check(spec.get("repository_url") or "")
            # Not given: its type's default (queue_app.budgets); None: no budget.
            spec["budget_usd"] = (
                budgets.budget_clean(spec["budget_usd"])
                if "budget_usd" in spec
                else budgets.task_budget_default(spec["task_type"])
            )
        except ValidationFailed as exc:
            if len(specs) == 1:
                raise
            raise ValidationFailed(f"task {index}: {exc.message}", field=exc.field) from exc
    with transaction.atomic():
        tasks, work_orders, changes, published, edges = [], [], [], [], []
        now = timezone.now()
        named = [dep for spec in specs for dep in spec["depends_on"]]
        parents = graph.parents_lock(named) if named else {}
        for spec in specs:
            task = Task(
                title=spec["title"].strip(),
                description=spec["description"],
                task_type=spec["task_type"],
                priority=spec["priority"],
                repository_url=spec.get("repository_url") or "",
                branch_name=spec.get("branch_name") or "",
                executor=spec.get("executor") or "",
                created_by=created_by,
                spawned_by=spec.get("spawned_by"),
                created_by_agent=spec.get("created_by_agent") or "",
                budget_usd=spec["budget_usd"],
                concurrency_key=(spec.get("concurrency_key") or "").strip(),
            )
            # A task with unfinished parents waits blocked, without a work order.
            task_edges, waiting = graph.edges_new(child=task, specs=spec["depends_on"], parents=parents, now=now)
            edges.extend(task_edges)
            if waiting:
                task.status = TaskStatus.BLOCKED
            changes.append(insert_sql(task))
            changes.append(insert_sql(_search_text(task)))
            published.append(("task.created", {"id": str(task.id), "title": task.title}, [events.task_group(task.id)]))
            tasks.append(task)
            if task.status == TaskStatus.QUEUED:
                work_orders.append(
                    lifecycle.work_order_new(
                        task=task, kind=WorkOrderKind.RUN_TASK, max_retries=spec.get("max_retries")
                    )
                )
        lifecycle.work_orders_insert(work_orders, changes=changes, published=published)
        if edges:
            TaskDependency.objects.bulk_create(edges)
    # The rows in hand are what was written: no re-read.
    return tasks


def _searchable(task):
    return {
        "title": task.title,
        "description": task.description[:SEARCHABLE_DESCRIPTION_CHARS],
        "repository_url": task.repository_url,
    }


def _search_text(task):
    return TaskSearchText(task=task, **_searchable(task))


def task_search_text_save(*, task):
    """Make the task search find ``task`` by its current text (call after every edit of it)."""
    TaskSearchText.objects.filter(task_id=task.pk).update(**_searchable(task))


def _latest_run_order(task, *, lock=False):
    qs = WorkOrder.objects.filter(task=task, kind=WorkOrderKind.RUN_TASK).order_by("-enqueued_at")
    if lock:
        qs = qs.select_for_update()
    return qs.first()


def task_cancel(*, task):
    """Cancel ``task``'s work; a blocked task is cancelled with every blocked
    task below it (its subtree)."""
    if task.status == TaskStatus.BLOCKED:
        graph.task_subtree_cancel(task=task)
        return task
    with transaction.atomic():
        work_orders = list(
            WorkOrder.objects.select_for_update()
            .filter(task=task, status__in=[WorkOrderStatus.QUEUED, WorkOrderStatus.PAUSED, *ACTIVE_STATUSES])
            .order_by("enqueued_at")
        )
        if not work_orders:
            raise IllegalTransition(ERR_TASK_FINISHED)
        for work_order in work_orders:
            lifecycle.work_order_cancel(work_order=work_order)
    task.refresh_from_db()
    return task


def task_retry(*, task):
    with transaction.atomic():
        work_order = _latest_run_order(task, lock=True)
        if work_order is None or work_order.status not in (
            WorkOrderStatus.FAILED,
            WorkOrderStatus.DEAD,
            WorkOrderStatus.CANCELLED,
        ):
            raise IllegalTransition(ERR_NOTHING_TO_RETRY)
        lifecycle.work_order_retry(work_order=work_order)
    task.refresh_from_db()
    return task


def task_set_priority(*, task, priority):
    """Change priority; queued work moves to the new queue on its next doorbell."""
    if priority not in Priority.values:
        raise ValidationFailed(ERR_BAD_PRIORITY, field="priority")
    with transaction.atomic():
        Task.objects.filter(pk=task.pk).update(priority=priority, updated_at=timezone.now())
        queued = list(WorkOrder.objects.filter(task=task, status=WorkOrderStatus.QUEUED).values_list("pk", "fair_key"))
        queued_ids = [pk for pk, _ in queued]
        for pk, fair_key in queued:
            # Placed anew in its new priority's fair line (queue_app.fairness).
            rank = PRIORITY_RANK[priority]
            line_at = fairness.line_place(priority_rank=rank, fair_key=fair_key, exclude=[pk])
            WorkOrder.objects.filter(pk=pk, status=WorkOrderStatus.QUEUED).update(
                priority=priority, priority_rank=rank, line_at=line_at
            )
        for work_order_id in queued_ids:
            # Ring on the new queue; the old doorbell finds nothing to do only
            # if this one claims first, and either way the work runs once.
            transaction.on_commit(lambda pk=work_order_id: dispatch.work_order_dispatch(work_order_id=pk))
    task.refresh_from_db()
    return task


def task_budget_set(*, task, budget_usd):
    """Set ``task``'s budget (None: none). Paused work of a task whose
    budget now covers what it spent goes back to the queue, to resume in
    its session (queue_app.budgets)."""
    budget = budgets.budget_clean(budget_usd)
    with transaction.atomic():
        task = Task.objects.select_for_update().get(pk=task.pk)
        Task.objects.filter(pk=task.pk).update(budget_usd=budget, updated_at=timezone.now())
        task.budget_usd = budget
        events.publish(
            "task.budget_set",
            {"task_id": str(task.pk), "budget_usd": None if budget is None else str(budget)},
            groups=[events.task_group(task.pk)],
        )
        if WorkOrder.objects.filter(task_id=task.pk, status=WorkOrderStatus.PAUSED).exists():
            refused = budgets.refusal(task)
            if refused is None or refused.scope != "task":
                lifecycle.work_orders_resume(task=task)
    task.refresh_from_db()
    return task


def task_update(*, task, title=None, description=None, priority=None, budget_usd=UNCHANGED):
    if budget_usd is not UNCHANGED:
        budgets.budget_clean(budget_usd)  # refused before anything is written
    if title is not None and not title.strip():
        raise ValidationFailed(ERR_TITLE_REQUIRED, field="title")
    _validate_prompt_size(
        title=task.title if title is None else title,
        description=task.description if description is None else description,
    )
    with transaction.atomic():
        fields = {"updated_at": timezone.now()}
        if title is not None:
            fields["title"] = title.strip()
        if description is not None:
            fields["description"] = description
        Task.objects.filter(pk=task.pk).update(**fields)
        searchable = {name: fields[name] for name in ("title", "description") if name in fields}
        if "description" in searchable:
            searchable["description"] = searchable["description"][:SEARCHABLE_DESCRIPTION_CHARS]
        if searchable:
            TaskSearchText.objects.filter(task_id=task.pk).update(**searchable)
        if priority is not None and priority != task.priority:
            task_set_priority(task=task, priority=priority)
        if budget_usd is not UNCHANGED:
            task_budget_set(task=task, budget_usd=budget_usd)
    task.refresh_from_db()
    return task
