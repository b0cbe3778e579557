"""The one place that publishes live events.

Services call :func:`publish` inside their transaction. The event is written
as a ``agentvine.LiveEvent`` row in that same transaction (one INSERT; its id is
the cursor a reconnecting client resumes from) and goes out on the Channels
layer only after the transaction commits, so nobody sees a state that was
rolled back and nothing sent live is missing from the catch-up log. A hot path
can hand ``publish`` the writes its event announces (``changes``): on
PostgreSQL they then travel in the event's own INSERT statement.

Clients receive JSON text frames. One event is one object::

    {"id": 42, "type": "work_order.updated", "payload": {...}, "at": "2026-01-01T12:00:00.123456+00:00"}

Several events that reach a socket together arrive as one frame, in order::

    {"type": "batch", "events": [{"id": 42, ...}, {"id": 43, ...}]}

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
from datetime import timedelta

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections, router, transaction
from django.utils import timezone

from agentvine import db
from agentvine.models import LiveEvent

logger = logging.getLogger(__name__)

ACTIVITY_GROUP = "activity"
# Questions asked and answered anywhere: what every console page needs to
# know besides its own subject (the 📬 count and notifications).
ATTENTION_GROUP = "attention"
LAYER_MESSAGE_TYPE = "live.event"
LAYER_BATCH_TYPE = "live.batch"
CLIENT_BATCH_TYPE = "batch"

# A batch frame stops growing at about this many characters (the next event
# starts a new frame), well under the 1 MiB WebSocket clients accept by default.
MAX_BATCH_FRAME_CHARS = 64 * 1024


def task_group(task_id):
    return f"task.{task_id}"


def worker_group(worker_id):
    return f"worker.{worker_id}"


def conversation_group(conversation_id):
    return f"conversation.{conversation_id}"


def _payload_json(payload):
    return json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"))


def _frame_text(event_id, event_type, payload_json, at):
    # Assembled as text so a payload is serialised once per event, not again
    # for its frame; same output as json.dumps of the whole object.
    return f'{{"id":{event_id},"type":{json.dumps(event_type)},"payload":{payload_json},"at":"{at.isoformat()}"}}'


def event_frame(*, event_id, event_type, payload, at):
    return _frame_text(event_id, event_type, _payload_json(payload), at)


def client_frames(event_frames):
    """The WebSocket frames that carry ``event_frames`` (event JSON texts, in order).

    One event goes as itself; several go as ``{"type": "batch", "events":
    [...]}`` frames of at most ``MAX_BATCH_FRAME_CHARS`` each (an event bigger
    than that travels alone), so a socket costs one frame per batch instead of
    one per event.
    """
    frames = []
    part = []
    size = len(_BATCH_FRAME_START) + len(_BATCH_FRAME_END)
    for frame in event_frames:
        if part and size + len(frame) + 1 > MAX_BATCH_FRAME_CHARS:
            frames.append(_client_frame(part))
            part, size = [], len(_BATCH_FRAME_START) + len(_BATCH_FRAME_END)
        part.append(frame)
        size += len(frame) + 1
    if part:
        frames.append(_client_frame(part))
    return frames


_BATCH_FRAME_START = f'{{"type":"{CLIENT_BATCH_TYPE}","events":['
_BATCH_FRAME_END = "]}"


def _client_frame(event_frames):
    if len(event_frames) == 1:
        return event_frames[0]
    return _BATCH_FRAME_START + ",".join(event_frames) + _BATCH_FRAME_END


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
    lazily, so every forked Celery pool process gets its own) and one outbox
    drained by a single coroutine, so events leave a process in the order
    they were committed and ``publish`` never waits for Redis. The loop is
    woken once per batch, not once per event.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._pid = None
        self._loop = None
        self._wakeup = None
        self._outbox = []
        self._wake_scheduled = False
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
                self._wakeup = asyncio.Event()
                loop.create_task(self._drain())
                ready.set()
                loop.run_forever()

            threading.Thread(target=run, name="agentvine-events", daemon=True).start()
            ready.wait()
            self._outbox, self._wake_scheduled, self._pending = [], False, 0
            self._loop, self._pid = loop, os.getpid()

    async def _drain(self):
        layer = get_channel_layer()
        loop = asyncio.get_running_loop()
        # A busy process sends at most one layer message per group every
        # linger_seconds: events committed meanwhile wait and go out together,
        # so each connected socket gets one frame per interval instead of one
        # per event. An event that finds the sender idle for longer goes at once.
        linger_seconds = settings.AGENTVINE_EVENTS_LINGER_SECONDS
        last_sent = float("-inf")
        while True:
            await self._wakeup.wait()
            linger = last_sent + linger_seconds - loop.time()
            if linger > 0:
                await asyncio.sleep(linger)
            with self._lock:
                batch, self._outbox = self._outbox, []
                self._wake_scheduled = False
                self._wakeup.clear()
            if not batch:
                continue
            last_sent = loop.time()
            per_group = {}
            for groups, message in batch:
                for group in groups:
                    per_group.setdefault(group, []).append(message)
            try:
                for group, messages in per_group.items():
                    for start in range(0, len(messages), _MAX_BATCH):
                        await layer.group_send(group, _layer_message(messages[start : start + _MAX_BATCH]))
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
            self._outbox.append((groups, message))
            wake, self._wake_scheduled = not self._wake_scheduled, True
        if wake:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def flush(self, timeout=5.0):
        """Wait until everything handed over so far is on the layer."""
        if self._pid != os.getpid():
            return True
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)


_sender = _LayerSender()
atexit.register(_sender.flush)
# A child forked while the parent's sender held its lock would wait on it
# forever; the child starts its own sender with a fresh one.
os.register_at_fork(after_in_child=_sender.__init__)


def flush(timeout=5.0):
    """Block until this process's committed events are on the layer (scripts, tests)."""
    return _sender.flush(timeout)


