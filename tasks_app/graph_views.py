"""Operator pages of task graphs and schedules: one root's graph (an SVG
rendered on the server), skipping a dependency, and the schedules page."""

from django import forms
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from agentvine.console import operator_required
from agentvine.errors import DomainError
from tasks_app import graph, graph_selectors, schedules
from tasks_app.models import Priority, ScheduleOverlap, Task, TaskSchedule, TaskType

# Layout of the graph page: one column per level, one row per task.
NODE_WIDTH, NODE_HEIGHT, COLUMN_GAP, ROW_GAP, MARGIN = 210, 34, 60, 10, 10
TITLE_CHARS = 28
STATUS_COLOURS = {
    "blocked": "#9a6700",
    "queued": "#57606a",
    "in_progress": "#0969da",
    "completed": "#1a7f37",
    "failed": "#cf222e",
    "cancelled": "#8c959f",
}


def graph_layout(tree):
    """Boxes and edges of ``tree`` (``graph_selectors.task_tree``) placed for an SVG."""
    rows_per_level, boxes = {}, {}
    for node in tree["nodes"]:
        row = rows_per_level.get(node["level"], 0)
        rows_per_level[node["level"]] = row + 1
        x = MARGIN + node["level"] * (NODE_WIDTH + COLUMN_GAP)
        y = MARGIN + row * (NODE_HEIGHT + ROW_GAP)
        title = node["title"] if len(node["title"]) <= TITLE_CHARS else node["title"][: TITLE_CHARS - 1] + "…"
        boxes[node["id"]] = {
            **node,
            "x": x,
            "y": y,
            "label": title,
            "colour": STATUS_COLOURS.get(node["status"], "#57606a"),
        }
    edges = []
    for parent, child, kind in tree["edges"]:
        a, b = boxes[parent], boxes[child]
        edges.append(
            {
                "x1": a["x"] + NODE_WIDTH,
                "y1": a["y"] + NODE_HEIGHT // 2,
                "x2": b["x"],
                "y2": b["y"] + NODE_HEIGHT // 2,
                "kind": kind,
            }
        )
    width = MARGIN * 2 + (max(rows_per_level, default=0) + 1) * (NODE_WIDTH + COLUMN_GAP)
    height = MARGIN * 2 + max(rows_per_level.values(), default=1) * (NODE_HEIGHT + ROW_GAP)
    return {"boxes": list(boxes.values()), "edges": edges, "width": width, "height": height}


@operator_required
def task_graph(request, task_id):
    root = get_object_or_404(Task, pk=task_id)
    tree = graph_selectors.task_tree(root=root)
    context = {
        "task": root,
        "tree": tree,
        "layout": graph_layout(tree),
        "node_width": NODE_WIDTH,
        "node_height": NODE_HEIGHT,
    }
    return render(request, "console/task_graph.html", context)


@operator_required
@require_POST
def dependency_skip(request, task_id, parent_id):
    task = get_object_or_404(Task, pk=task_id)
    try:
        graph.task_dependency_skip(task=task, parent_id=parent_id)
        messages.success(request, "Dependency skipped.")
    except DomainError as exc:
        messages.error(request, f"Cannot skip: {exc.message}.")
    return redirect("task-detail", task_id=task.id)


class ScheduleForm(forms.Form):
    name = forms.CharField(max_length=150)
    cron = forms.CharField(max_length=100, required=False, help_text='e.g. "0 2 * * *" (every night at 02:00)')
    interval_seconds = forms.IntegerField(min_value=1, required=False, label="or every (seconds)")
    overlap = forms.ChoiceField(choices=ScheduleOverlap.choices, initial=ScheduleOverlap.SKIP)
    title = forms.CharField(max_length=200)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    task_type = forms.ChoiceField(choices=TaskType.choices, initial=TaskType.FEATURE)
    priority = forms.ChoiceField(choices=Priority.choices, initial=Priority.NORMAL)
    repository_url = forms.CharField(max_length=500, required=False)
    branch_name = forms.CharField(max_length=200, required=False)
    executor = forms.CharField(max_length=64, required=False)


def _initial(schedule):
    return {name: getattr(schedule, name) for name in ScheduleForm.base_fields}


@operator_required
def schedule_list(request):
    editing = None
    if request.GET.get("edit"):
        editing = get_object_or_404(TaskSchedule, pk=request.GET["edit"])
    form = ScheduleForm(initial=_initial(editing) if editing else None)
    if request.method == "POST":
        editing = get_object_or_404(TaskSchedule, pk=request.POST["schedule"]) if request.POST.get("schedule") else None
        form = ScheduleForm(request.POST)
        if form.is_valid():
            try:
                saved = schedules.schedule_save(schedule=editing, created_by=request.user, **form.cleaned_data)
            except DomainError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                messages.success(request, f"Schedule “{saved.name}” saved.")
                return redirect("schedule-list")
    context = {
        "schedules": list(TaskSchedule.objects.select_related("last_task").order_by("name")),
        "form": form,
        "editing": editing,
    }
    return render(request, "console/schedules.html", context, status=400 if form.errors else 200)


@operator_required
@require_POST
def schedule_action(request, schedule_id, action):
    schedule = get_object_or_404(TaskSchedule, pk=schedule_id)
    if action in ("enable", "disable"):
        schedules.schedule_set_enabled(schedule=schedule, enabled=action == "enable")
        messages.success(request, f"Schedule “{schedule.name}” {action}d.")
    elif action == "delete":
        schedules.schedule_delete(schedule=schedule)
        messages.success(request, f"Schedule “{schedule.name}” deleted.")
    else:
        messages.error(request, f"Cannot {action} a schedule.")
    return redirect("schedule-list")
