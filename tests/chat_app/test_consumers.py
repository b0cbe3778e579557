"""Consumers over a real Redis channel layer and Postgres (WebsocketCommunicator)."""

import json
import uuid

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser

from agentvine import events
from chat_app import consumers, services
from chat_app.models import LiveEvent
from tasks_app.services import task_create
from tests.chat_app.conftest import communicator, run

pytestmark = pytest.mark.django_db(transaction=True)


async def _frames(client, count, timeout=3):
    return [json.loads(await client.receive_from(timeout=timeout)) for _ in range(count)]


def _publish(event_type, payload, groups=()):
    return events.publish(event_type, payload, groups=list(groups))


def test_anonymous_socket_is_refused(channel_layer):
    async def body():
        for path in ("/ws/activity/", f"/ws/tasks/{uuid.uuid4()}/", "/ws/conversations/abc/"):
            client = communicator(path, AnonymousUser())
            connected, code = await client.connect()
            assert not connected
            assert code == consumers.CLOSE_UNAUTHENTICATED

    run(body())


def test_non_staff_user_is_refused(channel_layer, django_user_model):
    user = django_user_model.objects.create_user(username="not-staff", password="x" * 12)

    async def body():
        connected, code = await communicator("/ws/activity/", user).connect()
        assert not connected
        assert code == consumers.CLOSE_FORBIDDEN

    run(body())


def test_unknown_task_is_refused(channel_layer, operator):
    async def body():
        client = communicator(f"/ws/tasks/{uuid.uuid4()}/", operator)
        connected, code = await client.connect()
        assert not connected
        assert code == consumers.CLOSE_NOT_FOUND

    run(body())


def test_activity_frame_format(channel_layer, operator):
    async def body():
        client = communicator("/ws/activity/", operator)
        assert (await client.connect())[0]
        event_id = await database_sync_to_async(_publish)("work_order.updated", {"id": "w1", "status": "running"})
        (frame,) = await _frames(client, 1)
        stored = await database_sync_to_async(LiveEvent.objects.get)(pk=event_id)
        assert frame == {
            "id": event_id,
            "type": "work_order.updated",
            "payload": {"id": "w1", "status": "running"},
            "at": stored.created_at.isoformat(),
        }
        await client.disconnect()

    run(body())


def test_rolled_back_event_is_neither_sent_nor_stored(channel_layer, operator):
    from django.db import transaction

    def publish_then_roll_back():
        with pytest.raises(RuntimeError), transaction.atomic():
            _publish("work_order.updated", {"id": "ghost"})
            raise RuntimeError("boom")
        return _publish("work_order.updated", {"id": "real"})

    async def body():
        client = communicator("/ws/activity/", operator)
        assert (await client.connect())[0]
        real_id = await database_sync_to_async(publish_then_roll_back)()
        (frame,) = await _frames(client, 1)
        assert frame["id"] == real_id
        assert frame["payload"] == {"id": "real"}
        assert await client.receive_nothing(timeout=0.3)
        assert await database_sync_to_async(LiveEvent.objects.filter(payload__id="ghost").exists)() is False
        await client.disconnect()

    run(body())


def test_task_stream_gets_only_its_task_in_order(channel_layer, operator):
    task = task_create(title="watched", created_by=operator)
    other = task_create(title="other", created_by=operator)

    def emit():
        for n in range(5):
            _publish("execution.output", {"task_id": str(other.id), "seq": n}, [events.task_group(other.id)])
            _publish("execution.output", {"task_id": str(task.id), "seq": n}, [events.task_group(task.id)])
        _publish("work_order.updated", {"task_id": str(task.id), "status": "completed"}, [events.task_group(task.id)])

    async def body():
        client = communicator(f"/ws/tasks/{task.id}/", operator)
        assert (await client.connect())[0]
        await database_sync_to_async(emit)()
        frames = await _frames(client, 6)
        assert [f["type"] for f in frames] == ["execution.output"] * 5 + ["work_order.updated"]
        assert [f["payload"].get("seq") for f in frames[:5]] == [0, 1, 2, 3, 4]
        assert {f["payload"]["task_id"] for f in frames} == {str(task.id)}
        ids = [f["id"] for f in frames]
        assert ids == sorted(ids)
        assert await client.receive_nothing(timeout=0.3)
        await client.disconnect()

    run(body())


def test_reconnect_with_last_event_id_gets_exactly_the_missed_events(channel_layer, operator):
    task = task_create(title="resume me", created_by=operator)
    group = events.task_group(task.id)

    async def body():
        first = communicator(f"/ws/tasks/{task.id}/", operator)
        assert (await first.connect())[0]
        await database_sync_to_async(lambda: [_publish("execution.output", {"n": n}, [group]) for n in range(3)])()
        seen = await _frames(first, 3)
        await first.disconnect()
        missed_ids = await database_sync_to_async(
            lambda: [_publish("execution.output", {"n": n}, [group]) for n in range(3, 8)]
        )()
        # Another task's events happened meanwhile too: not part of this stream.
        await database_sync_to_async(_publish)("execution.output", {"n": "x"}, [events.task_group(uuid.uuid4())])

        second = communicator(f"/ws/tasks/{task.id}/?last_event_id={seen[-1]['id']}", operator)
        assert (await second.connect())[0]
        replayed = await _frames(second, 5)
        assert [f["id"] for f in replayed] == missed_ids
        assert [f["payload"]["n"] for f in replayed] == [3, 4, 5, 6, 7]
        live_id = await database_sync_to_async(_publish)("execution.output", {"n": 8}, [group])
        (live,) = await _frames(second, 1)
        assert live["id"] == live_id
        assert await second.receive_nothing(timeout=0.3)
        await second.disconnect()

    run(body())


