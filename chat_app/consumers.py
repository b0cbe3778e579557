"""WebSocket consumers: the activity feed, one task's stream, one conversation.

Every socket sends the same frames (see ``agentvine.events``): one event as a
JSON object, several that arrive together as one ``{"type": "batch",
"events": [...]}`` frame in order. A client that reconnects passes
``?last_event_id=N`` (or sends ``{"type": "resume", "last_event_id": N}``)
and first receives every event after N from Postgres (in batch frames), then
the live stream.

The race between catch-up and live events: the consumer joins its group
*before* reading the log, so an event committed during the replay is both in
the log and on the way over the layer. Channels hands this consumer one
message at a time, so live events wait in the channel until the replay is
done; they are then forwarded unless their id was already sent on this
socket. Ids are deduplicated by set rather than by "highest id sent" because
concurrent transactions can commit (and send) out of id order: a late commit
with a lower id is still delivered, not mistaken for a duplicate.

For the same reason a socket opened without ``last_event_id`` can receive an
event and miss one with a lower id that another process sent just before
the socket joined; pages therefore connect with the newest id at render time.
A client resuming from the highest id it saw can likewise miss a lower id
committed late, within the moment between the two commits. Pages refresh
their regions after every reconnect for this reason; a client that keeps its
own copy of a stream resumes from a slightly older id and drops ids it has.

A socket can also miss events while it stays connected: when this process's
layer subscription is lost and restored (Redis restarted or unreachable),
what was published meanwhile never arrives. ``agentvine.layer_watch`` notices
the restore (one watch per process); the consumer then replays from the log
itself, from the watch's resume cursor (or the socket's own start, if
later), before it forwards the next live event, and a quiet socket is
replayed when the watch has confirmed the new subscription. The ids it has
sent are dropped as always, so the client sees every event once.
"""

import asyncio
import logging
from collections import deque
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from agentvine import events, layer_watch
from agentvine.errors import DomainError
from chat_app import selectors, services

logger = logging.getLogger(__name__)

# Close codes (4000-4999 are for applications).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404

ERR_BAD_LAST_EVENT_ID = "last_event_id must be a non-negative integer"
ERR_UNKNOWN_REQUEST = "unknown request type"
ERR_BAD_REQUEST = "request must be a JSON object with a type"

# Remember the last this many delivered ids for deduplication; ids up to the
# highest forgotten one are treated as already sent.
_DEDUP_WINDOW = 20000

_LIVE_MESSAGE_TYPES = frozenset({events.LAYER_MESSAGE_TYPE, events.LAYER_BATCH_TYPE})


def _parse_event_id(value):
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


