"""Consumers over a real Redis channel layer and Postgres (WebsocketCommunicator)."""

import uuid

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser

from agentvine import events
from agentvine.models import LiveEvent
from chat_app import consumers, services
from tasks_app.services import task_create
from tests.chat_app.conftest import communicator, run

pytestmark = pytest.mark.django_db(transaction=True)


def _publish(event_type, payload, groups=()):
    return events.publish(event_type, payload, groups=list(groups))


def test_anonymous_socket_is_refused(channel_layer):
    async def body():
        for path in ("/ws/activity/", "/ws/attention/", f"/ws/tasks/{uuid.uuid4()}/", "/ws/conversations/abc/"):
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
        (frame,) = await client.receive_events(1)
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
        (frame,) = await client.receive_events(1)
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
        frames = await client.receive_events(6)
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
        seen = await first.receive_events(3)
        await first.disconnect()
        missed_ids = await database_sync_to_async(
            lambda: [_publish("execution.output", {"n": n}, [group]) for n in range(3, 8)]
        )()
        # Another task's events happened meanwhile too: not part of this stream.
        await database_sync_to_async(_publish)("execution.output", {"n": "x"}, [events.task_group(uuid.uuid4())])

        second = communicator(f"/ws/tasks/{task.id}/?last_event_id={seen[-1]['id']}", operator)
        assert (await second.connect())[0]
        replayed = await second.receive_events(5)
        assert [f["id"] for f in replayed] == missed_ids
        assert [f["payload"]["n"] for f in replayed] == [3, 4, 5, 6, 7]
        # The catch-up comes as one batch frame.
        assert [frame["type"] for frame in second.frames] == ["batch"]
        live_id = await database_sync_to_async(_publish)("execution.output", {"n": 8}, [group])
        (live,) = await second.receive_events(1)
        assert live["id"] == live_id
        # A single event is its own frame, not a batch of one.
        assert second.frames[-1]["id"] == live_id
        assert await second.receive_nothing(timeout=0.3)
        await second.disconnect()

    run(body())


def test_resume_message_replays_without_duplicates(channel_layer, operator):
    async def body():
        ids = await database_sync_to_async(lambda: [_publish("worker.updated", {"n": n}) for n in range(4)])()
        client = communicator("/ws/activity/", operator)
        assert (await client.connect())[0]
        await client.send_json_to({"type": "resume", "last_event_id": ids[0]})
        assert [f["id"] for f in await client.receive_events(3)] == ids[1:]
        # Resuming from further back again must not repeat what this socket sent.
        await client.send_json_to({"type": "resume", "last_event_id": ids[1]})
        assert await client.receive_nothing(timeout=0.3)
        await client.send_json_to({"type": "resume", "last_event_id": "nope"})
        error = await client.receive_event()
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
                frame = await client.receive_event()
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
    from queue_app import lifecycle

    task = task_create(title="needs a human", created_by=operator)
    work_order = task.work_orders.get()
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=work_order.id)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    other = django_user_model.objects.create_user(username="second-op", password="x" * 12, is_staff=True)

    async def body():
        client = communicator(f"/ws/conversations/{task.id}/", operator)
        assert (await client.connect())[0]
        rival = communicator(f"/ws/conversations/{task.id}/", other)
        assert (await rival.connect())[0]
        question = await database_sync_to_async(services.question_ask)(
            work_order=work_order, execution=execution, text="Which database?"
        )
        asked = (await client.receive_events(1))[0]
        await rival.receive_events(1)
        assert asked["type"] == "question.asked"
        assert asked["payload"]["text"] == "Which database?"

        await client.send_json_to({"type": "question.answer", "question_id": str(question.id), "text": "Postgres"})
        ack = None
        frames = []
        while ack is None:
            frame = await client.receive_event()
            if frame["type"] == "ack":
                ack = frame
            else:
                frames.append(frame)
        assert ack["payload"]["question_id"] == str(question.id)
        await rival.send_json_to({"type": "question.answer", "question_id": str(question.id), "text": "MySQL"})
        while True:
            frame = await rival.receive_event()
            if frame["type"] == "error":
                break
        assert frame["payload"] == {"message": services.ERR_ALREADY_ANSWERED, "request": "question.answer"}

        await client.send_json_to({"type": "message.send", "text": "also add an index"})
        while True:
            frame = await client.receive_event()
            if frame["type"] == "chat.message" and frame["payload"]["text"] == "also add an index":
                break
        assert frame["payload"]["sender"]["display_name"] == operator.username
        assert frame["payload"]["status"] == "queued"
        await client.send_json_to({"type": "message.send", "text": "   "})
        while True:
            frame = await client.receive_event()
            if frame["type"] == "error":
                break
        assert frame["payload"]["message"] == services.ERR_TEXT_REQUIRED
        await client.send_json_to({"type": "dance"})
        while True:
            frame = await client.receive_event()
            if frame["type"] == "error":
                break
        assert frame["payload"]["message"] == consumers.ERR_UNKNOWN_REQUEST
        await client.disconnect()
        await rival.disconnect()

    run(body())
    question = task.chat_messages.get(kind="question")
    assert question.answer_text == "Postgres"
    assert question.answered_by.user == operator


