import uuid

from django.conf import settings
from django.db import models


class TaskType(models.TextChoices):
    FEATURE = "feature", "Feature"
    BUGFIX = "bugfix", "Bug fix"
    TEST = "test", "Test"
    DOCS = "docs", "Docs"


class TaskStatus(models.TextChoices):
    # Waits for its parents (TaskDependency); it has no work order yet.
    BLOCKED = "blocked", "Blocked"
    QUEUED = "queued", "Queued"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    # Its spend reached its budget (queue_app.budgets): its run stopped with
    # output and changes kept; raising the budget resumes it in its session.
    PAUSED_BUDGET = "paused_budget", "Paused: budget spent"


class ReviewStatus(models.TextChoices):
    """Where a task's results stand with its reviewers: a second axis beside
    ``status`` (which follows the task's run and which dependants, schedules
    and subtasks key on). Empty: nothing to review yet."""

    # The server holds commits of the task that nobody has decided on.
    IN_REVIEW = "in_review", "In review"
    # A reviewer asked for changes: the agent's next turn works on them.
    CHANGES_REQUESTED = "changes_requested", "Changes requested"
    # Approved, but the branch conflicts with its base: resolve (a rebase
    # turn of the agent) and approve again.
    CONFLICT = "conflict", "Merge conflict"
    # Approved and merged into its base (and pushed when configured).
    MERGED = "merged", "Merged"


class ReviewAction(models.TextChoices):
    APPROVE = "approve", "Approve"
    REQUEST_CHANGES = "request_changes", "Request changes"
    REBASE = "rebase", "Hand the conflict to the agent"
    OPEN_PULL_REQUEST = "open_pull_request", "Open pull request"


class Priority(models.TextChoices):
    HIGH = "high", "High"
    NORMAL = "normal", "Normal"
    LOW = "low", "Low"


# Lower rank is served first; used for ordering the ready set.
PRIORITY_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}


