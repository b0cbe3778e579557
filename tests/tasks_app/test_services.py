"""Task and execution writes against real PostgreSQL (and the real layer for events)."""

import pytest
from channels.db import database_sync_to_async
from django.db import IntegrityError, connection, transaction

from agentvine import events
from agentvine.errors import ExecutionFenced
from agentvine.models import LiveEvent
from queue_app import lifecycle
from queue_app.models import Execution, ExecutionOutputChunk
from queue_app.outputs import execution_output_append
from tasks_app.selectors import execution_output
from tests.chat_app.conftest import communicator, run
from tests.factories import make_task

pytestmark = pytest.mark.sqlite


def _start(worker):
    task = make_task()
    order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    _, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    return execution


def _output_events(execution):
    return list(
        LiveEvent.objects.filter(type="execution.output", payload__execution_id=str(execution.pk)).order_by("id")
    )


@pytest.mark.django_db
def test_output_append_stores_each_chunk_once_in_order_with_its_event(worker, django_assert_num_queries):
    execution = _start(worker)
    texts = [f"line {n}\n" for n in range(5)]
    tail = ""
    for seq, text in enumerate(texts):
        tail = (tail + text)[-12:]
        # Chunk, counters and event travel as one statement on PostgreSQL;
        # SQLite sends them one by one (three) inside a savepoint (two more).
        with django_assert_num_queries(1 if connection.vendor == "postgresql" else 5):
            execution_output_append(execution=execution, seq=seq, text=text, tail=tail)

    assert execution_output(execution=execution) == "".join(texts)
    assert list(ExecutionOutputChunk.objects.filter(execution=execution).values_list("seq", "text")) == list(
        enumerate(texts)
    )
    execution.refresh_from_db()
    assert (execution.output_chunks, execution.output_chars, execution.output_tail) == (5, 35, "ne 3\nline 4\n")
    recorded = _output_events(execution)
    assert [e.payload["seq"] for e in recorded] == [0, 1, 2, 3, 4]
    assert [e.payload["text"] for e in recorded] == texts
    assert recorded[0].payload["task_id"] == str(execution.task_id)
    assert recorded[0].group_list == [events.ACTIVITY_GROUP, events.task_group(execution.task_id)]


@pytest.mark.django_db
def test_output_append_repeating_a_seq_writes_nothing(worker):
    execution = _start(worker)
    execution_output_append(execution=execution, seq=0, text="first\n", tail="first\n")
    with pytest.raises(IntegrityError), transaction.atomic():
        execution_output_append(execution=execution, seq=0, text="again\n", tail="first\nagain\n")

    assert execution_output(execution=execution) == "first\n"
    execution.refresh_from_db()
    assert (execution.output_chunks, execution.output_chars, execution.output_tail) == (1, 6, "first\n")
    assert [e.payload["text"] for e in _output_events(execution)] == ["first\n"]


@pytest.mark.django_db(transaction=True)
def test_output_append_of_an_unknown_execution_writes_nothing(worker):
    execution = _start(worker)
    ghost = Execution(pk="00000000-0000-0000-0000-000000000000", task=execution.task, work_order=execution.work_order)
    before = LiveEvent.objects.count()
    # No running execution matches: the guarded statement writes neither the
    # chunk nor the event row.
    with pytest.raises(ExecutionFenced):
        execution_output_append(execution=ghost, seq=0, text="lost\n", tail="lost\n")
    assert LiveEvent.objects.count() == before
    assert not ExecutionOutputChunk.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_output_reaches_the_task_stream_only_once_committed(channel_layer, operator, worker):
    execution = _start(worker)

    def rolled_back_then_committed():
        with pytest.raises(RuntimeError), transaction.atomic():
            execution_output_append(execution=execution, seq=0, text="ghost\n", tail="ghost\n")
            raise RuntimeError("agent crashed mid-write")
        with transaction.atomic():
            execution_output_append(execution=execution, seq=0, text="real\n", tail="real\n")
            execution_output_append(execution=execution, seq=1, text="more\n", tail="real\nmore\n")

    async def body():
        client = communicator(f"/ws/tasks/{execution.task_id}/", operator)
        assert (await client.connect())[0]
        await database_sync_to_async(rolled_back_then_committed)()
        received = await client.receive_events(2)
        assert [(e["payload"]["seq"], e["payload"]["text"]) for e in received] == [(0, "real\n"), (1, "more\n")]
        assert await client.receive_nothing(timeout=0.3)
        await client.disconnect()

    run(body())
    assert execution_output(execution=execution) == "real\nmore\n"
    assert [e.payload["text"] for e in _output_events(execution)] == ["real\n", "more\n"]
