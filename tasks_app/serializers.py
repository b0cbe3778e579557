"""Explicit input and output shapes of the tasks API."""

from rest_framework import serializers

from agentvine.serializers import ModelOutputSerializer
from tasks_app.models import Priority, Task, TaskStatus, TaskType
from tasks_app.repositories import repository_url_redacted

MAX_DESCRIPTION_CHARS = 100_000


class TaskCreateInput(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=MAX_DESCRIPTION_CHARS, required=False, allow_blank=True, default="")
    task_type = serializers.ChoiceField(choices=TaskType.choices, default=TaskType.FEATURE)
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.NORMAL)
    repository_url = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    branch_name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    executor = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    max_retries = serializers.IntegerField(min_value=0, max_value=100, required=False)


# Tasks one batch create may hold (POST /api/v1/tasks/batch/).
MAX_BATCH_TASKS = 100


class TaskBatchCreateInput(serializers.Serializer):
    tasks = TaskCreateInput(many=True, allow_empty=False, max_length=MAX_BATCH_TASKS)


class TaskUpdateInput(serializers.Serializer):
    title = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(max_length=MAX_DESCRIPTION_CHARS, required=False, allow_blank=True)
    priority = serializers.ChoiceField(choices=Priority.choices, required=False)


class TaskListParams(serializers.Serializer):
    status = serializers.ChoiceField(choices=TaskStatus.choices, required=False)
    type = serializers.ChoiceField(choices=TaskType.choices, required=False)
    priority = serializers.ChoiceField(choices=Priority.choices, required=False)
    search = serializers.CharField(max_length=200, required=False, allow_blank=True)
    limit = serializers.IntegerField(min_value=1, max_value=10**6, required=False)
    offset = serializers.IntegerField(min_value=0, max_value=10**9, required=False)


class RepositoryUrlField(serializers.CharField):
    """A repository URL as shown: never with credentials (tasks_app/repositories.py)."""

    def to_representation(self, value):
        return repository_url_redacted(super().to_representation(value))


class TaskOutput(ModelOutputSerializer):
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)
    repository_url = RepositoryUrlField(read_only=True)

    class Meta:
        model = Task
        fields = [
            "id",
            "title",
            "description",
            "task_type",
            "status",
            "priority",
            "repository_url",
            "branch_name",
            "executor",
            "created_by",
            "created_at",
            "updated_at",
            "completed_at",
        ]
        read_only_fields = fields


class BundleParams(serializers.Serializer):
    base = serializers.RegexField(r"^[0-9a-f]{40}([0-9a-f]{24})?$", help_text="where the task's branch left its base")


class ChangedFileOutput(serializers.Serializer):
    path = serializers.CharField()
    old_path = serializers.CharField()
    status = serializers.CharField(help_text="A added, M modified, D deleted, R renamed, C copied, T type changed")
    insertions = serializers.IntegerField(allow_null=True)
    deletions = serializers.IntegerField(allow_null=True)
    binary = serializers.BooleanField()


class ExecutionResultOutput(serializers.Serializer):
    id = serializers.UUIDField()
    attempt = serializers.IntegerField()
    base_commit = serializers.CharField()
    head_commit = serializers.CharField()
    has_changes = serializers.BooleanField(allow_null=True)
    changed_files = ChangedFileOutput(many=True)
