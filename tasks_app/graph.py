"""Task graphs: dependencies between tasks and what a parent's end releases.

An edge parent → child (``TaskDependency``) holds the child in ``blocked``
(no work order, so no queue and no doorbell) until the parent is completed.
The child's first work order is written in the transaction that completes
its last unfinished parent (:func:`dependants_on_run_finished`, connected to
``queue_app.lifecycle.run_task_finished``), so it is queued exactly once:
the completing transaction has updated its parent's row before it locks the
children's rows, and the children are locked in primary-key order. When two
parents of one child complete together, the second to lock the child waits
for the first to commit, then sees both parents completed; the first saw the
second's completion uncommitted and left the child blocked.

A parent that fails, dies or is cancelled applies each edge's policy
(``on_failure``): ``block`` keeps the child blocked with the reason (an
operator retries the parent, skips the edge or cancels the subtree),
``skip`` ignores the edge, ``cancel`` cancels the child and everything below it.
"""

from django.db import transaction
from django.utils import timezone

from agentvine import events
from agentvine.errors import IllegalTransition, NotFound, ValidationFailed
from queue_app import lifecycle
from queue_app.models import WorkOrderKind, WorkOrderStatus
from tasks_app import graph_selectors
from tasks_app.models import OnParentFailure, Task, TaskDependency, TaskStatus

ERR_CYCLE = "dependency cycle: {path}"
ERR_SELF = "a task cannot depend on itself"
ERR_UNKNOWN_PARENT = "unknown parent task {id}"
ERR_DUPLICATE_PARENT = "parent task {id} is named twice"
ERR_TWO_BASES = "only one parent can be the base (base = parent)"
ERR_NOT_BLOCKED = "dependencies can be added only to a blocked task (it has not been queued yet)"
ERR_NO_SUCH_EDGE = "this task does not depend on that task"
ERR_EDGE_NOT_HOLDING = "that dependency no longer holds the task back"

FAILED_STATUSES = (TaskStatus.FAILED, TaskStatus.CANCELLED)
REASON_PARENT_ENDED = "parent {title!r} ({id}) {status}: retry it, skip the dependency or cancel this task"
REASON_CANCELLED = "cancelled: parent {title!r} ({id}) {status}"


def _label(task):
    return f"{task.title!r} ({str(task.pk)[:8]})"


def dependency_specs(depends_on):
    """Normalise ``depends_on`` (ids, or dicts ``{"task", "on_failure", "base"}``)
    to a list of ``{"task": id, "on_failure": …, "base_on_parent": bool}``."""
    specs = []
    for item in depends_on or ():
        if isinstance(item, dict):
            policy = item.get("on_failure") or OnParentFailure.BLOCK
            if policy not in OnParentFailure.values:
                raise ValidationFailed(f"unknown on_failure policy {policy!r}", field="depends_on")
            base = item.get("base") in ("parent", True)
            specs.append({"task": str(item["task"]), "on_failure": policy, "base_on_parent": base})
        else:
            specs.append({"task": str(item), "on_failure": OnParentFailure.BLOCK, "base_on_parent": False})
    seen = set()
    for spec in specs:
        if spec["task"] in seen:
            raise ValidationFailed(ERR_DUPLICATE_PARENT.format(id=spec["task"]), field="depends_on")
        seen.add(spec["task"])
    if sum(spec["base_on_parent"] for spec in specs) > 1:
        raise ValidationFailed(ERR_TWO_BASES, field="depends_on")
    return specs


def parents_lock(specs):
    """The parent tasks ``specs`` name, locked (in primary-key order) so none
    completes unseen while its new edge is written; ValidationFailed for an
    unknown one."""
    ids = sorted({spec["task"] for spec in specs})
    try:
        parents = {str(task.pk): task for task in Task.objects.select_for_update().filter(pk__in=ids).order_by("pk")}
    except Exception as exc:  # a malformed UUID
        raise ValidationFailed(ERR_UNKNOWN_PARENT.format(id=ids[0]), field="depends_on") from exc
    for task_id in ids:
        if task_id not in parents:
            raise ValidationFailed(ERR_UNKNOWN_PARENT.format(id=task_id), field="depends_on")
    return parents