class Task(models.Model):
    """What a human wants done."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    task_type = models.CharField(max_length=16, choices=TaskType.choices, default=TaskType.FEATURE)
    status = models.CharField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.QUEUED, db_index=True)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    repository_url = models.CharField(max_length=500, blank=True)
    branch_name = models.CharField(max_length=200, blank=True)
    executor = models.CharField(max_length=64, blank=True, help_text="Executor profile; empty means the default.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # Why a blocked task still waits when a parent failed (its edge's policy is block).
    blocked_reason = models.CharField(max_length=500, blank=True)
    # The task whose agent created this one as a subtask (create_subtask),
    # and which agent run that was (shown as its author).
    spawned_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="subtasks")
    created_by_agent = models.CharField(max_length=200, blank=True)
    # The agent of this task waits for its subtasks (wait_for_subtasks): it
    # gets their summaries as its next turn once every one has ended.
    awaiting_subtasks = models.BooleanField(default=False)
    # The review loop (tasks_app.review): its state, the commit its approval
    # put on the base branch, the files of a conflicting merge, the pull request.
    review_status = models.CharField(max_length=20, choices=ReviewStatus.choices, blank=True, default="")
    merged_commit = models.CharField(max_length=64, blank=True)
    merge_conflicts = models.JSONField(default=list, blank=True)
    pull_request_url = models.CharField(max_length=500, blank=True)
    # What its agents may spend on it, in US dollars (None: no limit): the
    # default of its type (AGENTVINE_TASK_BUDGET_USD) unless given
    # (queue_app.budgets).
    budget_usd = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    # A concurrency key its runs count against besides their executor
    # profile's, instead of their repository's (queue_app.concurrency).
    concurrency_key = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "-created_at"], name="task_status_created_idx")]

    def __str__(self):
        return self.title


class TaskSearchText(models.Model):
    """A task's searchable text, kept apart from the task row.

    PostgreSQL gives an updated row a new entry in every one of its table's
    indexes, and a task's row is updated at each status change of its run. A
    trigram index on the task itself would extract the trigrams of the whole
    description (up to 100,000 characters) again each time: about 6 ms of
    PostgreSQL CPU per change for a long prompt. Here the trigram indexes
    (migration 0005) are written only when the text is: at creation and
    when a person edits it (``tasks_app.services``).
    """

    task = models.OneToOneField(Task, primary_key=True, on_delete=models.CASCADE, related_name="search_text")
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    repository_url = models.CharField(max_length=500, blank=True)

    def __str__(self):
        return self.title


class OnParentFailure(models.TextChoices):
    BLOCK = "block", "Stay blocked until an operator decides"
    SKIP = "skip", "Ignore the edge"
    CANCEL = "cancel", "Cancel the dependant and its subtree"


class TaskDependency(models.Model):
    """``child`` runs only once ``parent`` is completed (an edge parent → child).

    A blocked child has no work order: it is queued in the transaction that
    completes its last unfinished parent (``tasks_app.graph``).
    """

    id = models.BigAutoField(primary_key=True)
    parent = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="dependant_edges")
    child = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="parent_edges")
    on_failure = models.CharField(max_length=8, choices=OnParentFailure.choices, default=OnParentFailure.BLOCK)
    # The child starts from the parent's repository and branch (base = parent).
    base_on_parent = models.BooleanField(default=False)
    # Set when the edge no longer holds the child back although its parent
    # did not complete (policy skip, or an operator skipped it).
    skipped_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["parent", "child"], name="task_dependency_unique_edge"),
            models.CheckConstraint(condition=~models.Q(parent=models.F("child")), name="task_dependency_not_self"),
        ]
        indexes = [models.Index(fields=["child"], name="task_dependency_child_idx")]

    def __str__(self):
        return f"{self.parent_id} → {self.child_id}"


class ScheduleOverlap(models.TextChoices):
    SKIP = "skip", "Skip the tick while the previous run is going"
    QUEUE_ONE = "queue_one", "Queue one run (at most) to start when the previous one ends"


class TaskSchedule(models.Model):
    """A recurring task: a template queued on a cron or interval schedule.

    Beat fires its django-celery-beat ``PeriodicTask`` (kept in step by
    ``tasks_app.schedules``); each tick creates one task from the template,
    unless the previous one is still going (``overlap``).
    """

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=150, unique=True)
    enabled = models.BooleanField(default=True)
    # Exactly one of the two: a five-field crontab ("0 2 * * *", in
    # CELERY_TIMEZONE) or a number of seconds.
    cron = models.CharField(max_length=100, blank=True)
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    overlap = models.CharField(max_length=10, choices=ScheduleOverlap.choices, default=ScheduleOverlap.SKIP)
    # The template of each run.
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    task_type = models.CharField(max_length=16, choices=TaskType.choices, default=TaskType.FEATURE)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    repository_url = models.CharField(max_length=500, blank=True)
    branch_name = models.CharField(max_length=200, blank=True)
    executor = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="task_schedules"
    )
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_task = models.ForeignKey(Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    last_tick_at = models.DateTimeField(null=True, blank=True)
    # queue_one: a tick came while the last run was going; its run starts when that one ends.
    run_pending = models.BooleanField(default=False)
    runs_created = models.PositiveIntegerField(default=0)
    ticks_skipped = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class TaskReview(models.Model):
    """One review decision on a task's results, with who made it: the log
    the task page and ``POST tasks/{id}/review/`` answer from."""

    id = models.BigAutoField(primary_key=True)
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="reviews")
    action = models.CharField(max_length=20, choices=ReviewAction.choices)
    comment = models.TextField(blank=True)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The task branch's head on the server when the decision was made.
    head_commit = models.CharField(max_length=64, blank=True)
    # merged | fast_forward | already_merged | conflict | changes_requested | pull_request
    outcome = models.CharField(max_length=20)
    base_branch = models.CharField(max_length=200, blank=True)
    result_commit = models.CharField(max_length=64, blank=True)
    conflicts = models.JSONField(default=list, blank=True)
    pushed = models.BooleanField(default=False)
    pull_request_url = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["task", "-created_at"], name="task_review_task_idx")]

    def __str__(self):
        return f"{self.action} of {self.task_id}"
