"""A live socket misses no event across a Redis restart.

Real processes: daphne on the app's channels-redis layer, pointed at a Redis
this test owns; two publisher processes committing events through
``agentvine.events.publish``; a real WebSocket client on ``ws/activity/``
that stays connected while Redis is shut down (``shutdown nosave``: it comes
back empty) and started again. The ids the socket received are compared
with the ``LiveEvent`` table: none missing, none twice.
"""

import asyncio
import json
import time

import pytest
from django.db import connection
from websockets.asyncio.client import connect as ws_connect

from agentvine.models import LiveEvent
from chat_app.selectors import latest_live_event_id
from tests.chat_app.conftest import DaphneServer, frame_events
from tests.conftest import TestDatabaseProcess as DatabaseProcess
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.django_db(transaction=True)]

PUBLISHERS = 2
CHECK_SECONDS = 1.0


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


def _logged_ids(after_id):
    try:
        return list(LiveEvent.objects.filter(id__gt=after_id).order_by("id").values_list("id", flat=True))
    finally:
        connection.close()  # a thread of asyncio.to_thread: its connection would outlive the test


def _phase(seconds):
    """Let the publishers run ``seconds``; the newest event id then."""
    time.sleep(seconds)
    try:
        return latest_live_event_id()
    finally:
        connection.close()


def _restart(redis_server):
    """Redis goes away for 3 s and comes back empty; the ids committed meanwhile."""
    redis_server.shutdown()
    first = _phase(0)
    last = _phase(3.0)
    redis_server.start()
    return first, last


def _drop_subscriptions(redis_server):
    # Redis stays up: only the web's subscribing connection goes (as in a
    # network blip), so Redis's run_id, for one, would not show it.
    assert redis_server.client().client_kill_filter(_type="pubsub") >= 1
    return None


@pytest.mark.parametrize("fault", [_restart, _drop_subscriptions], ids=["redis-restart", "connection-dropped"])
def test_open_socket_misses_no_event_across_a_lost_subscription(tmp_path, own_redis, operator, session_cookie, fault):
    env = {"REDIS_URL": own_redis.url, "AGENTVINE_LIVE_CHECK_SECONDS": str(CHECK_SECONDS)}
    server = DaphneServer(tmp_path / "daphne.log", extra_env=env)
    cookie = session_cookie(operator)
    stop_file = tmp_path / "stop-publishing"
    publishers = []
    start_id = latest_live_event_id()
    received = []
    marks = {}

    async def body():
        ws = await ws_connect(
            f"{server.ws_url}/ws/activity/?last_event_id={start_id}",
            additional_headers={"Cookie": cookie},
            origin=server.url,
            open_timeout=5,
        )

        async def collect():
            async for text in ws:
                frame = json.loads(text)
                for event in frame_events(frame):
                    assert "id" in event, f"not an event: {frame}"
                    received.append(event["id"])

        collector = asyncio.create_task(collect())
        try:
            publishers.extend(
                DatabaseProcess(
                    ["tests.chat_app.live_publisher", str(stop_file)],
                    log_path=tmp_path / f"publisher-{n}.log",
                    extra_env={"REDIS_URL": own_redis.url},
                )
                for n in range(PUBLISHERS)
            )
            marks["before"] = await asyncio.to_thread(_phase, 3.0)
            assert received, "events reach the socket before the fault"
            marks["outage"] = await asyncio.to_thread(fault, own_redis)
            marks["after"] = await asyncio.to_thread(_phase, 4.0)
            stop_file.touch()
            for publisher in publishers:
                await asyncio.to_thread(publisher.process.wait, 30)
            logged = set(await asyncio.to_thread(_logged_ids, start_id))
            # Everything published has had time to arrive: the last publishes
            # went out with Redis up, a lost subscription is noticed within
            # a check or two.
            deadline = time.monotonic() + 5 * CHECK_SECONDS + 5
            while not logged <= set(received) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(2 * CHECK_SECONDS)  # anything late would be a duplicate
            assert not collector.done(), "the socket stayed open through the fault"
            return logged
        finally:
            stop_file.touch()
            collector.cancel()
            await ws.close()

    try:
        logged = asyncio.run(body())
    finally:
        for publisher in publishers:
            publisher.stop()
        server.stop()

    assert marks["before"] < marks["after"], "events were committed before and after the fault"
    if marks["outage"]:
        first, last = marks["outage"]
        assert last - first > 10, "events were committed while Redis was down"
    missing = sorted(logged - set(received))
    duplicates = sorted({event_id for event_id in received if received.count(event_id) > 1})
    extra = sorted(set(received) - logged)
    assert (missing, duplicates, extra) == ([], [], []), (
        f"{len(logged)} logged, {len(received)} received: {len(missing)} missing, {len(duplicates)} twice,"
        f" {len(extra)} unknown"
    )
