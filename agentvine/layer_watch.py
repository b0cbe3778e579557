"""Notices when this process's Channels layer subscriptions were lost and restored.

With the pub/sub layer of channels-redis, a process's group memberships are
subscriptions on one Redis connection per shard, and redis-py subscribes them
again when that connection comes back. Whatever was published meanwhile
(Redis restarted or unreachable, the connection dropped) never reaches this
process's sockets, and nothing tells them. The events are in the ``LiveEvent``
log (``agentvine.events``), so a socket can replay them: this module tells it
when, and from where.

One :class:`LayerWatch` per event loop (daphne serves every socket of a
process from one), shared by all sockets, so its cost does not grow with
them:

- ``generation`` goes up each time a subscribing connection connects again
  (redis-py's connect callback, which runs before that connection reads any
  message, so before any event of the restored subscription reaches a
  consumer), and when beats come back after some were lost (a subscription
  that died without its connection noticing). A consumer compares it with
  the generation it last synced at, before every live event it forwards.
- A beat: every ``AGENTVINE_LIVE_CHECK_SECONDS`` the watch publishes one
  message to a channel of its own and waits for it to come back: one PUBLISH
  per process per interval, whatever the number of sockets. redis-py restores
  all of a connection's channels in one SUBSCRIBE, so a beat sent after a
  restore that comes back proves the restore took effect: a replay read after
  that cannot miss an event that was published before it did. Beats that
  Redis accepts but that never come back mean the subscribing connection went
  silent (a network cut that left it half-open): the watch drops it, and the
  reconnect restores the subscription like any other.
- The resume cursor: the highest event id this process delivered, as it was
  one check before the subscription was lost (the watch keeps the value of the
  previous check). Replaying from there also covers an event with a lower id
  that committed late, out of id order, unless its transaction outlasted a
  check interval; the consumer drops what its socket already has.

A beat that comes back late because the loop was busy counts as lost: the
sockets then replay for nothing, which costs each a query and sends nothing
twice.

Finding the subscribing connections reads channels-redis internals
(``_shards``, ``_pubsub``; version pinned in requirements.txt). A layer
without them (another backend, another version) is still watched by beats,
which notice an outage longer than a check interval.
"""

import asyncio
import logging
import weakref

from django.conf import settings

logger = logging.getLogger(__name__)

BEAT_TYPE = "layer.beat"
# Beats in a row that Redis took but the subscription did not bring back
# before the watch drops the subscribing connections, so redis-py makes them
# again (a connection that went silent: a half-open TCP after a network cut).
SILENT_BEATS = 2
# Generations whose resume cursor is kept (a socket further behind than this
# many restores replays from the oldest kept).
_KEPT_CURSORS = 64

_watches = weakref.WeakKeyDictionary()


def watch_for(layer):
    """The watch of ``layer`` on the running event loop (made on first use)."""
    loop = asyncio.get_running_loop()
    watch = _watches.get(loop)
    if watch is None or watch.layer is not layer:
        watch = LayerWatch(layer, interval=settings.AGENTVINE_LIVE_CHECK_SECONDS)
        _watches[loop] = watch
    return watch