def test_resume_message_replays_without_duplicates(channel_layer, operator):
    async def body():
        ids = await database_sync_to_async(lambda: [_publish("worker.updated", {"n": n}) for n in range(4)])()
        client = communicator("/ws/activity/", operator)
        assert (await client.connect())[0]
        await client.send_json_to({"type": "resume", "last_event_id": ids[0]})
        assert [f["id"] for f in await _frames(client, 3)] == ids[1:]
        # Resuming from further back again must not repeat what this socket sent.
        await client.send_json_to({"type": "resume", "last_event_id": ids[1]})
        assert await client.receive_nothing(timeout=0.3)
        await client.send_json_to({"type": "resume", "last_event_id": "nope"})
        error = await client.receive_json_from()
        assert error == {
            "type": "error",
            "payload": {"message": consumers.ERR_BAD_LAST_EVENT_ID, "request": "resume"},
        }
        await client.disconnect()

    run(body())


def test_replay_racing_live_events_has_no_gaps_or_duplicates(channel_layer, operator):
    """Events keep coming while a client catches up over several replay pages."""
    import threading

    start = _publish("worker.updated", {"n": -1})
    backlog = [_publish("worker.updated", {"n": n}) for n in range(1200)]
    stop = threading.Event()
    live_ids = []

    def keep_publishing():
        from django.db import connection

        while not stop.is_set() and len(live_ids) < 300:
            live_ids.append(_publish("worker.updated", {"n": "live"}))
        connection.close()

    async def body():
        client = communicator(f"/ws/activity/?last_event_id={start}", operator)
        publisher = threading.Thread(target=keep_publishing)
        publisher.start()
        assert (await client.connect())[0]
        received = []
        try:
            while True:
                frame = json.loads(await client.receive_from(timeout=3))
                received.append(frame["id"])
                if not publisher.is_alive() and len(received) >= len(backlog) + len(live_ids):
                    break
        finally:
            stop.set()
            publisher.join()
        assert await client.receive_nothing(timeout=0.5)
        assert len(received) == len(set(received)), "duplicates"
        assert set(received) == set(backlog) | set(live_ids), "gaps"
        await client.disconnect()

    run(body())


def test_conversation_socket_sends_and_answers(channel_layer, operator, django_user_model, worker):
    from queue_app import services as queue_services

    task = task_create(title="needs a human", created_by=operator)
    work_order = task.work_orders.get()
    work_order = queue_services.work_order_claim(worker=worker, work_order_id=work_order.id)
    work_order, execution = queue_services.work_order_start(work_order=work_order, worker=worker)
    other = django_user_model.objects.create_user(username="second-op", password="x" * 12, is_staff=True)

    async def body():
        client = communicator(f"/ws/conversations/{task.id}/", operator)
        assert (await client.connect())[0]
        rival = communicator(f"/ws/conversations/{task.id}/", other)
        assert (await rival.connect())[0]
        question = await database_sync_to_async(services.question_ask)(
            work_order=work_order, execution=execution, text="Which database?"
        )
        asked = (await _frames(client, 1))[0]
        await _frames(rival, 1)
        assert asked["type"] == "question.asked"
        assert asked["payload"]["text"] == "Which database?"

        await client.send_json_to({"type": "question.answer", "question_id": str(question.id), "text": "Postgres"})
        ack = None
        frames = []
        while ack is None:
            frame = json.loads(await client.receive_from(timeout=3))
            if frame["type"] == "ack":
                ack = frame
            else:
                frames.append(frame)
        assert ack["payload"]["question_id"] == str(question.id)
        await rival.send_json_to({"type": "question.answer", "question_id": str(question.id), "text": "MySQL"})
        while True:
            frame = json.loads(await rival.receive_from(timeout=3))
            if frame["type"] == "error":
                break
        assert frame["payload"] == {"message": services.ERR_ALREADY_ANSWERED, "request": "question.answer"}

        await client.send_json_to({"type": "message.send", "text": "also add an index"})
        while True:
            frame = json.loads(await client.receive_from(timeout=3))
            if frame["type"] == "chat.message" and frame["payload"]["text"] == "also add an index":
                break
        assert frame["payload"]["sender"]["display_name"] == operator.username
        assert frame["payload"]["status"] == "queued"
        await client.send_json_to({"type": "message.send", "text": "   "})
        while True:
            frame = json.loads(await client.receive_from(timeout=3))
            if frame["type"] == "error":
                break
        assert frame["payload"]["message"] == services.ERR_TEXT_REQUIRED
        await client.send_json_to({"type": "dance"})
        while True:
            frame = json.loads(await client.receive_from(timeout=3))
            if frame["type"] == "error":
                break
        assert frame["payload"]["message"] == consumers.ERR_UNKNOWN_REQUEST
        await client.disconnect()
        await rival.disconnect()

    run(body())
    question = task.chat_messages.get(kind="question")
    assert question.answer_text == "Postgres"
    assert question.answered_by.user == operator


def test_burst_of_events_arrives_complete_and_in_order(channel_layer, operator):
    """Events committed together leave in batches on the layer; clients still get one frame each, in order."""
    from django.db import transaction

    def burst():
        with transaction.atomic():
            return [_publish("execution.output", {"n": n}) for n in range(300)]

    async def body():
        client = communicator("/ws/activity/", operator)
        assert (await client.connect())[0]
        ids = await database_sync_to_async(burst)()
        frames = await _frames(client, 300)
        assert [f["id"] for f in frames] == ids
        assert [f["payload"]["n"] for f in frames] == list(range(300))
        assert await client.receive_nothing(timeout=0.3)
        await client.disconnect()

    run(body())
