"""Short-lived wake-up signals for running agents, over Redis pub/sub.

A runner re-reads its work order from Postgres every second anyway; these
signals only make it look *now* (a cancel, a preemption request, a message
for its agent, an answer to its agent's question) or tell it that its worker
is shutting down. An agent waiting for an answer through the API is woken
the same way, on the question's own channel (:func:`question_answered_announce`).
Pub/sub is fire-and-forget: a lost signal costs at most one polling interval, never correctness, because the state
itself always lives in Postgres.

Each worker process listens on one connection, from one thread, for its whole
life (:class:`WakeupListener`): a run only registers the work order it is
running, so starting an agent costs no connection, subscription or thread.
"""

import asyncio
import logging
import os
import threading
import time

import redis
import redis.asyncio
from django.conf import settings

from agentvine.redis_client import shared_redis

logger = logging.getLogger(__name__)

WAKE = "wake"
SHUTDOWN = "shutdown"
WORK_ORDER_CHANNEL_PREFIX = "agentvine:work_order:"
QUESTION_CHANNEL_PREFIX = "agentvine:question:"
# How long the listener waits before connecting again after losing Redis.
RECONNECT_SECONDS = 1.0


def work_order_channel(work_order_id):
    return f"{WORK_ORDER_CHANNEL_PREFIX}{work_order_id}"


def question_channel(question_id):
    return f"{QUESTION_CHANNEL_PREFIX}{question_id}"


def question_answered_announce(*, question_id):
    """Wake whoever waits for the answer to ``question_id`` (the API's long poll)."""
    _publish(question_channel(question_id), WAKE)


class QuestionSignal:
    """``async with QuestionSignal(question_id) as signal: await signal.wait(s)``:
    True as soon as the question's answer is announced, False after ``s``
    seconds. Subscribed (Redis confirmed it) before the block runs, so an
    answer committed after the caller's first look cannot go by unseen.
    Without Redis it only sleeps: the caller's looks are the fallback."""

    def __init__(self, question_id):
        self.channel = question_channel(question_id)
        self._client = None
        self._pubsub = None

    async def __aenter__(self):
        try:
            self._client = redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
            self._pubsub = self._client.pubsub()
            await self._pubsub.subscribe(self.channel)
            confirmed = await self._pubsub.get_message(timeout=2.0)
            if confirmed is None or confirmed["type"] != "subscribe":
                raise redis.TimeoutError("no subscription confirmation")
        except (redis.RedisError, OSError):
            logger.warning("answer signals unavailable; waiting agents poll", exc_info=True)
            await self._close()
        return self

    async def wait(self, seconds):
        if self._pubsub is None:
            await asyncio.sleep(seconds)
            return False
        try:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=seconds)
        except (redis.RedisError, OSError):
            await self._close()
            return False
        return message is not None

    async def _close(self):
        pubsub, client, self._pubsub, self._client = self._pubsub, self._client, None, None
        try:
            if pubsub is not None:
                await pubsub.aclose()
            if client is not None:
                await client.aclose()
        except (redis.RedisError, OSError):
            pass

    async def __aexit__(self, *exc):
        await self._close()


def node_channel(nodename):
    return f"agentvine:node:{nodename}"


def _publish(channel, message):
    try:
        shared_redis().publish(channel, message)
    except redis.RedisError:
        logger.warning("could not publish %s on %s; the runner's poll will notice", message, channel)


def work_order_wake(*, work_order_id):
    """Ask the runner of ``work_order_id`` to re-read its work order now."""
    _publish(work_order_channel(work_order_id), WAKE)


def node_shutdown_announce(*, nodename):
    """Tell every runner on Celery node ``nodename`` that a warm shutdown began.

    Also kept as a key, for a listener that subscribes just after the message
    went out (its process was starting); the node clears it when it starts.
    """
    try:
        shared_redis().set(node_channel(nodename), SHUTDOWN, ex=24 * 3600)
    except redis.RedisError:
        logger.warning("could not record the shutdown of %s", nodename)
    _publish(node_channel(nodename), SHUTDOWN)


def node_shutdown_clear(*, nodename):
    try:
        shared_redis().delete(node_channel(nodename))
    except redis.RedisError:
        logger.warning("could not clear the shutdown mark of %s", nodename)


