"""Explicit input and output shapes of the tasks API."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agentvine.serializers import ModelOutputSerializer
from tasks_app.models import OnParentFailure, Priority, ReviewAction, ReviewStatus, Task, TaskStatus, TaskType
from tasks_app.repositories import repository_url_redacted

# Parents one task may name.
MAX_PARENTS = 100


class DependencyInput(serializers.Serializer):
    task = serializers.UUIDField(help_text="The parent task.")
    on_failure = serializers.ChoiceField(
        choices=OnParentFailure.choices,
        default=OnParentFailure.BLOCK,
        help_text="What the dependant does when this parent fails, dies or is cancelled.",
    )
    base = serializers.ChoiceField(
        choices=[("parent", "Start from the parent's repository and branch")],
        required=False,
        help_text='"parent": start from the parent\'s branch (one parent at most).',
    )


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "format": "uuid", "description": "The parent task's id."},
            {
                "type": "object",
                "required": ["task"],
                "properties": {
                    "task": {"type": "string", "format": "uuid", "description": "The parent task."},
                    "on_failure": {"type": "string", "enum": list(OnParentFailure.values), "default": "block"},
                    "base": {"type": "string", "enum": ["parent"], "description": "Start from the parent's branch."},
                },
            },
        ]
    }
)
class DependencyField(serializers.Field):
    """A parent: its id, or ``{"task": id, "on_failure": …, "base": "parent"}``."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            data = {"task": data}
        edge = DependencyInput(data=data)
        edge.is_valid(raise_exception=True)
        return {**edge.validated_data, "task": str(edge.validated_data["task"])}

    def to_representation(self, value):
        return value


def _budget_field(help_text):
    """A task's budget in US dollars (queue_app.budgets), null for none."""
    return serializers.DecimalField(
        max_digits=12, decimal_places=4, min_value=0, required=False, allow_null=True, help_text=help_text
    )


class TaskCreateInput(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    task_type = serializers.ChoiceField(choices=TaskType.choices, default=TaskType.FEATURE)
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.NORMAL)
    repository_url = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    branch_name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    executor = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    max_retries = serializers.IntegerField(min_value=0, max_value=100, required=False)
    budget_usd = _budget_field(
        "What its agents may spend, in US dollars (null: no limit). Not given: its type's default."
    )
    concurrency_key = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        default="",
        help_text="A concurrency key its runs count against besides their executor profile's, instead of their "
        "repository's (limits: AGENTVINE_CONCURRENCY_LIMITS).",
    )
    depends_on = serializers.ListField(
        child=DependencyField(),
        required=False,
        max_length=MAX_PARENTS,
        help_text="Parents (ids or objects): the task waits blocked until every one is completed.",
    )


# Tasks one batch create may hold (POST /api/v1/tasks/batch/).
MAX_BATCH_TASKS = 100


class TaskBatchCreateInput(serializers.Serializer):
    tasks = TaskCreateInput(many=True, allow_empty=False, max_length=MAX_BATCH_TASKS)


class TaskUpdateInput(serializers.Serializer):
    title = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    priority = serializers.ChoiceField(choices=Priority.choices, required=False)
    budget_usd = _budget_field(
        "A new budget (null: none). Raised above what it spent, a paused task resumes in its session."
    )


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
    review_status = serializers.ChoiceField(
        choices=ReviewStatus.choices,
        allow_blank=True,
        read_only=True,
        help_text="The review of its results (empty: nothing to review yet); status keeps following its run.",
    )
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
            "blocked_reason",
            "spawned_by",
            "review_status",
            "merged_commit",
            "merge_conflicts",
            "pull_request_url",
            "budget_usd",
            "concurrency_key",
        ]
        read_only_fields = fields


class DependenciesAddInput(serializers.Serializer):
    depends_on = serializers.ListField(child=DependencyField(), allow_empty=False, max_length=MAX_PARENTS)


class GraphTaskOutput(serializers.Serializer):
    id = serializers.UUIDField()
    title = serializers.CharField()
    status = serializers.ChoiceField(choices=TaskStatus.choices)
    blocked_reason = serializers.CharField()
    on_failure = serializers.ChoiceField(choices=OnParentFailure.choices, allow_null=True)
    base_on_parent = serializers.BooleanField()
    skipped = serializers.BooleanField(help_text="The edge no longer holds the dependant back.")


class DependenciesOutput(serializers.Serializer):
    parents = GraphTaskOutput(many=True)
    children = GraphTaskOutput(many=True, help_text="Dependants, and subtasks its agent made.")


class TreeNodeOutput(serializers.Serializer):
    id = serializers.UUIDField()
    title = serializers.CharField()
    status = serializers.ChoiceField(choices=TaskStatus.choices)
    blocked_reason = serializers.CharField()
    level = serializers.IntegerField()


class TreeOutput(serializers.Serializer):
    nodes = TreeNodeOutput(many=True)
    edges = serializers.ListField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="[parent id, child id, kind]: kind is dependency or subtask.",
    )
    truncated = serializers.BooleanField()


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


class BundleFetchParams(serializers.Serializer):
    have = serializers.ListField(
        child=serializers.RegexField(r"^[0-9a-f]{40}([0-9a-f]{24})?$"),
        required=False,
        max_length=20,
        help_text="commits the worker already has: left out of the bundle",
    )


class ReviewInput(serializers.Serializer):
    action = serializers.ChoiceField(choices=ReviewAction.choices)
    comment = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="What should change (request_changes)."
    )
    into = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=200,
        help_text="The base branch to merge into or open the pull request against; "
        "default: AGENTVINE_MERGE_BASE_BRANCH, else the origin's default branch (main without a repository).",
    )

    def validate(self, attrs):
        if attrs["action"] == ReviewAction.REQUEST_CHANGES and not attrs["comment"].strip():
            raise serializers.ValidationError({"comment": ["say what should change"]})
        return attrs


class ReviewOutput(serializers.Serializer):
    task = serializers.UUIDField(source="task_id")
    action = serializers.ChoiceField(choices=ReviewAction.choices)
    outcome = serializers.CharField(
        help_text="merged, fast_forward, already_merged, conflict, changes_requested or pull_request"
    )
    comment = serializers.CharField()
    by = serializers.CharField(source="by.username", default=None, allow_null=True)
    head_commit = serializers.CharField(help_text="the task branch's head the decision was made on")
    base_branch = serializers.CharField()
    result_commit = serializers.CharField(help_text="the base branch's commit after the merge (before, on a conflict)")
    conflicts = serializers.ListField(child=serializers.CharField(), help_text="files a conflicting merge names")
    pushed = serializers.BooleanField()
    pull_request_url = serializers.CharField()
    review_status = serializers.ChoiceField(choices=ReviewStatus.choices, allow_blank=True, source="task.review_status")
    task_status = serializers.ChoiceField(choices=TaskStatus.choices, source="task.status")
    created_at = serializers.DateTimeField()


class ReviewRefusedOutput(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField(help_text="merge_conflict, or illegal_transition (not reviewable now)")
    conflicts = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="merge_conflict: the conflicting files"
    )
    review = ReviewOutput(required=False, help_text="merge_conflict: the recorded decision")