def edges_new(*, child, specs, parents, now):
    """Unsaved edges from ``parents`` to ``child``; an edge whose parent already
    ended without completing is applied its policy at once (skip: skipped;
    block: the child's ``blocked_reason``; cancel: the child is cancelled).
    Returns ``(edges, blocked)``: whether the child must wait."""
    edges, waiting = [], False
    for spec in specs:
        parent = parents[spec["task"]]
        edge = TaskDependency(
            parent=parent, child=child, on_failure=spec["on_failure"], base_on_parent=spec["base_on_parent"]
        )
        if parent.status in FAILED_STATUSES:
            if edge.on_failure == OnParentFailure.SKIP:
                edge.skipped_at = now
            elif edge.on_failure == OnParentFailure.CANCEL:
                child.status, child.completed_at = TaskStatus.CANCELLED, now
                child.blocked_reason = REASON_CANCELLED.format(title=parent.title, id=parent.pk, status=parent.status)
            else:
                child.blocked_reason = REASON_PARENT_ENDED.format(
                    title=parent.title, id=parent.pk, status=parent.status
                )
                waiting = True
        elif parent.status != TaskStatus.COMPLETED:
            waiting = True
        if edge.base_on_parent:
            child.repository_url = child.repository_url or parent.repository_url
            child.branch_name = child.branch_name or parent.branch_name
        edges.append(edge)
    return edges, waiting and child.status != TaskStatus.CANCELLED


def _cycle_path(*, parent, child):
    """The path child → … → parent if ``child`` is an ancestor of ``parent``
    (so a new edge parent → child closes a cycle), else None."""
    came_from = {parent.pk: None}
    frontier = [parent.pk]
    while frontier:
        edges = TaskDependency.objects.filter(child_id__in=frontier).values_list("parent_id", "child_id")
        frontier = []
        for ancestor, below in edges:
            if ancestor in came_from:
                continue
            came_from[ancestor] = below
            if ancestor == child.pk:
                path, node = [], ancestor
                while node is not None:
                    path.append(node)
                    node = came_from[node]
                return path
            frontier.append(ancestor)
    return None


def task_dependencies_add(*, task, depends_on):
    """Make the blocked ``task`` also wait for ``depends_on`` (as
    :func:`dependency_specs` takes it); refused (400, naming the cycle) when
    an edge would close a cycle."""
    specs = dependency_specs(depends_on)
    now = timezone.now()
    with transaction.atomic():
        parents = parents_lock(specs)
        child = Task.objects.select_for_update().get(pk=task.pk)
        if child.status != TaskStatus.BLOCKED:
            raise IllegalTransition(ERR_NOT_BLOCKED)
        existing = set(TaskDependency.objects.filter(child=child).values_list("parent_id", flat=True))
        for spec in specs:
            parent = parents[spec["task"]]
            if parent.pk == child.pk:
                raise ValidationFailed(ERR_SELF, field="depends_on")
            if parent.pk in existing:
                raise ValidationFailed(ERR_DUPLICATE_PARENT.format(id=parent.pk), field="depends_on")
            path = _cycle_path(parent=parent, child=child)
            if path is not None:
                titles = dict(Task.objects.filter(pk__in=path).values_list("pk", "title"))
                names = [f"{titles[node]!r} ({str(node)[:8]})" for node in [*path, child.pk]]
                raise ValidationFailed(ERR_CYCLE.format(path=" → ".join(names)), field="depends_on")
        edges, _ = edges_new(child=child, specs=specs, parents=parents, now=now)
        TaskDependency.objects.bulk_create(edges)
        Task.objects.filter(pk=child.pk).update(
            status=child.status,
            blocked_reason=child.blocked_reason,
            repository_url=child.repository_url,
            branch_name=child.branch_name,
            completed_at=child.completed_at,
            updated_at=now,
        )
        _publish_task(child)
        _release_ready([child.pk], now=now)
    child.refresh_from_db()
    return child


def _publish_task(task):
    payload = {"id": str(task.pk), "status": task.status, "blocked_reason": task.blocked_reason}
    events.publish("task.updated", payload, groups=[events.task_group(task.pk)])


def _release_ready(child_ids, *, now):
    """Queue those of the (locked, blocked) ``child_ids`` that nothing holds
    back any more: their first work orders, in one statement."""
    if not child_ids:
        return []
    holding = set(
        TaskDependency.objects.filter(child_id__in=child_ids, skipped_at__isnull=True)
        .exclude(parent__status=TaskStatus.COMPLETED)
        .values_list("child_id", flat=True)
    )
    ready = list(
        Task.objects.filter(pk__in=[pk for pk in child_ids if pk not in holding], status=TaskStatus.BLOCKED).order_by(
            "pk"
        )
    )
    if not ready:
        return []
    # Its own statement: one statement that updated a task row twice (here
    # and with its work order's insert) would keep only one of the updates.
    Task.objects.filter(pk__in=[task.pk for task in ready]).exclude(blocked_reason="").update(blocked_reason="")
    for task in ready:
        task.blocked_reason = ""
    lifecycle.work_orders_insert([lifecycle.work_order_new(task=task, kind=WorkOrderKind.RUN_TASK) for task in ready])
    return ready


