"""GET tasks/{id}/changes/: what a task changed (operators), as JSON or as
the unified diff (``text/x-diff``)."""

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from agentvine.api import PlatformAPIView, query_params
from tasks_app.apis import _DiffRenderer
from tasks_app.changes import change_set_patch, compare_url, task_changes
from tasks_app.models import Task
from tasks_app.repositories import repository_url_redacted
from tasks_app.serializers import ChangedFileOutput

FILES_LIMIT_DEFAULT = 300
FILES_LIMIT_MAX = 1000


class TaskChangesParams(serializers.Serializer):
    attempt = serializers.IntegerField(
        required=False, min_value=1, help_text="one attempt (numbered 1, 2, … as on the task page); the text/x-diff "
        "answer is of this attempt instead of the whole task"
    )  # fmt: skip
    offset = serializers.IntegerField(required=False, min_value=0, default=0, help_text="first file of every list")
    limit = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=FILES_LIMIT_MAX,
        default=FILES_LIMIT_DEFAULT,
        help_text="most files per list; files_total says how many there are",
    )


class ChangeSetOutput(serializers.Serializer):
    attempt = serializers.IntegerField(allow_null=True, help_text="null for the whole task")
    execution = serializers.UUIDField(allow_null=True)
    status = serializers.CharField(allow_null=True, help_text="the attempt's status; null for the whole task")
    base_commit = serializers.CharField()
    head_commit = serializers.CharField()
    on_server = serializers.BooleanField(help_text="the server's repository holds these commits (the diff is served)")
    files_total = serializers.IntegerField()
    insertions = serializers.IntegerField()
    deletions = serializers.IntegerField()
    binary_files = serializers.IntegerField()
    files_offset = serializers.IntegerField()
    files_truncated = serializers.BooleanField(help_text="more files follow: ask again with a larger offset")
    files = ChangedFileOutput(many=True)


class TaskChangesOutput(serializers.Serializer):
    task = serializers.UUIDField()
    branch = serializers.CharField()
    repository_url = serializers.CharField(help_text="the origin, without credentials; empty for a task without one")
    compare_url = serializers.CharField(allow_null=True, help_text="the origin's compare page (GitHub, GitLab, Gitea)")
    git_path = serializers.CharField(help_text="where `git fetch` reads the branch on this server")
    whole = ChangeSetOutput(help_text="base of the first attempt .. head of the latest one")
    attempts = ChangeSetOutput(many=True, help_text="the attempts that ended with a snapshot, oldest first")


def _change_set_data(change_set, *, offset, limit):
    execution = change_set.execution
    return {
        "attempt": change_set.number,
        "execution": execution.pk if execution else None,
        "status": execution.status if execution else None,
        "base_commit": change_set.base_commit,
        "head_commit": change_set.head_commit,
        "on_server": change_set.on_server,
        "files_total": len(change_set.files),
        "insertions": change_set.insertions,
        "deletions": change_set.deletions,
        "binary_files": change_set.binary_files,
        "files_offset": offset,
        "files_truncated": offset + limit < len(change_set.files),
        "files": change_set.files[offset : offset + limit],
    }


class TaskChangesApi(PlatformAPIView):
    """What the task changed: for the task as a whole (the base of its first
    attempt .. the head of its latest, on the task branch in the server's
    repository) and per attempt, with each file's +/- counts (null for a
    binary file). Or the unified diff as ``text/x-diff`` (``Accept`` header
    or ``?format=diff``). 404 while no attempt has ended with results."""

    renderer_classes = [JSONRenderer, _DiffRenderer]

    @extend_schema(
        parameters=[TaskChangesParams],
        responses={(200, "application/json"): TaskChangesOutput, (200, "text/x-diff"): OpenApiTypes.STR},
        operation_id="tasks_changes",
        tags=["results"],
    )
    def get(self, request, task_id):
        task = get_object_or_404(Task, pk=task_id)
        params = query_params(TaskChangesParams, request)
        changes = task_changes(task=task)
        if request.accepted_renderer.media_type == _DiffRenderer.media_type:
            attempt = params.get("attempt")
            patch = change_set_patch(task=task, change_set=changes.pick(attempt))
            response = Response(patch, content_type="text/x-diff; charset=utf-8")
            name = f"{task.pk}-{'task' if attempt is None else f'attempt-{attempt}'}.diff"
            response["Content-Disposition"] = f'attachment; filename="{name}"'
            return response
        window = {"offset": params["offset"], "limit": params["limit"]}
        attempts = changes.attempts
        if params.get("attempt") is not None:
            attempts = [changes.pick(params["attempt"])]
        data = {
            "task": task.pk,
            "branch": changes.branch,
            "repository_url": repository_url_redacted(task.repository_url or ""),
            "compare_url": compare_url(
                repository_url=task.repository_url, base_commit=changes.whole.base_commit, branch=changes.branch
            ),
            "git_path": f"/git/{task.pk}.git",
            "whole": _change_set_data(changes.whole, **window),
            "attempts": [_change_set_data(a, **window) for a in attempts],
        }
        return Response(TaskChangesOutput(data).data)
