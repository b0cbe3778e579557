"""Explicit input and output shapes of the queue API."""

from rest_framework import serializers

from agentvine.serializers import ModelOutputSerializer
from queue_app.models import WorkOrder, WorkOrderKind
from tasks_app.models import Priority, TaskType

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
MAX_ERROR_CHARS = 100_000


class WorkOrderOutput(ModelOutputSerializer):
    class Meta:
        model = WorkOrder
        fields = [
            "id",
            "task",
            "kind",
            "status",
            "priority",
            "worker",
            "retry_count",
            "max_retries",
            "enqueued_at",
            "claimed_at",
            "started_at",
            "completed_at",
            "not_before",
            "last_error",
        ]
        read_only_fields = fields


class EnqueueInput(serializers.Serializer):
    task = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=WorkOrderKind.choices, default=WorkOrderKind.RUN_TASK)
    priority = serializers.ChoiceField(choices=Priority.choices, required=False)
    max_retries = serializers.IntegerField(min_value=0, max_value=100, required=False)


class ClaimInput(serializers.Serializer):
    work_order = serializers.UUIDField(required=False, allow_null=True, help_text="Claim this one only.")


class ClaimedTaskOutput(serializers.Serializer):
    id = serializers.UUIDField()
    title = serializers.CharField()
    description = serializers.CharField()
    task_type = serializers.ChoiceField(choices=TaskType.choices)
    executor = serializers.CharField()
    repository_url = serializers.CharField()
    branch_name = serializers.CharField()


class ClaimOutput(serializers.Serializer):
    work_order = WorkOrderOutput()
    task = ClaimedTaskOutput()
    prompt = serializers.CharField(
        help_text="The task as a prompt. What the agent is actually given (a resumed run, a message turn) comes"
        " with the start."
    )


class StartOutput(serializers.Serializer):
    work_order = WorkOrderOutput()
    execution = serializers.UUIDField()
    attempt = serializers.IntegerField()
    agent_token = serializers.CharField(
        help_text="For the agent's own calls (asking a human): AGENTVINE_TOKEN. Revoked when the run ends."
    )
    session = serializers.UUIDField(allow_null=True, help_text="The agent session this run works in (sessions API).")
    session_id = serializers.CharField(
        allow_null=True, help_text="The agent's conversation id: pass it to the agent (e.g. claude --session-id)."
    )
    resume = serializers.BooleanField(help_text="Continue that conversation instead of starting it.")
    lease_expires_at = serializers.DateTimeField(
        help_text="The run's lease: heartbeats (and polls of the work order) renew it; after fence_seconds "
        "without a renewal the worker must stop the agent itself, since the work may be requeued."
    )
    fence_seconds = serializers.FloatField()
    budget_usd = serializers.FloatField(
        allow_null=True,
        help_text="What the run may spend before a budget stops it, in US dollars (null: no budget); "
        "for an agent that can stop itself there (claude --max-budget-usd).",
    )
    prompt = serializers.CharField(
        allow_null=True,
        help_text="What the agent gets: the task, or the queued messages of a message turn. Null: nothing left to"
        " deliver, complete the work order.",
    )


EXECUTION_HELP = (
    "The run (execution id from the start) this write belongs to. A run that is no longer the live one "
    "(its work was requeued) gets 409 with code fenced: stop its agent."
)


class RunWriteInput(serializers.Serializer):
    execution = serializers.UUIDField(required=False, allow_null=True, help_text=EXECUTION_HELP)


class CompleteInput(RunWriteInput):
    exit_code = serializers.IntegerField(min_value=INT32_MIN, max_value=INT32_MAX, default=0)


class FailInput(RunWriteInput):
    error = serializers.CharField(max_length=MAX_ERROR_CHARS)
    exit_code = serializers.IntegerField(min_value=INT32_MIN, max_value=INT32_MAX, required=False, allow_null=True)
    retryable = serializers.BooleanField(default=True)
    rate_limited = serializers.BooleanField(
        default=False,
        help_text="The provider refused the agent for now: no retry is spent, and the profile's concurrency key "
        "pauses until resets_at (or a backoff); the work waits in line meanwhile.",
    )
    resets_at = serializers.FloatField(
        required=False, allow_null=True, default=None, help_text="When the provider said the limit resets (epoch s)."
    )


