"""Live sockets miss no event across a lost layer subscription.

Real processes: daphne on the app's channels-redis layer, pointed at a Redis
this test owns; two publisher processes committing events through
``agentvine.events.publish``; real WebSocket clients on ``ws/activity/`` and
on a quiet task's ``ws/tasks/<id>/`` that stay connected while Redis is shut
down (``shutdown nosave``: it comes back empty) and started again, while the
web's subscribing connection is killed, or while a proxy between the web and
Redis silently stops carrying its open connections. The ids each socket
received are compared with the ``LiveEvent`` table: none missing, none
twice, each publisher's events in the order it committed them.
"""

import asyncio
import json
import time

import pytest
from channels import DEFAULT_CHANNEL_LAYER
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from django.db import connection, transaction
from websockets.asyncio.client import connect as ws_connect

from agentvine import events, layer_watch
from chat_app.selectors import latest_live_event_id, live_events_after
from tasks_app.services import task_create
from tests.chat_app.conftest import DaphneServer, communicator, frame_events, run
from tests.conftest import TestDatabaseProcess as DatabaseProcess
from tests.faults.services import RedisServer
from tests.faults.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.django_db(transaction=True)]

PUBLISHERS = 2
QUIET_EVENTS = 5
CHECK_SECONDS = 1.0


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


def _logged_ids(after_id, group=events.ACTIVITY_GROUP):
    try:
        return [event.id for event in live_events_after(group=group, after_id=after_id, limit=100_000)]
    finally:
        connection.close()  # a thread of asyncio.to_thread: its connection would outlive the test


def _phase(seconds):
    """Let the publishers run ``seconds``; the newest event id then."""
    time.sleep(seconds)
    try:
        return latest_live_event_id()
    finally:
        connection.close()


def _publish_quietly(task_id, count):
    """Events for one task only, while the web's Redis is down: its socket
    hears of them only by replaying."""
    try:
        for n in range(count):
            with transaction.atomic():
                events.publish("test.quiet", {"n": n}, groups=[events.task_group(task_id)])
    finally:
        connection.close()


def _restart(redis_server, quiet_task_id):
    """Redis goes away for 3 s and comes back empty; the ids committed meanwhile."""
    redis_server.shutdown()
    first = _phase(0)
    _publish_quietly(quiet_task_id, QUIET_EVENTS)
    last = _phase(3.0)
    redis_server.start()
    return first, last


def _go_silent(redis_server, quiet_task_id):
    # The web's connections to Redis go half-open: nothing arrives, nothing
    # is closed; only beats that never come back show it.
    assert redis_server.web_link.go_silent() >= 1
    _publish_quietly(quiet_task_id, QUIET_EVENTS)
    return None


def _drop_subscriptions(redis_server, quiet_task_id):
    # Redis stays up: only the web's subscribing connection goes (as in a
    # network blip), so Redis's run_id, for one, would not show it.
    assert redis_server.client().client_kill_filter(_type="pubsub") >= 1
    return None


async def _collect(ws, into):
    async for text in ws:
        frame = json.loads(text)
        for event in frame_events(frame):
            assert "id" in event, f"not an event: {frame}"
            into.append(event)


def _duplicates(ids):
    return sorted({event_id for event_id in ids if ids.count(event_id) > 1})