def _send(groups, message):
    if get_channel_layer() is None:
        return
    _sender.send(groups, message)


def _record(connection, *, rows, at, changes):
    """Write ``changes`` and one event row per ``(type, groups, payload_json)``;
    return the event ids, in order."""
    if connection.vendor == "postgresql":
        statements = _statements(changes, rows)
        if len(statements) == 1:
            return _record_statement(connection, *statements[0], at=at)
        # Too many parameters for one statement (a batch of thousands of
        # tasks): several, in order, in one transaction.
        with transaction.atomic(using=connection.alias):
            return [
                event_id
                for statement_changes, statement_rows in statements
                for event_id in _record_statement(connection, statement_changes, statement_rows, at=at)
            ]
    with transaction.atomic(using=connection.alias):
        with connection.cursor() as cursor:
            for sql, params in changes:
                cursor.execute(sql, params)
        return _create_events(connection, rows=rows, at=at)


# PostgreSQL's protocol counts a statement's parameters in 16 bits.
MAX_STATEMENT_PARAMS = 65535
EVENT_ROW_PARAMS = 4


def _statements(changes, rows):
    """``changes`` and event ``rows`` cut, in order, into ``(changes, rows)``
    pairs that each fit in one statement's parameters."""
    statements, batch_changes, batch_rows, count = [], [], [], 0
    for kind, item, size in [
        *(("change", change, len(change[1])) for change in changes),
        *(("row", row, EVENT_ROW_PARAMS) for row in rows),
    ]:
        if count + size > MAX_STATEMENT_PARAMS and (batch_changes or batch_rows):
            statements.append((batch_changes, batch_rows))
            batch_changes, batch_rows, count = [], [], 0
        (batch_changes if kind == "change" else batch_rows).append(item)
        count += size
    statements.append((batch_changes, batch_rows))
    return statements