class LayerWatch:
    def __init__(self, layer, *, interval):
        self.layer = layer
        self.interval = interval
        self.generation = 0
        self._confirmed = 0
        self._confirmed_changed = asyncio.Event()
        self._cursors = {}
        self._delivered = 0
        self._cursor_now = 0
        self._cursor_prev = 0
        self._consumers = weakref.WeakSet()
        # Connections are kept (not weakly): there are as many as shards,
        # plus one per flush of the layer (tests).
        self._hooked = []
        self._wake = asyncio.Event()
        self._beat_sent = 0
        self._beat_back = 0
        self._beat_arrived = asyncio.Event()
        self._task = None

    # --- for consumers --------------------------------------------------------

    def register(self, consumer):
        """Watch for ``consumer`` (weakly); returns the generation it is synced at.

        Call right after the consumer's ``group_add``: its subscription is
        then on a connection this hooks at once.
        """
        self._consumers.add(consumer)
        self._hook_connections()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self.generation

    def unregister(self, consumer):
        self._consumers.discard(consumer)

    def delivered(self, event_id):
        """A socket of this process sent event ``event_id``."""
        if event_id > self._delivered:
            self._delivered = event_id

    def resume_cursor(self, synced_generation):
        """The id a socket synced at ``synced_generation`` replays after."""
        missed = [generation for generation in self._cursors if generation > synced_generation]
        return self._cursors[min(missed)] if missed else self._cursor_prev

    async def restored(self, generation):
        """Wait (at most two check intervals) until ``generation``'s subscriptions are in effect."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * self.interval
        while self._confirmed < generation:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._confirmed_changed.clear()
            try:
                await asyncio.wait_for(self._confirmed_changed.wait(), remaining)
            except TimeoutError:
                return False
        return True

    # --- noticing -------------------------------------------------------------

    def _hook_connections(self):
        loop_layer = getattr(self.layer, "_get_layer", lambda: self.layer)()
        for shard in getattr(loop_layer, "_shards", ()):
            pubsub = getattr(shard, "_pubsub", None)
            connection = getattr(pubsub, "connection", None)
            if connection is None or any(connection is hooked for hooked in self._hooked):
                continue
            # Called on every connect after this one; redis-py's own callback,
            # registered first, has sent the SUBSCRIBE of every channel by then.
            connection.register_connect_callback(self._reconnected)
            self._hooked.append(connection)

    def _reconnected(self, connection):
        self._restored("the layer's Redis connection came back")

    def _restored(self, why):
        self.generation += 1
        self._cursors[self.generation] = self._cursor_prev
        for old in sorted(self._cursors)[:-_KEPT_CURSORS]:
            del self._cursors[old]
        logger.warning(
            "live layer subscription restored (%s): %d sockets replay from event %d",
            why,
            len(self._consumers),
            self._cursor_prev,
        )
        self._wake.set()

    async def _run(self):
        channel = None
        receiver = None
        lost_since = None  # generation when beats stopped coming back
        silent = 0
        try:
            # Beats only while there are sockets to serve (register starts it again).
            while self._consumers:
                self._wake.clear()
                published = back = False
                try:
                    if channel is None:
                        channel = await self.layer.new_channel("layerwatch.")
                        receiver = asyncio.get_running_loop().create_task(self._receive_beats(channel))
                        self._hook_connections()
                    self._beat_sent += 1
                    beat = {"type": BEAT_TYPE, "n": self._beat_sent, "generation": self.generation}
                    await asyncio.wait_for(self.layer.send(channel, beat), self.interval)
                    published = True
                    back = await self._beat_returned(self._beat_sent, self.interval)
                except Exception:
                    # Redis is away: the layer's receive loop reconnects by itself.
                    logger.debug("live layer beat failed", exc_info=True)
                silent = 0 if back or not published else silent + 1
                if silent >= SILENT_BEATS:
                    silent = 0
                    await self._drop_subscribing_connections()
                if back:
                    if lost_since is not None and lost_since == self.generation:
                        # Beats were lost and no reconnect was seen: the
                        # subscription was gone all the same.
                        self._restored("beats came back")
                        lost_since = None
                        continue  # confirm the new generation with a beat now
                    lost_since = None
                    self._cursor_prev, self._cursor_now = self._cursor_now, self._delivered
                elif lost_since is None:
                    lost_since = self.generation
                try:
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                except TimeoutError:
                    pass
        finally:
            if receiver is not None:
                receiver.cancel()

    async def _drop_subscribing_connections(self):
        logger.warning("live layer subscription silent: connecting again")
        for connection in self._hooked:
            try:
                # The layer's receive loop connects again on its next read;
                # redis-py subscribes everything again and calls _reconnected.
                await connection.disconnect(nowait=True)
            except Exception:
                logger.warning("could not drop a silent layer connection", exc_info=True)

    async def _beat_returned(self, n, timeout):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._beat_back < n:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._beat_arrived.clear()
            try:
                await asyncio.wait_for(self._beat_arrived.wait(), remaining)
            except TimeoutError:
                return False
        return True

    async def _receive_beats(self, channel):
        while True:
            message = await self.layer.receive(channel)
            if message.get("type") != BEAT_TYPE:
                continue
            self._beat_back = max(self._beat_back, message["n"])
            self._beat_arrived.set()
            if message["generation"] > self._confirmed:
                self._confirmed = message["generation"]
                self._confirmed_changed.set()
                # Quiet sockets too: replay now, not at their next live event.
                for consumer in list(self._consumers):
                    asyncio.get_running_loop().create_task(_replay_for(consumer))


async def _replay_for(consumer):
    try:
        await consumer.layer_restored()
    except Exception:
        # Its socket is gone, or the database: its next live event tries again.
        logger.warning("replay after a restored layer subscription failed", exc_info=True)
