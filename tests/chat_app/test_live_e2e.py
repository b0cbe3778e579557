"""End to end: a real daphne process, a real WebSocket client, a real Celery worker."""

import asyncio
import json

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from tasks_app.models import TaskStatus
from tasks_app.services import task_create
from tests.chat_app.conftest import frame_events
from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


async def _connect(server, path, cookie=None):
    headers = {"Cookie": cookie} if cookie else {}
    return await ws_connect(f"{server.ws_url}{path}", additional_headers=headers, origin=server.url, open_timeout=5)


async def _events_until(ws, done, timeout=20):
    frames = []

    async def collect():
        while True:
            for event in frame_events(json.loads(await ws.recv())):
                frames.append(event)
                if done(event):
                    return

    await asyncio.wait_for(collect(), timeout)
    return frames


def _wait_completed(task):
    from django.db import connection

    try:
        wait_for(lambda: task.__class__.objects.get(pk=task.pk).status == TaskStatus.COMPLETED)
    finally:
        connection.close()


def test_anonymous_websocket_is_refused_by_daphne(daphne_server, channel_layer):
    async def body():
        with pytest.raises(InvalidStatus) as refused:
            await _connect(daphne_server, "/ws/activity/")
        assert refused.value.response.status_code == 403

    asyncio.run(body())


def test_task_stream_over_daphne_with_reconnect(
    daphne_server, channel_layer, celery_worker_factory, operator, session_cookie
):
    from agentvine.events import task_group
    from chat_app.selectors import latest_live_event_id, live_events_after

    cookie = session_cookie(operator)
    celery_worker_factory(concurrency=1)
    # A page passes the newest event id at render time, so it misses nothing
    # that happens after. A socket without a cursor gets only what is sent
    # after it subscribed, and events of several processes (the task's
    # creation here, the worker's claim) can reach the layer out of id order.
    rendered_at = latest_live_event_id()
    task = task_create(title="streamed", description="watch me", created_by=operator)
    path = f"/ws/tasks/{task.id}/"

    def finished(frame):
        return frame["type"] == "work_order.updated" and frame["payload"]["status"] == "completed"

    def first_output(frame):
        return frame["type"] == "execution.output"

    async def body():
        # Connect, read until the agent's first output, then drop the socket.
        ws = await _connect(daphne_server, f"{path}?last_event_id={rendered_at}", cookie)
        early = await _events_until(ws, first_output)
        await ws.close()
        last_seen = early[-1]["id"]
        await asyncio.to_thread(_wait_completed, task)
        # Reconnect with the last id seen: exactly the events missed meanwhile.
        ws = await _connect(daphne_server, f"{path}?last_event_id={last_seen}", cookie)
        rest = await _events_until(ws, finished)
        await asyncio.sleep(0.3)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.5)
        await ws.close()
        return early, rest

    early, rest = asyncio.run(body())
    frames = early + rest
    ids = [f["id"] for f in frames]
    assert ids == sorted(set(ids)), "no duplicates, in order"
    logged = [e.id for e in live_events_after(group=task_group(task.id), after_id=rendered_at, limit=1000)]
    # Every event of this task, from its creation on, once and with nothing missing.
    assert ids == logged
    assert frames[0]["type"] == "task.created"
    statuses = [f["payload"]["status"] for f in frames if f["type"] == "work_order.updated"]
    assert statuses == ["queued", "running", "completed"]
    output = "".join(f["payload"]["text"] for f in frames if f["type"] == "execution.output")
    assert "demo agent: starting on task: streamed" in output
    assert output.rstrip().endswith("wrote AGENTVINE_RESULT.md; done")


def test_demo_agent_asks_a_human_and_uses_the_answer(daphne_server, channel_layer, celery_worker_factory, operator):
    from chat_app import selectors, services
    from chat_app.models import DeliveryStatus
    from queue_app.models import WorkOrderStatus

    # The agent reaches the API through the real daphne with its own token.
    celery_worker_factory(concurrency=1, extra_env={"AGENTVINE_API_URL": daphne_server.url})
    task = task_create(
        title="pick a colour",
        description="Style the button.\nASK: Which colour should the button be?",
        created_by=operator,
    )
    question = wait_for(lambda: selectors.pending_questions().filter(task=task).first(), message="the question")
    assert question.text == "Which colour should the button be?"
    work_order = task.work_orders.get()
    wait_for(lambda: work_order.__class__.objects.get(pk=work_order.pk).status == WorkOrderStatus.WAITING)

    services.question_answer(
        question=question, answer_text="teal", answered_by=services.operator_profile(user=operator)
    )

    wait_for(lambda: task.__class__.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, message="completion")
    from tasks_app.selectors import execution_output

    output = execution_output(execution=task.executions.get())
    assert "demo agent: asking a human: Which colour should the button be?" in output
    assert "demo agent: answer: teal" in output
    answer = question.replies.get()
    assert answer.status == DeliveryStatus.DELIVERED
    assert selectors.pending_question_count() == 0