def _children_locked(parent_id):
    """``(edges, blocked children by id)`` below ``parent_id``, the children
    locked in primary-key order (the lock the module docstring relies on)."""
    edges = list(TaskDependency.objects.filter(parent_id=parent_id))
    if not edges:
        return [], {}
    children = {
        task.pk: task
        for task in Task.objects.select_for_update()
        .filter(pk__in=[edge.child_id for edge in edges], status=TaskStatus.BLOCKED)
        .order_by("pk")
    }
    return edges, children


def dependants_on_run_finished(sender, work_order, **kwargs):
    """``run_task_finished`` hook: the task of ``work_order`` ended; release,
    keep blocked or cancel its dependants, in the same transaction."""
    has_dependants, _, _ = graph_selectors.finished_task_links(work_order=work_order)
    if not has_dependants:
        return
    edges, children = _children_locked(work_order.task_id)
    if not children:
        return
    now = timezone.now()
    if work_order.status == WorkOrderStatus.COMPLETED:
        _release_ready(list(children), now=now)
        return
    parent = Task.objects.get(pk=work_order.task_id)
    _parent_failed(parent, edges=edges, children=children, now=now)


def _parent_failed(parent, *, edges, children, now):
    skipped, reasons, cancelled = [], {}, []
    for edge in edges:
        child = children.get(edge.child_id)
        if child is None or edge.skipped_at is not None:
            continue
        if edge.on_failure == OnParentFailure.SKIP:
            skipped.append(edge.pk)
        elif edge.on_failure == OnParentFailure.CANCEL:
            cancelled.append(child)
        else:
            reasons[child.pk] = REASON_PARENT_ENDED.format(title=parent.title, id=parent.pk, status=parent.status)
    TaskDependency.objects.filter(pk__in=skipped).update(skipped_at=now)
    for child_id, reason in reasons.items():
        Task.objects.filter(pk=child_id).update(blocked_reason=reason, updated_at=now)
        children[child_id].blocked_reason = reason
        _publish_task(children[child_id])
    reason = REASON_CANCELLED.format(title=parent.title, id=parent.pk, status=parent.status)
    for child in cancelled:
        _subtree_cancel(child, reason=reason, now=now)
    _release_ready([edge.child_id for edge in edges if edge.pk in skipped], now=now)


def _subtree_cancel(task, *, reason, now):
    """Cancel the blocked ``task`` and every blocked task below it."""
    ids, frontier = [task.pk], [task.pk]
    while frontier:
        frontier = list(
            TaskDependency.objects.filter(parent_id__in=frontier, child__status=TaskStatus.BLOCKED)
            .exclude(child_id__in=ids)
            .values_list("child_id", flat=True)
            .distinct()
        )
        ids.extend(frontier)
    locked = list(Task.objects.select_for_update().filter(pk__in=ids, status=TaskStatus.BLOCKED).order_by("pk"))
    Task.objects.filter(pk__in=[t.pk for t in locked]).update(
        status=TaskStatus.CANCELLED, blocked_reason=reason[:500], completed_at=now, updated_at=now
    )
    for cancelled in locked:
        cancelled.status, cancelled.blocked_reason = TaskStatus.CANCELLED, reason[:500]
        _publish_task(cancelled)
    return locked


def task_subtree_cancel(*, task, reason="cancelled by operator"):
    """An operator cancels the blocked ``task`` and every blocked task below it."""
    with transaction.atomic():
        locked = Task.objects.select_for_update().filter(pk=task.pk, status=TaskStatus.BLOCKED).first()
        if locked is None:
            raise IllegalTransition(ERR_NOT_BLOCKED)
        cancelled = _subtree_cancel(locked, reason=reason, now=timezone.now())
    task.refresh_from_db()
    return cancelled


def task_dependency_skip(*, task, parent_id):
    """An operator lets ``task`` go on without ``parent_id``: the edge is
    skipped, and the task is queued if nothing else holds it back."""
    now = timezone.now()
    with transaction.atomic():
        edge = TaskDependency.objects.filter(child=task, parent_id=parent_id).first()
        if edge is None:
            raise NotFound(ERR_NO_SUCH_EDGE)
        Task.objects.select_for_update().filter(pk=edge.parent_id).first()
        child = Task.objects.select_for_update().get(pk=task.pk)
        if child.status != TaskStatus.BLOCKED or edge.skipped_at is not None:
            raise IllegalTransition(ERR_EDGE_NOT_HOLDING)
        TaskDependency.objects.filter(pk=edge.pk).update(skipped_at=now)
        Task.objects.filter(pk=child.pk).update(blocked_reason="", updated_at=now)
        if not _release_ready([child.pk], now=now):
            child.blocked_reason = ""
            _publish_task(child)
    task.refresh_from_db()
    return task
