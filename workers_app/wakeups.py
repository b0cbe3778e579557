"""Short-lived wake-up signals for running agents, over Redis pub/sub.

A runner re-reads its work order from Postgres every second anyway; these
signals only make it look *now* (a cancel, a preemption request) or tell it
that its worker is shutting down. Pub/sub is fire-and-forget: a lost signal
costs at most one polling interval, never correctness, because the state
itself always lives in Postgres.
"""

import logging
import threading

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

WAKE = "wake"
SHUTDOWN = "shutdown"


def work_order_channel(work_order_id):
    return f"agentvine:work_order:{work_order_id}"


def node_channel(nodename):
    return f"agentvine:node:{nodename}"


def _client():
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5)


def _publish(channel, message):
    try:
        _client().publish(channel, message)
    except redis.RedisError:
        logger.warning("could not publish %s on %s; the runner's poll will notice", message, channel)


def work_order_wake(*, work_order_id):
    """Ask the runner of ``work_order_id`` to re-read its work order now."""
    _publish(work_order_channel(work_order_id), WAKE)


def node_shutdown_announce(*, nodename):
    """Tell every runner on Celery node ``nodename`` that a warm shutdown began.

    Also kept as a key, for a runner that subscribes just after the message
    went out (its agent was starting); the node clears it when it starts.
    """
    try:
        _client().set(node_channel(nodename), SHUTDOWN, ex=24 * 3600)
    except redis.RedisError:
        logger.warning("could not record the shutdown of %s", nodename)
    _publish(node_channel(nodename), SHUTDOWN)


def node_shutdown_clear(*, nodename):
    try:
        _client().delete(node_channel(nodename))
    except redis.RedisError:
        logger.warning("could not clear the shutdown mark of %s", nodename)


class RunnerWakeups:
    """Listens, in a daemon thread, for the signals meant for one running agent."""

    def __init__(self, *, work_order_id, nodename=None):
        self.wake = threading.Event()
        self.shutdown = threading.Event()
        self._client = None
        self._pubsub = None
        self._thread = None
        handlers = {work_order_channel(work_order_id): self._on_message}
        if nodename:
            handlers[node_channel(nodename)] = self._on_message
        try:
            # Held for the listener's lifetime: a collected client closes
            # its connections, the subscription's included.
            self._client = _client()
            self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            self._pubsub.subscribe(**handlers)
            if nodename and self._client.exists(node_channel(nodename)):
                self.shutdown.set()
            self._thread = self._pubsub.run_in_thread(
                sleep_time=0.5, daemon=True, exception_handler=self._on_listener_error
            )
        except redis.RedisError:
            logger.warning("wake-up signals unavailable; relying on polling", exc_info=True)
            self._pubsub = None

    def _on_message(self, message):
        if message.get("data") in (SHUTDOWN, SHUTDOWN.encode()):
            self.shutdown.set()
        self.wake.set()

    @staticmethod
    def _on_listener_error(exc, pubsub, thread):
        logger.warning("wake-up listener stopped (%s); relying on polling", exc)
        thread.stop()

    def consume_wake(self):
        """True once per signal received since the last call."""
        if self.wake.is_set():
            self.wake.clear()
            return True
        return False

    def close(self):
        # No join: the listener thread closes its own connection once it sees
        # the stop flag (within its half-second read timeout), and the slot
        # shouldn't wait for that between two runs.
        if self._thread is not None:
            self._thread.stop()