def _record_statement(connection, changes, rows, *, at):
    # The changes become data-modifying CTEs of the events' INSERT:
    # PostgreSQL runs each exactly once, and one statement is atomic by
    # itself, so the writes and their events are one round trip whether
    # or not the caller has a transaction open.
    ctes = ", ".join(f"change_{n} AS ({sql})" for n, (sql, _) in enumerate(changes))
    params = [param for _, change_params in changes for param in change_params]
    if rows:
        table = connection.ops.quote_name(LiveEvent._meta.db_table)
        values = ", ".join(["(%s, %s, %s::jsonb, %s)"] * len(rows))
        sql = f"INSERT INTO {table} (type, groups, payload, created_at) VALUES {values} RETURNING id"
        params += _event_params(rows, at)
    else:
        sql = "SELECT NULL WHERE false"
    with connection.cursor() as cursor:
        cursor.execute((f"WITH {ctes} " if ctes else "") + sql, params)
        # Ids come from one sequence in VALUES order; sorted, they match
        # the rows whatever order RETURNING lists them in.
        return sorted(row[0] for row in cursor.fetchall())


def _event_params(rows, at):
    params = []
    for event_type, groups, payload_json in rows:
        params += [event_type, LiveEvent.encode_groups(groups), payload_json, at]
    return params


def _create_events(connection, *, rows, at):
    return [
        LiveEvent.objects.using(connection.alias)
        .create(
            type=event_type, groups=LiveEvent.encode_groups(groups), payload=json.loads(payload_json), created_at=at
        )
        .id
        for event_type, groups, payload_json in rows
    ]


def _guardable(sql):
    if sql.startswith("UPDATE "):
        return " WHERE " in sql
    return sql.startswith("INSERT INTO ") and " VALUES (" in sql and sql.endswith(")") and sql.count(" VALUES (") == 1


def _guarded(sql):
    """``sql`` (an UPDATE … WHERE or a one-row INSERT … VALUES) written only
    if the ``guard`` CTE returned a row."""
    if sql.startswith("UPDATE "):
        return f"{sql} AND EXISTS (SELECT 1 FROM guard)"
    head, values = sql.split(" VALUES (")
    return f"{head} SELECT {values[:-1]} WHERE EXISTS (SELECT 1 FROM guard)"


def _record_guarded(connection, *, guard, rows, at, changes):
    """:func:`_record` only if ``guard`` updates a row: ``(guarded rows,
    event ids)``, or None with nothing written."""
    model, guard_sql, guard_params = guard
    meta, _ = db.table(model)
    for sql, _ in changes:
        if not _guardable(sql):
            raise ValueError("a guarded change must be an UPDATE … WHERE … or an INSERT … VALUES (…)")
    if connection.vendor == "postgresql":
        # Every change and the events' INSERT are conditioned on the guard's
        # RETURNING: one statement, all of it or nothing.
        ctes = [f"guard AS ({guard_sql} RETURNING {meta.select_list()})"]
        ctes += [f"change_{n} AS ({_guarded(sql)})" for n, (sql, _) in enumerate(changes)]
        table = connection.ops.quote_name(LiveEvent._meta.db_table)
        values = ", ".join(["(%s::varchar, %s::text, %s::jsonb, %s::timestamptz)"] * len(rows))
        ctes.append(
            f"inserted AS (INSERT INTO {table} (type, groups, payload, created_at)"
            f" SELECT * FROM (VALUES {values}) AS event WHERE EXISTS (SELECT 1 FROM guard) RETURNING id)"
        )
        sql = f"WITH {', '.join(ctes)} SELECT guard.*, ARRAY(SELECT id FROM inserted ORDER BY id) FROM guard"
        params = [*guard_params, *(param for _, change_params in changes for param in change_params)]
        params += _event_params(rows, at)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            found = cursor.fetchall()
        if not found:
            return None
        return [meta.from_row(row[:-1], connection) for row in found], list(found[0][-1])
    with transaction.atomic(using=connection.alias):
        with connection.cursor() as cursor:
            cursor.execute(f"{guard_sql} RETURNING {meta.select_list()}", guard_params)
            found = cursor.fetchall()
            if not found:
                return None
            for sql, params in changes:
                cursor.execute(sql, params)
        return [meta.from_row(row, connection) for row in found], _create_events(connection, rows=rows, at=at)