class WakeupListener:
    """The signals for one worker process: its node's shutdown, and a wake
    for whichever work orders its runners have registered.

    Wakes for every work order arrive (one pattern subscription): they are
    rare (operator cancels, preemption requests) and dropping the ones for
    other processes is cheaper than subscribing and unsubscribing per run.
    After a lost connection every registered runner is woken, since a signal
    may have gone by meanwhile.
    """

    def __init__(self, *, nodename=None):
        self.nodename = nodename
        self.shutdown = threading.Event()
        self.subscribed = threading.Event()
        self._watchers = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._listen, name="agentvine-wakeups", daemon=True)
        self._thread.start()

    def watch(self, work_order_id, event):
        with self._lock:
            self._watchers[str(work_order_id)] = event

    def unwatch(self, work_order_id):
        with self._lock:
            self._watchers.pop(str(work_order_id), None)

    def _wake_all(self):
        with self._lock:
            for event in self._watchers.values():
                event.set()

    def _listen(self):
        while True:
            pubsub = None
            try:
                # A subscription keeps its connection for good: its own
                # client, not one of the pool that short commands share.
                pubsub = redis.Redis.from_url(
                    settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30
                ).pubsub()
                pubsub.psubscribe(f"{WORK_ORDER_CHANNEL_PREFIX}*")
                confirmations = 1
                if self.nodename:
                    pubsub.subscribe(node_channel(self.nodename))
                    confirmations += 1
                # Subscribed (as Redis confirms) before the key is read: an
                # announcement cannot fall between the two.
                while confirmations:
                    message = pubsub.get_message(timeout=5.0)
                    if message is None:
                        raise redis.TimeoutError("no subscription confirmation")
                    if message["type"] in ("subscribe", "psubscribe"):
                        confirmations -= 1
                    else:
                        self._on_message(message)
                if self.nodename and shared_redis().exists(node_channel(self.nodename)):
                    self.shutdown.set()
                self.subscribed.set()
                self._wake_all()
                while True:
                    message = pubsub.get_message(timeout=5.0)
                    if message is not None and message["type"] in ("message", "pmessage"):
                        self._on_message(message)
            except Exception:
                logger.warning("wake-up listener lost Redis; relying on polling until it is back", exc_info=True)
            finally:
                self.subscribed.clear()
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass
            time.sleep(RECONNECT_SECONDS)

    def _on_message(self, message):
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode()
        data = message.get("data")
        if self.nodename and channel == node_channel(self.nodename):
            if data in (SHUTDOWN, SHUTDOWN.encode()):
                self.shutdown.set()
            self._wake_all()
            return
        if channel and channel.startswith(WORK_ORDER_CHANNEL_PREFIX):
            with self._lock:
                event = self._watchers.get(channel[len(WORK_ORDER_CHANNEL_PREFIX) :])
            if event is not None:
                event.set()


_listener = {"pid": None, "listener": None}
_listener_lock = threading.Lock()


def process_listener(*, nodename=None):
    """This process's :class:`WakeupListener`, started on first use."""
    with _listener_lock:
        if _listener["pid"] != os.getpid():
            _listener.update(pid=os.getpid(), listener=WakeupListener(nodename=nodename))
        return _listener["listener"]


class _Wake(threading.Event):
    """An event that also calls ``on_set`` (from the listener's thread): the
    runner's loop may be waiting for its agent's output, not for the event."""

    def __init__(self, on_set=None):
        super().__init__()
        self._on_set = on_set

    def set(self):
        super().set()
        if self._on_set is not None:
            self._on_set()


class RunnerWakeups:
    """The signals meant for one running agent: ``shutdown`` (its node's warm
    shutdown) and :meth:`consume_wake` (its work order was changed, a message
    or an answer came for its agent). ``on_wake`` is called on each signal."""

    def __init__(self, *, work_order_id, nodename=None, on_wake=None):
        self._listener = process_listener(nodename=nodename)
        self._work_order_id = work_order_id
        self.wake = _Wake(on_wake)
        self.shutdown = self._listener.shutdown
        self._listener.watch(work_order_id, self.wake)

    def consume_wake(self):
        """True once per signal received since the last call."""
        if self.wake.is_set():
            self.wake.clear()
            return True
        return False

    def wait(self, seconds):
        """Sleep up to ``seconds``, less if a signal comes (consumed)."""
        woken = self.wake.wait(seconds)
        self.wake.clear()
        return woken

    def close(self):
        self._listener.unwatch(self._work_order_id)


def wakeups_start(*, nodename):
    """Start listening as the process starts, not at its first run (slots.py)."""
    process_listener(nodename=nodename)
