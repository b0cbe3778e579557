"""Reads of tasks and executions shared by pages and APIs."""

from tasks_app.models import ExecutionOutputChunk


def execution_output(*, execution):
    """The full output of an execution, in order."""
    chunks = ExecutionOutputChunk.objects.filter(execution=execution).order_by("seq").values_list("text", flat=True)
    return "".join(chunks.iterator(chunk_size=200))