def publish(event_type, payload, *, groups, changes=()):
    """Record ``event_type`` with ``payload`` now; send it to ``groups`` after commit.

    Every event also goes to the ``activity`` group. Returns the event id.

    ``changes`` are the writes the event announces, as ``(sql, params)``
    INSERT or UPDATE statements without RETURNING, with parameters already
    prepared for the database (``agentvine.db.update_sql``/``insert_sql``).
    They are stored together with the event or not at all: on PostgreSQL in
    the event's own statement (one round trip), elsewhere one by one in a
    transaction.
    """
    return publish_many([(event_type, payload, groups)], changes=changes)[0]


def _rows(events):
    rows = []
    for event_type, payload, groups in events:
        groups = list(dict.fromkeys([ACTIVITY_GROUP, *(str(g) for g in groups)]))
        # Serialised once: the stored payload, the replayed frame and the live
        # frame carry the same JSON (UUIDs, datetimes and Decimals as strings).
        rows.append((event_type, groups, _payload_json(payload)))
    return rows


def _send_on_commit(connection, *, event_ids, rows, at):
    for event_id, (event_type, groups, payload_json) in zip(event_ids, rows, strict=True):
        frame = _frame_text(event_id, event_type, payload_json, at)
        message = {"type": LAYER_MESSAGE_TYPE, "id": event_id, "frame": frame}
        transaction.on_commit(lambda g=groups, m=message: _send(g, m), using=connection.alias)


def publish_many(events, *, changes=()):
    """:func:`publish` for several ``(event_type, payload, groups)`` at once:
    one statement for all of them and ``changes``; ids in the given order."""
    rows = _rows(events)
    now = timezone.now()
    connection = connections[router.db_for_write(LiveEvent)]
    event_ids = _record(connection, rows=rows, at=now, changes=changes)
    _send_on_commit(connection, event_ids=event_ids, rows=rows, at=now)
    return event_ids


def publish_guarded(events, *, guard, changes=()):
    """:func:`publish_many`, all of it only if ``guard`` updates a row.

    ``guard`` is ``(model, sql, params)`` of an ``UPDATE … WHERE …`` of
    ``model`` (``agentvine.db.update_sql``), typically a compare-and-set;
    ``changes`` must be UPDATEs too, or one-row INSERTs. On PostgreSQL it is all one statement:
    a transition, its writes and its events in one round trip, atomic
    without a transaction. Returns the rows the guard updated (as ``model``
    instances), or None when it matched none and nothing was written.
    """
    rows = _rows(events)
    now = timezone.now()
    connection = connections[router.db_for_write(LiveEvent)]
    recorded = _record_guarded(connection, guard=guard, rows=rows, at=now, changes=changes)
    if recorded is None:
        return None
    guarded, event_ids = recorded
    _send_on_commit(connection, event_ids=event_ids, rows=rows, at=now)
    return guarded


def live_event_prune(*, older_than=None, batch_size=5000, max_batches=20):
    """Delete events older than ``older_than``, at most ``batch_size * max_batches``.

    Bounded so a periodic task never holds a long transaction: call it again
    (next period) to continue. Returns the number of rows deleted.
    """
    older_than = older_than or timedelta(hours=settings.AGENTVINE_LIVE_EVENT_RETENTION_HOURS)
    cutoff = timezone.now() - older_than
    # Ids grow with time: the first event at or after the cutoff bounds the
    # old ones, found by walking the primary key from the oldest row.
    boundary = LiveEvent.objects.filter(created_at__gte=cutoff).order_by("id").values_list("id", flat=True).first()
    old = LiveEvent.objects.all() if boundary is None else LiveEvent.objects.filter(id__lt=boundary)
    deleted = 0
    for _ in range(max_batches):
        ids = list(old.order_by("id").values_list("id", flat=True)[:batch_size])
        if not ids:
            break
        deleted += LiveEvent.objects.filter(id__in=ids).delete()[0]
    return deleted
