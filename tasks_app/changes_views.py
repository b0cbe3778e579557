"""The console's Changes page of a task (per attempt and for the whole task)
and its patch download.

The page stays fast on a run that changed thousands of files: the file list
is paged, only the files of the page are asked of git (one process), a file
with more than LARGE_FILE_LINES changed lines is collapsed behind a link that
shows it alone, and once a page has rendered DIFF_LINES_PER_PAGE lines the
rest of its files are collapsed the same way (bench/results.py measures it).
"""

from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.safestring import mark_safe

from agentvine.console import operator_required
from agentvine.errors import NotFound, ValidationFailed
from tasks_app.changes import (
    attempt_number,
    change_set_patch,
    compare_url,
    task_changes,
)
from tasks_app.diff_render import file_diff_html, patch_split
from tasks_app.models import Task

FILES_PER_PAGE = 100
DIFF_LINES_PER_PAGE = 600
LARGE_FILE_LINES = 400
# A file shown alone (``?file=N``) is cut here; the patch download has all of it.
FILE_MAX_LINES = 20000


def _changed_lines(entry):
    return (entry["insertions"] or 0) + (entry["deletions"] or 0)


def _requested(request):
    try:
        return attempt_number(request.GET.get("attempt"))
    except ValidationFailed as exc:
        raise Http404(exc.message) from None


def _file_views(task, change_set, entries, *, alone):
    """Each of ``entries`` (numbered files of ``change_set``) with how it is
    shown: its diff rows, or why it is collapsed."""
    budget = FILE_MAX_LINES if alone else DIFF_LINES_PER_PAGE
    views, wanted = [], []
    for index, entry in entries:
        view = {**entry, "index": index, "rows": None, "collapsed": None}
        if entry["binary"]:
            view["collapsed"] = "binary"
        elif not change_set.on_server:
            view["collapsed"] = "not on server"
        elif not alone and _changed_lines(entry) > LARGE_FILE_LINES:
            view["collapsed"] = "large"
        elif not alone and budget <= 0:
            view["collapsed"] = "page full"
        else:
            budget -= _changed_lines(entry)
            wanted.append(view)
        views.append(view)
    if wanted:
        chunks = patch_split(change_set_patch(task=task, change_set=change_set, files=wanted))
        if len(chunks) != len(wanted):
            # git paired the files of this page differently than the whole
            # range (a rename's other side is on another page): no guessing.
            for view in wanted:
                view["collapsed"] = "unmatched"
        else:
            for view, chunk in zip(wanted, chunks, strict=True):
                rows, _ = file_diff_html(view["path"], chunk)
                view["rows"] = mark_safe(rows)  # noqa: S308 (built from escaped text: tasks_app/diff_render.py)
    return views


@operator_required
def task_changes_page(request, task_id):
    task = get_object_or_404(Task, pk=task_id)
    attempt = _requested(request)
    context = {"task": task, "attempt": attempt}
    try:
        changes = task_changes(task=task)
    except NotFound as exc:
        context["no_changes"] = exc.message
        return render(request, "console/task_changes.html", context)
    try:
        change_set = changes.pick(attempt)
    except NotFound as exc:
        raise Http404(exc.message) from None
    numbered = list(enumerate(change_set.files))
    alone = request.GET.get("file")
    if alone is not None:
        if not alone.isdigit() or int(alone) >= len(numbered):
            raise Http404("no such file in these changes")
        page = None
        shown = [numbered[int(alone)]]
    else:
        page = Paginator(numbered, FILES_PER_PAGE).get_page(request.GET.get("page"))
        shown = list(page.object_list)
    context.update(
        {
            "changes": changes,
            "change_set": change_set,
            "page": page,
            "files": _file_views(task, change_set, shown, alone=alone is not None),
            "compare_url": compare_url(
                repository_url=task.repository_url, base_commit=change_set.base_commit, branch=changes.branch
            ),
            "git_url": request.build_absolute_uri(f"/git/{task.id}.git"),
            "large_file_lines": LARGE_FILE_LINES,
            "attempt_query": "" if attempt is None else f"attempt={attempt}&",
        }
    )
    return render(request, "console/task_changes.html", context)


@operator_required
def task_changes_patch(request, task_id):
    """The unified diff of the task (or ``?attempt=N``) as a download."""
    task = get_object_or_404(Task, pk=task_id)
    attempt = _requested(request)
    try:
        change_set = task_changes(task=task).pick(attempt)
        patch = change_set_patch(task=task, change_set=change_set)
    except NotFound as exc:
        raise Http404(exc.message) from None
    response = HttpResponse(patch, content_type="text/x-diff; charset=utf-8")
    name = f"{task.id}-{'task' if attempt is None else f'attempt-{attempt}'}.diff"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
