"""An attempt's output and usage, as its agent reports them.

Output arrives in batches (``workers_app.output.OutputBuffer`` for a slot, the
output endpoint for a remote worker); each batch is one statement on
PostgreSQL with the live event that announces it.
"""

from django.conf import settings
from django.db import connections, router, transaction
from django.db.models import F
from django.utils import timezone

from agentvine import db, events
from agentvine.errors import ExecutionFenced, IllegalTransition
from queue_app.models import Execution, ExecutionOutputChunk, ExecutionStatus, SpendDay
from tasks_app.models import Task

# At most this much of one output chunk rides on a live event.
LIVE_OUTPUT_CHARS = 8000

ERR_OUTPUT_OUT_OF_ORDER = "output batch out of order: expected seq {expected}"
ERR_EXECUTION_FINISHED = "execution is not running"
# A write of a run whose execution is no longer the live one (requeued under it).
ERR_FENCED = "execution {execution} is no longer the live run of its work order"


def execution_output_append(*, execution, seq, text, tail):
    """Persist one batch of output and announce it: a chunk row, the counters, an event.

    Every running agent calls this for every batch it prints, so the chunk
    INSERT and the counter UPDATE ride along with the event's INSERT (see
    ``events.publish_guarded``): one statement on PostgreSQL, atomic by itself
    and part of the caller's transaction when there is one. The counter
    UPDATE is the guard: only while ``execution`` is still running (the live
    run of its work order) is anything written; a stale run's batch (its
    work requeued under it) raises :class:`ExecutionFenced`. A repeated
    ``seq`` violates the chunk's unique constraint and then nothing is written.
    """
    connection = connections[router.db_for_write(ExecutionOutputChunk)]
    quote = connection.ops.quote_name
    execution_id = Execution._meta.pk.get_db_prep_value(execution.pk, connection)
    created_at = ExecutionOutputChunk._meta.get_field("created_at").get_db_prep_value(timezone.now(), connection)
    guard = (
        Execution,
        f"UPDATE {quote(Execution._meta.db_table)} SET output_tail = %s,"
        " output_chars = output_chars + %s, output_chunks = output_chunks + 1 WHERE id = %s AND status = %s",
        [tail, len(text), execution_id, ExecutionStatus.RUNNING.value],
    )
    changes = [
        (
            f"INSERT INTO {quote(ExecutionOutputChunk._meta.db_table)} (execution_id, seq, text, created_at)"
            " VALUES (%s, %s, %s, %s)",
            [execution_id, seq, text, created_at],
        ),
    ]
    published = [
        (
            "execution.output",
            {
                "execution_id": str(execution.pk),
                "task_id": str(execution.task_id),
                "seq": seq,
                "text": text[-LIVE_OUTPUT_CHARS:],
                # Pages re-read the output instead of showing a cut chunk.
                "truncated": len(text) > LIVE_OUTPUT_CHARS,
            },
            [events.task_group(execution.task_id)],
        )
    ]
    if events.publish_guarded(published, guard=guard, changes=changes) is None:
        raise ExecutionFenced(ERR_FENCED.format(execution=execution.pk))


def execution_output_append_next(*, execution, seq, text):
    """Append one batch sent by a remote worker, refusing gaps and repeats.

    The execution row is locked so two batches from a confused client cannot
    both take the same place in the output.
    """
    with transaction.atomic():
        current = Execution.objects.select_for_update().get(pk=execution.pk)
        if current.status != ExecutionStatus.RUNNING:
            raise ExecutionFenced(ERR_FENCED.format(execution=execution.pk))
        if seq != current.output_chunks:
            raise IllegalTransition(ERR_OUTPUT_OUT_OF_ORDER.format(expected=current.output_chunks))
        tail = (current.output_tail + text)[-settings.AGENTVINE_OUTPUT_TAIL_CHARS :]
        execution_output_append(execution=current, seq=seq, text=text, tail=tail)
    return seq + 1


def execution_record_usage(*, execution, input_tokens=0, output_tokens=0, cost_usd=0):
    """Add what the agent of ``execution`` reported, while it is the live run,
    and to its day's spend (:class:`~queue_app.models.SpendDay`): one transaction."""
    with transaction.atomic():
        rows = Execution.objects.filter(pk=execution.pk, status=ExecutionStatus.RUNNING).update(
            input_tokens=F("input_tokens") + input_tokens,
            output_tokens=F("output_tokens") + output_tokens,
            cost_usd=F("cost_usd") + cost_usd,
        )
        if rows != 1:
            raise ExecutionFenced(ERR_FENCED.format(execution=execution.pk))
        if input_tokens or output_tokens or cost_usd:
            _spend_day_add(execution, input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost_usd)


def _spend_day_add(execution, *, input_tokens, output_tokens, cost_usd):
    """Add a usage report to the spend of its run's day, operator, executor
    and repository: one upsert, the group read from the task. The run counts
    once, on its first report (its totals are then this report's)."""
    spend, connection = db.table(SpendDay)
    tasks, _ = db.table(Task)
    runs, _ = db.table(Execution)
    s, t, e = spend.columns, tasks.columns, runs.columns
    day = timezone.localtime(execution.started_at or timezone.now()).date()
    group = [s["day"], s["operator_id"], s["executor"], s["repository"]]
    totals = [s["cost_usd"], s["runs"], s["input_tokens"], s["output_tokens"]]
    first = (
        f"CASE WHEN e.{e['cost_usd']} = %s AND e.{e['input_tokens']} = %s AND e.{e['output_tokens']} = %s"
        " THEN 1 ELSE 0 END"
    )
    sql = (
        f"INSERT INTO {spend.name} ({', '.join(group + totals)})"
        f" SELECT %s, COALESCE(t.{t['created_by_id']}, 0), t.{t['executor']}, t.{t['repository_url']},"
        f" %s, {first}, %s, %s"
        f" FROM {runs.name} e JOIN {tasks.name} t ON t.{t['pk']} = e.{e['task_id']} WHERE e.{e['pk']} = %s"
        f" ON CONFLICT ({', '.join(group)}) DO UPDATE SET "
        + ", ".join(f"{column} = {spend.name}.{column} + excluded.{column}" for column in totals)
    )
    cost = runs.prepare("cost_usd", cost_usd, connection)
    params = [
        spend.prepare("day", day, connection),
        spend.prepare("cost_usd", cost_usd, connection),
        cost,
        input_tokens,
        output_tokens,
        input_tokens,
        output_tokens,
        runs.prepare("pk", execution.pk, connection),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def execution_record_result(*, execution, base_commit, head_commit, changed_files):
    """Record the snapshot its run committed when it ended.

    Recorded whatever the attempt's status by then: a run cancelled or taken
    away still committed its workspace, and the commit is the work product.
    Only the run's own execution is named, so another attempt's record stays
    untouched. True if the execution exists.
    """
    # Hand-built: one of the few statements every run ends with.
    sql, params = db.update_sql(
        Execution,
        {"pk": execution.pk},
        base_commit=base_commit,
        head_commit=head_commit,
        changed_files=changed_files,
        has_changes=bool(changed_files),
    )
    with connections[router.db_for_write(Execution)].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1
