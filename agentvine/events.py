"""The one place that publishes live events.

Services call :func:`publish` inside their transaction. The event is written
as a ``chat_app.LiveEvent`` row in that same transaction (one INSERT; its id is
the cursor a reconnecting client resumes from) and goes out on the Channels
layer only after the transaction commits, so nobody sees a state that was
rolled back and nothing sent live is missing from the catch-up log.

Clients receive one JSON frame per event::

    {"id": 42, "type": "work_order.updated", "payload": {...}, "at": "2026-01-01T12:00:00.123456+00:00"}

On the layer an event travels as ``{"type": "live.event", "id": 42, "frame":
"<that JSON text>"}`` (the frame is serialised once here, not once per
connected client), or, when several are waiting to go out, as one
``{"type": "live.batch", "events": [[id, frame], ...]}`` in commit order.
"""

import asyncio
import atexit
import json
import logging
import os
import threading

from channels.layers import get_channel_layer
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

logger = logging.getLogger(__name__)

ACTIVITY_GROUP = "activity"
LAYER_MESSAGE_TYPE = "live.event"
LAYER_BATCH_TYPE = "live.batch"


def task_group(task_id):
    return f"task.{task_id}"


def worker_group(worker_id):
    return f"worker.{worker_id}"


def conversation_group(conversation_id):
    return f"conversation.{conversation_id}"


def event_frame(*, event_id, event_type, payload, at):
    return json.dumps(
        {"id": event_id, "type": event_type, "payload": payload, "at": at.isoformat()},
        cls=DjangoJSONEncoder,
        separators=(",", ":"),
    )


# At most this many events travel in one layer message.
_MAX_BATCH = 200


def _layer_message(messages):
    if len(messages) == 1:
        return messages[0]
    return {"type": LAYER_BATCH_TYPE, "events": [[m["id"], m["frame"]] for m in messages]}


class _LayerSender:
    """Sends committed events to the layer from one long-lived event loop.

    ``async_to_sync`` per event would build an event loop and a Redis
    connection each time (~4 ms); this keeps one loop thread per process (made
    lazily, so every forked Celery pool process gets its own) and one queue
    drained by a single coroutine, so events leave a process in the order
    they were committed and ``publish`` never waits for Redis.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._pid = None
        self._loop = None
        self._queue = None
        self._pending = 0
        self._idle = threading.Condition(self._lock)

    def _ensure_started(self):
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run():
                asyncio.set_event_loop(loop)
                self._queue = asyncio.Queue()
                loop.create_task(self._drain())
                ready.set()
                loop.run_forever()

            threading.Thread(target=run, name="agentvine-events", daemon=True).start()
            ready.wait()
            self._loop, self._pending, self._pid = loop, 0, os.getpid()

    async def _drain(self):
        layer = get_channel_layer()
        while True:
            batch = [await self._queue.get()]
            # Under load, whatever queued up meanwhile goes out together: one
            # group_send per group for the lot instead of one per event.
            while len(batch) < _MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            per_group = {}
            for groups, message in batch:
                for group in groups:
                    per_group.setdefault(group, []).append(message)
            try:
                for group, messages in per_group.items():
                    await layer.group_send(group, _layer_message(messages))
            except Exception:
                # The live layer is best effort: the events are committed in
                # Postgres and a client catches up from there on reconnect.
                logger.warning("could not publish %d events", len(batch), exc_info=True)
            with self._lock:
                self._pending -= len(batch)
                if self._pending == 0:
                    self._idle.notify_all()

    def send(self, groups, message):
        self._ensure_started()
        with self._lock:
            self._pending += 1
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (groups, message))

    def flush(self, timeout=5.0):
        """Wait until everything handed over so far is on the layer."""
        if self._pid != os.getpid():
            return True
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)


_sender = _LayerSender()
atexit.register(_sender.flush)


def flush(timeout=5.0):
    """Block until this process's committed events are on the layer (scripts, tests)."""
    return _sender.flush(timeout)


def _send(groups, message):
    if get_channel_layer() is None:
        return
    _sender.send(groups, message)


def publish(event_type, payload, *, groups):
    """Record ``event_type`` with ``payload`` now; send it to ``groups`` after commit.

    Every event also goes to the ``activity`` group. Returns the event id.
    """
    from chat_app.models import LiveEvent

    groups = list(dict.fromkeys([ACTIVITY_GROUP, *(str(g) for g in groups)]))
    # Round-trip through JSON so the stored payload, the replayed frame and
    # the live frame are identical (UUIDs, datetimes and Decimals as strings).
    payload = json.loads(json.dumps(payload, cls=DjangoJSONEncoder))
    now = timezone.now()
    event = LiveEvent.objects.create(
        type=event_type, groups=LiveEvent.encode_groups(groups), payload=payload, created_at=now
    )
    message = {
        "type": LAYER_MESSAGE_TYPE,
        "id": event.id,
        "frame": event_frame(event_id=event.id, event_type=event_type, payload=payload, at=now),
    }
    transaction.on_commit(lambda: _send(groups, message))
    return event.id
