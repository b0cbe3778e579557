"""Reads of tasks and executions shared by pages and APIs."""

from decimal import Decimal

from django.db.models import Count, DecimalField, Sum, Value
from django.db.models.functions import Coalesce

from tasks_app.models import Execution, ExecutionOutputChunk


def execution_output(*, execution):
    """The full output of an execution, in order."""
    chunks = ExecutionOutputChunk.objects.filter(execution=execution).order_by("seq").values_list("text", flat=True)
    return "".join(chunks.iterator(chunk_size=200))


def task_usage(*, task):
    """Tokens and cost of every execution of a task, summed."""
    totals = Execution.objects.filter(task=task).aggregate(
        executions=Count("id"),
        input_tokens=Coalesce(Sum("input_tokens"), 0),
        output_tokens=Coalesce(Sum("output_tokens"), 0),
        cost_usd=Coalesce(
            Sum("cost_usd"), Value(Decimal(0)), output_field=DecimalField(max_digits=14, decimal_places=6)
        ),
    )
    return totals