class OutputInput(RunWriteInput):
    seq = serializers.IntegerField(min_value=0, max_value=INT32_MAX, help_text="0 for the first batch, then +1.")
    text = serializers.CharField(trim_whitespace=False, allow_blank=False)


class OutputAcceptedOutput(serializers.Serializer):
    next_seq = serializers.IntegerField()
    work_order_status = serializers.CharField(help_text="Stop the agent when this is no longer running/waiting.")


class RateLimitedKeyOutput(serializers.Serializer):
    key = serializers.CharField()
    until = serializers.DateTimeField()
    reason = serializers.CharField()


class ConcurrencyKeyOutput(serializers.Serializer):
    key = serializers.CharField()
    running = serializers.IntegerField(help_text="Its active runs (claimed, running, waiting).")
    max_running = serializers.IntegerField()


class QueueStatusOutput(serializers.Serializer):
    depth = serializers.DictField(child=serializers.IntegerField())
    by_status = serializers.DictField(child=serializers.IntegerField())
    oldest_waiting_seconds = serializers.DictField(child=serializers.FloatField(allow_null=True))
    # Concurrency keys whose queued work waits for a provider's rate-limit reset.
    rate_limited = RateLimitedKeyOutput(many=True)
    # The concurrency keys with a limit, and their seats taken.
    concurrency_keys = ConcurrencyKeyOutput(many=True)


class InterruptedInput(RunWriteInput):
    reason = serializers.CharField(max_length=MAX_ERROR_CHARS, required=False, allow_blank=True, default="")


class UsageInput(RunWriteInput):
    input_tokens = serializers.IntegerField(min_value=0, max_value=10**12, default=0)
    output_tokens = serializers.IntegerField(min_value=0, max_value=10**12, default=0)
    cost_usd = serializers.DecimalField(max_digits=12, decimal_places=6, min_value=0, default=0)


class ExecutionOutput(serializers.Serializer):
    id = serializers.UUIDField()
    attempt = serializers.IntegerField()
    status = serializers.CharField()
    error = serializers.CharField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cost_usd = serializers.DecimalField(max_digits=12, decimal_places=6)


class UsageOutput(ExecutionOutput):
    over_budget = serializers.CharField(
        allow_blank=True,
        help_text="Not empty: a budget is spent (why). Stop the agent and report the run failed with this "
        "reason: the server pauses the task (or makes it wait for the next day) instead of retrying it.",
    )


class SpendParams(serializers.Serializer):
    group = serializers.ChoiceField(choices=["day", "operator", "executor", "repository"], default="day")
    days = serializers.IntegerField(min_value=1, max_value=366, default=7)


class SpendRowOutput(serializers.Serializer):
    key = serializers.CharField(help_text="The day (ISO date), operator, executor profile or repository.")
    cost_usd = serializers.DecimalField(max_digits=14, decimal_places=6)
    runs = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()


class SpendBudgetsOutput(serializers.Serializer):
    daily_usd = serializers.FloatField(allow_null=True, help_text="AGENTVINE_DAILY_BUDGET_USD")
    operator_daily_usd = serializers.FloatField(allow_null=True, help_text="AGENTVINE_OPERATOR_DAILY_BUDGET_USD")
    spent_today_usd = serializers.DecimalField(max_digits=14, decimal_places=6)
    paused_tasks = serializers.IntegerField(help_text="Tasks paused because their budget is spent.")


class SpendOutput(serializers.Serializer):
    group = serializers.CharField()
    since = serializers.DateTimeField()
    total_usd = serializers.DecimalField(max_digits=14, decimal_places=6)
    rows = SpendRowOutput(many=True)
    budgets = SpendBudgetsOutput()