@pytest.mark.parametrize(
    "fault",
    [_restart, _drop_subscriptions, _go_silent],
    ids=["redis-restart", "connection-dropped", "connection-silent"],
)
def test_open_sockets_miss_no_event_across_a_lost_subscription(tmp_path, own_redis, operator, session_cookie, fault):
    # The web reaches Redis through a proxy that can cut its link silently.
    own_redis.web_link = TcpProxy(own_redis.port)
    web_redis_url = f"redis://127.0.0.1:{own_redis.web_link.port}/0"
    env = {"REDIS_URL": web_redis_url, "AGENTVINE_LIVE_CHECK_SECONDS": str(CHECK_SECONDS)}
    server = DaphneServer(tmp_path / "daphne.log", extra_env=env)
    cookie = session_cookie(operator)
    quiet_task = task_create(title="quiet", created_by=operator)
    stop_file = tmp_path / "stop-publishing"
    publishers = []
    start_id = latest_live_event_id()
    activity, quiet = [], []
    marks = {}

    async def connect(path):
        return await ws_connect(
            f"{server.ws_url}{path}?last_event_id={start_id}",
            additional_headers={"Cookie": cookie},
            origin=server.url,
            open_timeout=5,
        )

    async def body():
        # Busy: every event. Quiet: one task, whose only events come while
        # the web's Redis is down.
        sockets = [await connect("/ws/activity/"), await connect(f"/ws/tasks/{quiet_task.id}/")]
        collectors = [
            asyncio.create_task(_collect(sockets[0], activity)),
            asyncio.create_task(_collect(sockets[1], quiet)),
        ]
        try:
            publishers.extend(
                DatabaseProcess(
                    ["tests.chat_app.live_publisher", str(stop_file)],
                    log_path=tmp_path / f"publisher-{n}.log",
                    extra_env={"REDIS_URL": own_redis.url},
                )
                for n in range(PUBLISHERS)
            )
            # The publishers' Django starts in seconds on a busy machine:
            # the phase before the fault begins with their first event.
            deadline = time.monotonic() + 30
            while not activity and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert activity, "events reach the socket before the fault"
            marks["before"] = await asyncio.to_thread(_phase, 3.0)
            marks["outage"] = await asyncio.to_thread(fault, own_redis, quiet_task.id)
            marks["after"] = await asyncio.to_thread(_phase, 4.0)
            stop_file.touch()
            for publisher in publishers:
                await asyncio.to_thread(publisher.process.wait, 30)
            logged = set(await asyncio.to_thread(_logged_ids, start_id))
            logged_quiet = set(await asyncio.to_thread(_logged_ids, start_id, events.task_group(quiet_task.id)))
            # Everything published has had time to arrive: the last publishes
            # went out with Redis up, a lost subscription is noticed within
            # a check or two.
            deadline = time.monotonic() + 5 * CHECK_SECONDS + 5
            while time.monotonic() < deadline and not (
                logged <= {e["id"] for e in activity} and logged_quiet <= {e["id"] for e in quiet}
            ):
                await asyncio.sleep(0.2)
            await asyncio.sleep(2 * CHECK_SECONDS)  # anything late would be a duplicate
            assert not any(collector.done() for collector in collectors), "the sockets stayed open through the fault"
            return logged, logged_quiet
        finally:
            stop_file.touch()
            for collector in collectors:
                collector.cancel()
            for ws in sockets:
                await ws.close()

    try:
        logged, logged_quiet = asyncio.run(body())
    finally:
        for publisher in publishers:
            publisher.stop()
        server.stop()
        own_redis.web_link.close()

    assert marks["before"] < marks["after"], "events were committed before and after the fault"
    if marks["outage"]:
        first, last = marks["outage"]
        assert last - first > QUIET_EVENTS + 10, "events were committed while Redis was down"
    if fault is not _drop_subscriptions:
        assert len(logged_quiet) == QUIET_EVENTS
    for name, received, expected in [("activity", activity, logged), ("quiet task", quiet, logged_quiet)]:
        ids = [event["id"] for event in received]
        missing, extra = sorted(expected - set(ids)), sorted(set(ids) - expected)
        assert (missing, _duplicates(ids), extra) == ([], [], []), (
            f"{name}: {len(expected)} logged, {len(ids)} received: {len(missing)} missing,"
            f" {len(_duplicates(ids))} twice, {len(extra)} unknown"
        )
    # One publisher commits one event after another: its events arrive in that
    # order, the ones replayed after the fault before the ones sent live after it.
    for pid in {event["payload"].get("pid") for event in activity} - {None}:
        sequence = [event["payload"]["n"] for event in activity if event["payload"].get("pid") == pid]
        assert sequence == sorted(sequence), f"publisher {pid}: out of order"


@pytest.mark.parametrize("hooked", [True, False], ids=["reconnect-noticed", "beats-only"])
def test_socket_replays_what_its_lost_subscription_missed(own_redis, operator, settings, monkeypatch, hooked):
    """In process (WebsocketCommunicator): events committed while Redis is
    down never arrive live; once the restore is noticed, by the reconnect or,
    for a layer whose connections the watch cannot see, by its beats alone,
    the socket replays them, once."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [own_redis.url], "prefix": "asgi-own:"},
        }
    }
    settings.AGENTVINE_LIVE_CHECK_SECONDS = 0.3
    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    if not hooked:
        monkeypatch.setattr(layer_watch.LayerWatch, "_hook_connections", lambda self: None)
    start_id = latest_live_event_id()

    async def body():
        client = communicator(f"/ws/activity/?last_event_id={start_id}", operator)
        assert (await client.connect())[0]
        await asyncio.to_thread(own_redis.shutdown)
        lost = await database_sync_to_async(
            lambda: [events.publish("test.lost", {"n": n}, groups=[]) for n in range(3)]
        )()
        await asyncio.sleep(1.0)  # longer than a check: beats go unanswered
        await asyncio.to_thread(own_redis.start)
        replayed = await client.receive_events(3, timeout=10)
        assert [event["id"] for event in replayed] == lost
        assert await client.receive_nothing(timeout=1.0), "and only once"
        await client.disconnect()

    run(body())