def test_burst_of_events_arrives_in_batch_frames_complete_and_in_order(channel_layer, operator):
    """Events committed together reach a socket as a few batch frames, every event once, in order."""
    from django.db import transaction

    def burst():
        with transaction.atomic():
            return [_publish("execution.output", {"n": n}) for n in range(300)]

    async def body():
        client = communicator("/ws/activity/", operator)
        assert (await client.connect())[0]
        ids = await database_sync_to_async(burst)()
        received = await client.receive_events(300)
        assert [f["id"] for f in received] == ids
        assert [f["payload"]["n"] for f in received] == list(range(300))
        assert all(set(f) == {"id", "type", "payload", "at"} for f in received)
        assert await client.receive_nothing(timeout=0.3)
        assert len(client.frames) < 10, "one frame per batch, not one per event"
        assert client.frames[-1]["type"] == "batch"
        await client.disconnect()

    run(body())


def test_batch_frames_stay_bounded_in_size(channel_layer, operator):
    from django.db import transaction

    text = "é" * 3000  # escaped as \u00e9: 18,000 characters of JSON each, 216,000 in all

    def burst():
        with transaction.atomic():
            return [_publish("execution.output", {"n": n, "text": text}) for n in range(12)]

    async def body():
        client = communicator("/ws/activity/", operator)
        assert (await client.connect())[0]
        ids = await database_sync_to_async(burst)()
        received = await client.receive_events(12)
        assert [f["id"] for f in received] == ids
        assert all(f["payload"]["text"] == text for f in received)
        assert any(frame["type"] == "batch" for frame in client.frames)
        assert max(client.frame_sizes) <= events.MAX_BATCH_FRAME_CHARS
        await client.disconnect()

    run(body())


def test_live_batch_repeating_sent_events_forwards_only_new_ones(channel_layer, operator):
    """A layer batch overlapping what the socket already sent becomes one frame of the rest, in order."""
    from chat_app import selectors

    async def body():
        ids = await database_sync_to_async(lambda: [_publish("worker.updated", {"n": n}) for n in range(4)])()
        client = communicator(f"/ws/activity/?last_event_id={ids[1]}", operator)
        assert (await client.connect())[0]
        assert [f["id"] for f in await client.receive_events(2)] == ids[2:]
        logged = await database_sync_to_async(selectors.live_events_after)(group=events.ACTIVITY_GROUP, after_id=0)
        layer_batch = {
            "type": events.LAYER_BATCH_TYPE,
            "events": [[e.id, selectors.live_event_frame(e)] for e in logged if e.id in ids],
        }
        # As a late commit of lower ids would arrive: ids[0] and ids[1] are new here.
        await channel_layer.group_send(events.ACTIVITY_GROUP, layer_batch)
        assert [f["id"] for f in await client.receive_events(2)] == ids[:2]
        assert client.frames[-1]["type"] == "batch"
        assert [f["id"] for f in client.frames[-1]["events"]] == ids[:2]
        await channel_layer.group_send(events.ACTIVITY_GROUP, layer_batch)
        assert await client.receive_nothing(timeout=0.3)
        await client.disconnect()

    run(body())


def test_ids_beyond_the_dedup_window_are_still_not_resent(channel_layer, operator, monkeypatch):
    from chat_app import selectors

    monkeypatch.setattr(consumers, "_DEDUP_WINDOW", 4)

    async def body():
        client = communicator("/ws/activity/", operator)
        assert (await client.connect())[0]
        ids = await database_sync_to_async(lambda: [_publish("worker.updated", {"n": n}) for n in range(10)])()
        assert [f["id"] for f in await client.receive_events(10)] == ids
        logged = await database_sync_to_async(selectors.live_events_after)(group=events.ACTIVITY_GROUP, after_id=0)
        everything_again = {
            "type": events.LAYER_BATCH_TYPE,
            "events": [[e.id, selectors.live_event_frame(e)] for e in logged if e.id in ids],
        }
        await channel_layer.group_send(events.ACTIVITY_GROUP, everything_again)
        assert await client.receive_nothing(timeout=0.3)
        later = await database_sync_to_async(_publish)("worker.updated", {"n": 10})
        assert (await client.receive_event())["id"] == later
        await client.disconnect()

    run(body())


def test_attention_stream_gets_questions_of_every_task_and_nothing_else(channel_layer, operator, worker):
    from queue_app import lifecycle

    task = task_create(title="asks", created_by=operator)

    def ask():
        order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
        order, execution = lifecycle.work_order_start(work_order=order, worker=worker)
        services.system_notice(task=task, text="not a question")
        return services.question_ask(work_order=order, execution=execution, text="Which one?")

    async def body():
        client = communicator("/ws/attention/", operator)
        assert (await client.connect())[0]
        question = await database_sync_to_async(ask)()
        frames = await client.receive_events(1)
        assert [(f["type"], f["payload"]["id"]) for f in frames] == [("question.asked", str(question.id))]
        assert await client.receive_nothing(timeout=0.3)
        await client.disconnect()

    run(body())
