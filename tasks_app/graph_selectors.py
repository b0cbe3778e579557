"""Reads of task graphs shared by pages, the API and the CLI."""

from agentvine import db
from tasks_app.models import Task, TaskDependency, TaskSchedule

# A tree page or answer shows at most this many tasks below its root.
TREE_MAX_NODES = 500


def task_parents(*, task):
    """``task``'s dependencies: each parent with its state and the edge's policy."""
    edges = TaskDependency.objects.filter(child=task).select_related("parent").order_by("created_at", "pk")
    return [_edge_row(edge, edge.parent) for edge in edges]


def task_children(*, task):
    """The tasks that depend on ``task``, and the subtasks its agent made."""
    edges = TaskDependency.objects.filter(parent=task).select_related("child").order_by("created_at", "pk")
    rows = [_edge_row(edge, edge.child) for edge in edges]
    named = {row["id"] for row in rows}
    for sub in Task.objects.filter(spawned_by=task).order_by("created_at"):
        if str(sub.pk) not in named:
            rows.append(_task_row(sub) | {"on_failure": None, "base_on_parent": False, "skipped": False})
    return rows


def _task_row(task):
    return {"id": str(task.pk), "title": task.title, "status": task.status, "blocked_reason": task.blocked_reason}


def _edge_row(edge, task):
    return _task_row(task) | {
        "on_failure": edge.on_failure,
        "base_on_parent": edge.base_on_parent,
        "skipped": edge.skipped_at is not None,
    }


def task_tree(*, root, max_nodes=TREE_MAX_NODES):
    """The graph below ``root`` (dependants and subtasks, breadth first):
    ``{"nodes": [rows, each with its "level"], "edges": [(parent id, child id,
    kind)], "truncated": bool}``; one query per level."""
    nodes = {root.pk: _task_row(root) | {"level": 0}}
    edges, frontier, level, truncated = [], [root.pk], 0, False
    while frontier and not truncated:
        level += 1
        found = [
            (parent, child, "dependency")
            for parent, child in TaskDependency.objects.filter(parent_id__in=frontier).values_list(
                "parent_id", "child_id"
            )
        ]
        found += [
            (parent, child, "subtask")
            for child, parent in Task.objects.filter(spawned_by_id__in=frontier).values_list("pk", "spawned_by_id")
        ]
        new = sorted({child for _, child, _ in found if child not in nodes}, key=str)
        if len(nodes) + len(new) > max_nodes:
            new, truncated = new[: max_nodes - len(nodes)], True
        for task in Task.objects.filter(pk__in=new).order_by("created_at"):
            nodes[task.pk] = _task_row(task) | {"level": level}
        edges += [(str(p), str(c), kind) for p, c, kind in found if p in nodes and c in nodes]
        frontier = new
    unique_edges = list(dict.fromkeys(edges))
    return {"nodes": list(nodes.values()), "edges": unique_edges, "truncated": truncated}


def finished_task_links(*, work_order):
    """What the end of ``work_order``'s task may release, read once per run
    end for every ``run_task_finished`` hook (kept on ``work_order``):
    ``(it has dependants, the task whose agent made it or None, it is the
    last run of a schedule)``. Most runs have none of these: one indexed read."""
    links = getattr(work_order, "_finished_task_links", None)
    if links is None:
        links = _finished_task_links_read(work_order.task_id)
        work_order._finished_task_links = links
    return links


def _finished_task_links_read(task_id):
    """Hand-built, as the ORM spends more CPU compiling this read than the
    database spends answering it."""
    tasks, connection = db.table(Task)
    edges, _ = db.table(TaskDependency)
    schedules, _ = db.table(TaskSchedule)
    task_pk, task_params = tasks.where({"pk": task_id}, connection, alias="t")
    task = f"t.{tasks.columns['id']}"
    sql = (
        f"SELECT EXISTS(SELECT 1 FROM {edges.name} e WHERE e.{edges.columns['parent_id']} = {task}),"
        f" t.{tasks.columns['spawned_by_id']},"
        f" EXISTS(SELECT 1 FROM {schedules.name} s WHERE s.{schedules.columns['last_task_id']} = {task})"
        f" FROM {tasks.name} t WHERE {task_pk}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, task_params)
        row = cursor.fetchone()
    if row is None:
        return (False, None, False)
    spawned_by = tasks.fields["spawned_by_id"].to_python(row[1])  # a UUID on every database
    return (bool(row[0]), spawned_by, bool(row[2]))
