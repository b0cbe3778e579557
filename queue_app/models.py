import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from tasks_app.models import Priority


class WorkOrderKind(models.TextChoices):
    RUN_TASK = "run_task", "Run a task"
    DELIVER_MESSAGE = "deliver_message", "Deliver a message to a session"


class WorkOrderStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    CLAIMED = "claimed", "Claimed"
    RUNNING = "running", "Running"
    WAITING = "waiting", "Waiting for a human"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    DEAD = "dead", "Dead"
    # Its task's budget is spent (queue_app.budgets): not claimable until the
    # budget is raised, when it goes back to the queue in its old place.
    PAUSED = "paused", "Paused: budget spent"


ACTIVE_STATUSES = (WorkOrderStatus.CLAIMED, WorkOrderStatus.RUNNING, WorkOrderStatus.WAITING)
TERMINAL_STATUSES = (
    WorkOrderStatus.COMPLETED,
    WorkOrderStatus.FAILED,
    WorkOrderStatus.CANCELLED,
    WorkOrderStatus.DEAD,
)

# Celery queue a priority is routed to.
QUEUE_FOR_PRIORITY = {Priority.HIGH: "high", Priority.NORMAL: "default", Priority.LOW: "low"}


class WorkOrder(models.Model):
    """A unit of dispatchable work. Postgres is the truth; Celery only rings."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task = models.ForeignKey("tasks_app.Task", on_delete=models.CASCADE, related_name="work_orders")
    kind = models.CharField(max_length=20, choices=WorkOrderKind.choices, default=WorkOrderKind.RUN_TASK)
    worker = models.ForeignKey(
        "workers_app.Worker", null=True, blank=True, on_delete=models.SET_NULL, related_name="work_orders"
    )
    status = models.CharField(max_length=12, choices=WorkOrderStatus.choices, default=WorkOrderStatus.QUEUED)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    # 0 = high, 1 = normal, 2 = low: sorts the ready set without a CASE.
    priority_rank = models.PositiveSmallIntegerField(default=1)
    enqueued_at = models.DateTimeField(auto_now_add=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    retry_count = models.PositiveIntegerField(default=0)
    max_retries = models.PositiveIntegerField(default=3)
    not_before = models.DateTimeField(null=True, blank=True)
    # Priority preemption: how often this work gave way to higher-priority
    # work (capped by AGENTVINE_PREEMPT_MAX so low work can't starve), and
    # when its running agent was last asked to give way.
    preempt_count = models.PositiveSmallIntegerField(default=0)
    # Attempts that died with their worker (killed, cut off, restarted): not
    # the work's fault, so no retry is spent, but work whose runs keep
    # killing their workers ends dead after AGENTVINE_MAX_LOST_ATTEMPTS.
    lost_count = models.PositiveSmallIntegerField(default=0)
    preempt_requested_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # The concurrency key the run counts against (queue_app.concurrency):
    # its executor profile's, fixed when the order is made.
    concurrency_key = models.CharField(max_length=100, blank=True, default="")
    # A second key it counts against (queue_app.concurrency): the one its
    # task names, else its repository's ("repo:<url>"); empty for neither.
    scope_key = models.CharField(max_length=100, blank=True, default="")
    # Fair sharing (queue_app.fairness): whose turn the order is, and its
    # place in its priority's line (seconds, a virtual clock the database
    # keeps); ``priority_rank`` climbs as queued work ages.
    fair_key = models.CharField(max_length=100, blank=True, default="")
    line_at = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority_rank", "line_at", "enqueued_at"]
        indexes = [
            # The ready set in the claim's order: partial, so it stays as
            # small as the backlog; also the head of each priority's line.
            models.Index(
                fields=["priority_rank", "line_at", "enqueued_at"],
                name="workorder_line_idx",
                condition=Q(status="queued"),
            ),
            # The last queued order of a fairness key in a priority (the trigger's).
            models.Index(
                fields=["fair_key", "priority_rank", "line_at"],
                name="workorder_fair_key_idx",
                condition=Q(status="queued"),
            ),
            models.Index(fields=["status", "priority"], name="workorder_status_priority_idx"),
            models.Index(fields=["task", "-enqueued_at"], name="workorder_task_idx"),
            # The overview's recent activity and throughput, and the admin's
            # newest-first list, on hundreds of thousands of rows.
            models.Index(fields=["-updated_at"], name="workorder_updated_idx"),
            models.Index(fields=["-enqueued_at"], name="workorder_enqueued_idx"),
            models.Index(fields=["completed_at"], name="workorder_completed_idx", condition=Q(status="completed")),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.id} ({self.status})"

    def save(self, *args, **kwargs):
        if self.line_at is None:
            self.line_at = (self.enqueued_at or timezone.now()).timestamp()
        super().save(*args, **kwargs)

    @property
    def queue_name(self):
        return QUEUE_FOR_PRIORITY[self.priority]


class ConcurrencyLimit(models.Model):
    """At most ``max_running`` active (claimed, running, waiting) work orders
    of one concurrency key. ``running`` is kept by a database trigger on the
    work-order status (migration 0009), so no transition path can forget it,
    and the claim refuses work whose key is full (queue_app.concurrency)."""

    key = models.CharField(max_length=100, primary_key=True)
    max_running = models.PositiveIntegerField()
    running = models.IntegerField(default=0)

    def __str__(self):
        return f"{self.key}: {self.running}/{self.max_running}"


class ConcurrencyKeyPause(models.Model):
    """A concurrency key whose provider refused its agents (a rate limit)
    until ``paused_until``: its queued work waits until then
    (queue_app.rate_limits). ``strikes`` counts the refusals in a row that
    came without a usable reset time, for the backoff."""

    key = models.CharField(max_length=100, primary_key=True)
    paused_until = models.DateTimeField()
    reason = models.CharField(max_length=200, blank=True)
    strikes = models.PositiveSmallIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.key} until {self.paused_until:%H:%M:%S}"


class SpendDay(models.Model):
    """What runs spent, per day (the runs' start), operator, executor profile
    and repository: kept with every usage report of a run
    (``queue_app.outputs.execution_record_usage``), so the daily budgets
    and the spend pages read a few rows instead of every run of the week
    (queue_app.budgets). ``operator_id`` is the task creator's user id, 0 for
    none; ``runs`` counts the runs that reported usage."""

    id = models.BigAutoField(primary_key=True)
    day = models.DateField()
    operator_id = models.IntegerField(default=0)
    executor = models.CharField(max_length=64, blank=True)
    repository = models.CharField(max_length=500, blank=True)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    runs = models.PositiveIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["day", "operator_id", "executor", "repository"], name="spend_day_unique_group"
            ),
        ]

    def __str__(self):
        return f"{self.day} ${self.cost_usd}"


class ExecutionStatus(models.TextChoices):
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    INTERRUPTED = "interrupted", "Interrupted"


class Execution(models.Model):
    """One attempt by one agent at one work order."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task = models.ForeignKey("tasks_app.Task", on_delete=models.CASCADE, related_name="executions")
    work_order = models.ForeignKey(WorkOrder, on_delete=models.CASCADE, related_name="executions")
    worker = models.ForeignKey(
        "workers_app.Worker", null=True, blank=True, on_delete=models.SET_NULL, related_name="executions"
    )
    session = models.ForeignKey(
        "workers_app.AgentSession", null=True, blank=True, on_delete=models.SET_NULL, related_name="executions"
    )
    attempt = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=ExecutionStatus.choices, default=ExecutionStatus.RUNNING)
    started_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # The full output lives in ExecutionOutputChunk rows; this keeps the last
    # few KB so pages can show the latest line without reading every chunk.
    # The run's lease: renewed by its runner while it runs (not by the slot's
    # heartbeat thread). Expired, the run has lost its runner, whatever the
    # slot's heartbeat says, and the stalled-worker guardian takes it back.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    output_tail = models.TextField(blank=True)
    output_chars = models.BigIntegerField(default=0)
    output_chunks = models.PositiveIntegerField(default=0)
    exit_code = models.IntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    # The snapshot of the workspace taken when the run ended (committed on the
    # task's branch): where the branch left its base, the branch's head after
    # this run, and the files that differ between them. ``has_changes`` stays
    # None for a run that ended before any snapshot (no workspace).
    base_commit = models.CharField(max_length=64, blank=True)
    head_commit = models.CharField(max_length=64, blank=True)
    changed_files = models.JSONField(default=list, blank=True)
    has_changes = models.BooleanField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(fields=["work_order", "attempt"], name="execution_unique_attempt"),
        ]
        indexes = [
            models.Index(fields=["status", "-started_at"], name="execution_status_started_idx"),
        ]

    def __str__(self):
        return f"{self.task_id} attempt {self.attempt}"


class ExecutionOutputChunk(models.Model):
    """An ordered slice of an execution's output, written in batches."""

    id = models.BigAutoField(primary_key=True)
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="chunks")
    seq = models.PositiveIntegerField()
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["execution", "seq"]
        constraints = [models.UniqueConstraint(fields=["execution", "seq"], name="output_chunk_unique_seq")]

    def __str__(self):
        return f"{self.execution_id} #{self.seq}"


class AgentToken(models.Model):
    """Lets one running work order's agent call the ask endpoint.

    Only a SHA-256 of the token is stored; the token itself lives in the
    agent's environment for the length of one run.
    """

    id = models.BigAutoField(primary_key=True)
    work_order = models.ForeignKey(WorkOrder, on_delete=models.CASCADE, related_name="agent_tokens")
    execution = models.ForeignKey(
        Execution, null=True, blank=True, on_delete=models.CASCADE, related_name="agent_tokens"
    )
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"token for {self.work_order_id}"