class LiveStreamConsumer(AsyncJsonWebsocketConsumer):
    """Base: authorize, join one group, replay from a cursor, forward live events."""

    replay_page_size = 500

    async def connect(self):
        self.stream_group = None
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            # Closing before accept() refuses the handshake (HTTP 403).
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not user.is_staff:
            # Same rule as the operator API: signed-in staff only.
            await self.close(code=CLOSE_FORBIDDEN)
            return
        group, close_code = await self.authorize(user)
        if group is None:
            await self.close(code=close_code)
            return
        self._sent_ids = set()
        self._sent_order = deque()
        self._sent_floor = 0
        self.stream_group = group
        # Set below: until then a lost subscription is the connect's replay's business.
        self._stream_start = None
        self._layer_resync = asyncio.Lock()
        # Join before reading the log: see the module docstring.
        await self.channel_layer.group_add(group, self.channel_name)
        self._layer_watch = layer_watch.watch_for(self.channel_layer)
        self._layer_generation = self._layer_watch.register(self)
        await self.accept()
        query = parse_qs(self.scope.get("query_string", b"").decode())
        last_event_id = _parse_event_id(query["last_event_id"][0]) if "last_event_id" in query else None
        if last_event_id is None:
            # After a lost subscription this socket replays events after
            # this id at the earliest: nothing from before it existed.
            self._stream_start = await database_sync_to_async(selectors.latest_live_event_id)()
            if "last_event_id" in query:
                await self.send_error(ERR_BAD_LAST_EVENT_ID, request="connect")
        else:
            self._stream_start = last_event_id
            await self.replay(last_event_id)
        # A subscription lost while this socket was connecting: replay now.
        await self._sync_with_layer()

    async def disconnect(self, code):
        if getattr(self, "_layer_watch", None):
            self._layer_watch.unregister(self)
        if getattr(self, "stream_group", None):
            await self.channel_layer.group_discard(self.stream_group, self.channel_name)

    async def authorize(self, user):
        """Return ``(group, None)`` to accept or ``(None, close_code)`` to refuse."""
        raise NotImplementedError

    # --- outgoing -------------------------------------------------------------

    async def replay(self, last_event_id):
        cursor = last_event_id
        while True:
            page = await database_sync_to_async(selectors.live_events_after)(
                group=self.stream_group, after_id=cursor, limit=self.replay_page_size
            )
            await self.deliver([(event.id, selectors.live_event_frame(event)) for event in page])
            if len(page) < self.replay_page_size:
                return
            cursor = page[-1].id

    def _first_sending(self, event_id):
        if event_id <= self._sent_floor or event_id in self._sent_ids:
            return False
        self._sent_ids.add(event_id)
        self._sent_order.append(event_id)
        if len(self._sent_order) > _DEDUP_WINDOW:
            # Forget one id per id sent, oldest first: every socket of a busy
            # feed would otherwise sort its window at the same moment.
            forgotten = self._sent_order.popleft()
            self._sent_ids.discard(forgotten)
            self._sent_floor = max(self._sent_floor, forgotten)
        return True

    async def deliver(self, event_frames):
        """Send ``[(event_id, frame), ...]`` in order, skipping what this socket already sent."""
        fresh = [frame for event_id, frame in event_frames if self._first_sending(event_id)]
        for text in events.client_frames(fresh):
            await self.send(text_data=text)
        if fresh:
            self._layer_watch.delivered(max(event_id for event_id, _ in event_frames))

    async def layer_restored(self):
        """Replay what this socket missed while the layer subscription was lost.

        Called before a live event is forwarded (when the watch's generation
        moved) and by the watch for every socket once it has confirmed the
        restore; the lock makes the two one replay, ahead of that event.
        """
        async with self._layer_resync:
            generation = self._layer_watch.generation
            if generation == self._layer_generation or self._stream_start is None:
                return
            cursor = max(self._stream_start, self._layer_watch.resume_cursor(self._layer_generation))
            await self._layer_watch.restored(generation)
            try:
                await self.replay(cursor)
            except Exception:
                # Tried again before the next live event.
                logger.warning("replay after a lost layer subscription failed", exc_info=True)
                return
            self._layer_generation = generation

    async def _sync_with_layer(self):
        if self._layer_generation != self._layer_watch.generation or self._layer_resync.locked():
            await self.layer_restored()

    async def dispatch(self, message):
        if message["type"] in _LIVE_MESSAGE_TYPES:
            # Forwarding a live event only passes text on. Channels' own
            # dispatch first closes stale database connections on the one sync
            # thread, a thread hop for every event on every socket that caps
            # how many events one web process can fan out.
            await getattr(self, get_handler_name(message))(message)
            return
        await super().dispatch(message)

    async def live_event(self, message):
        """Handler for the layer's ``live.event`` messages (see agentvine.events)."""
        await self._sync_with_layer()
        await self.deliver([(message["id"], message["frame"])])

    async def live_batch(self, message):
        """Handler for ``live.batch``: several events, in order, in one layer message."""
        await self._sync_with_layer()
        await self.deliver(message["events"])

    async def send_error(self, text, *, request):
        await self.send_json({"type": "error", "payload": {"message": text, "request": request}})

    # --- incoming -------------------------------------------------------------

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self.send_error(ERR_BAD_REQUEST, request=None)
            return
        request = content["type"]
        if request == "resume":
            last_event_id = _parse_event_id(content.get("last_event_id"))
            if last_event_id is None:
                await self.send_error(ERR_BAD_LAST_EVENT_ID, request=request)
                return
            # Events before the cursor are now wanted too, after a lost subscription as well.
            self._stream_start = min(self._stream_start, last_event_id)
            await self.replay(last_event_id)
            return
        handler = self.requests().get(request)
        if handler is None:
            await self.send_error(ERR_UNKNOWN_REQUEST, request=request)
            return
        try:
            result = await database_sync_to_async(handler)(content)
        except DomainError as exc:
            await self.send_error(exc.message, request=request)
            return
        await self.send_json({"type": "ack", "payload": {"request": request, **result}})

    def requests(self):
        """Map of client request type -> sync callable(content) -> dict."""
        return {}


class ActivityConsumer(LiveStreamConsumer):
    """Every event, for every operator: ``ws/activity/``."""

    async def authorize(self, user):
        return events.ACTIVITY_GROUP, None


class AttentionConsumer(LiveStreamConsumer):
    """Questions asked and answered on any task, for the pages whose own
    stream does not carry them (a task page, the workers list): ``ws/attention/``."""

    async def authorize(self, user):
        return events.ATTENTION_GROUP, None


class TaskConsumer(LiveStreamConsumer):
    """One task's status changes and output: ``ws/tasks/<task_id>/``."""

    async def authorize(self, user):
        task_id = self.scope["url_route"]["kwargs"]["task_id"]
        exists = await database_sync_to_async(selectors.task_exists)(task_id=task_id)
        if not exists:
            return None, CLOSE_NOT_FOUND
        return events.task_group(task_id), None


class ConversationConsumer(LiveStreamConsumer):
    """A conversation: ``ws/conversations/<conversation_id>/``.

    Operators also talk here: ``{"type": "message.send", "text": ...}``,
    ``{"type": "question.answer", "question_id": ..., "text": ...}`` and
    ``{"type": "conversation.read"}``. The result of a request comes back as
    ``{"type": "ack"|"error", "payload": {...}}``; the message itself arrives
    as a normal event frame.
    """

    async def authorize(self, user):
        self.conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        return events.conversation_group(self.conversation_id), None

    def requests(self):
        user = self.scope["user"]
        conversation_id = self.conversation_id

        def send_message(content):
            message = services.operator_message_send(
                user=user, conversation_id=conversation_id, text=content.get("text")
            )
            return {"message_id": str(message.id)}

        def answer_question(content):
            question = selectors.question_get(question_id=content.get("question_id"))
            answer = services.question_answer(
                question=question,
                answer_text=content.get("text"),
                answered_by=services.operator_profile(user=user),
            )
            return {"question_id": str(question.id), "message_id": str(answer.id)}

        def mark_read(content):
            services.conversation_mark_read(conversation_id=conversation_id)
            return {}

        return {"message.send": send_message, "question.answer": answer_question, "conversation.read": mark_read}
