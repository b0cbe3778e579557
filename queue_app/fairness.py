"""Fair sharing and aging: the order in which claims serve queued work.

The claim takes the first ready work order by ``(priority_rank, line_at,
enqueued_at)``.

**Fair sharing within a priority.** ``line_at`` is an order's place in its
priority's line, in seconds (a virtual clock, start-time fair queueing). A
work order is placed one quantum after the last queued order of its fairness
key (``fair_key``: the task's creator, or the agent that made it) and never
before the head of its priority's line. So the keys with queued work take
turns: operator A's 200 queued orders sit at ``h, h+q, h+2q, …`` and operator
B's 5, queued afterwards, at ``h, h+q, …`` too, so B's first starts second,
not 201st. One key alone is served first in, first out, as before.
:func:`line_places` places the orders being queued in one read (the heads
and the keys' last places); two enqueues of one key at the same instant may
share a place, and ``enqueued_at`` breaks the tie. Work put back in the queue
for no fault of its own (a lost worker, a preemption, a shutdown) keeps its
place; a retry, an operator's retry or a new priority is placed anew.

**Aging.** Low work must still move under a constant stream of high work.
An order that has waited ``AGENTVINE_PRIORITY_AGING_SECONDS`` moves up one
priority level, and again after as long once more (normal after one period,
high after two, for low work), keeping its place in the line: it is then
older than the new work of its new level, so it goes first. Its priority
label stays (preemption still counts only work queued as high). The aging
runs with the preemption guardian (every 5 s), so a low order waits at most
``2 × AGENTVINE_PRIORITY_AGING_SECONDS`` plus a guardian interval before it is
first in line of the high level, however much high work keeps coming.
"""

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Case, F, IntegerField, Value, When
from django.utils import timezone

from agentvine import db
from queue_app.models import ConcurrencyKeyPause, WorkOrder, WorkOrderStatus
from tasks_app.models import PRIORITY_RANK

# The claim's order (and everything that reports a place in line).
LINE_ORDER = ("priority_rank", "line_at", "enqueued_at")
# A key's next order goes this far (seconds of the line's clock) behind its last.
QUANTUM_SECONDS = 0.001


def fair_key_for(task):
    """The fairness key of ``task``'s work: its creator (or its agent)."""
    if task.created_by_id is not None:
        return f"user:{task.created_by_id}"
    if task.created_by_agent:
        return f"agent:{task.created_by_agent}"[:100]
    return ""


def line_at(at=None):
    """The place in line of work queued ``at`` (now) with nobody ahead of it:
    seconds since the epoch (:func:`line_places` moves it to its fair place)."""
    return (at or timezone.now()).timestamp()


def line_places(work_orders, *, exclude=()):
    """Set the fair ``line_at`` of ``work_orders`` (being queued, in order;
    each has its ``priority_rank``, ``fair_key`` and a baseline ``line_at``),
    from one read of the lines as they are; ``exclude``: ids not to count
    (the orders themselves when already written). Returns ``{key: until}``
    of their concurrency keys paused now by a rate limit
    (queue_app.rate_limits), read in the same statement: queueing work
    costs one read."""
    if not work_orders:
        return {}
    heads, lasts, paused = _line_ends(
        {order.priority_rank for order in work_orders},
        {order.fair_key for order in work_orders},
        {order.concurrency_key for order in work_orders if order.concurrency_key},
        exclude,
    )
    for order in work_orders:
        rank, key = order.priority_rank, order.fair_key
        place = order.line_at if order.line_at is not None else line_at()
        head = heads.get(rank)
        if head is not None and head < place:
            place = head  # never before the head of the line, but not behind it either
        last = lasts.get((rank, key))
        if last is not None and last + QUANTUM_SECONDS > place:
            place = last + QUANTUM_SECONDS
        order.line_at = place
        lasts[(rank, key)] = place
        if head is None or place < head:
            heads[rank] = place
    return paused


def line_place(*, priority_rank, fair_key, at=None, exclude=()):
    """The fair ``line_at`` of one order queued ``at`` (now) anew."""
    order = WorkOrder(priority_rank=priority_rank, fair_key=fair_key, line_at=line_at(at))
    line_places([order], exclude=exclude)
    return order.line_at


# The third branch of _line_ends's statement: a pause's end, in seconds since the epoch.
_EPOCH = {
    "postgresql": "EXTRACT(EPOCH FROM {})",
    "sqlite": "(julianday({}) - 2440587.5) * 86400.0",
}


def _line_ends(ranks, keys, concurrency_keys, exclude):
    """``({rank: head}, {(rank, key): last}, {concurrency key: paused until})``
    of the queued lines and the keys' rate-limit pauses, in one statement."""
    table, connection = db.table(WorkOrder)
    pauses, _ = db.table(ConcurrencyKeyPause)
    c, p = table.columns, pauses.columns
    ranks, keys, concurrency_keys = sorted(ranks), sorted(keys), sorted(concurrency_keys)
    exclude = [table.prepare("pk", pk, connection) for pk in exclude]
    in_ranks = ", ".join(["%s"] * len(ranks))
    in_keys = ", ".join(["%s"] * len(keys))
    queued = f"{c['status']} = '{WorkOrderStatus.QUEUED.value}' AND {c['priority_rank']} IN ({in_ranks})"
    if exclude:
        queued += f" AND {c['pk']} NOT IN ({', '.join(['%s'] * len(exclude))})"
    sql = (
        f"SELECT {c['priority_rank']}, NULL, MIN({c['line_at']}) FROM {table.name} WHERE {queued}"
        f" GROUP BY {c['priority_rank']}"
        f" UNION ALL SELECT {c['priority_rank']}, {c['fair_key']}, MAX({c['line_at']}) FROM {table.name}"
        f" WHERE {queued} AND {c['fair_key']} IN ({in_keys}) GROUP BY {c['priority_rank']}, {c['fair_key']}"
    )
    params = [*ranks, *exclude, *ranks, *exclude, *keys]
    if concurrency_keys:
        until = _EPOCH[connection.vendor].format(p["paused_until"])
        sql += (
            f" UNION ALL SELECT -1, {p['key']}, {until} FROM {pauses.name}"
            f" WHERE {p['key']} IN ({', '.join(['%s'] * len(concurrency_keys))}) AND {p['paused_until']} > %s"
        )
        params += [*concurrency_keys, pauses.prepare("paused_until", timezone.now(), connection)]
    heads, lasts, paused = {}, {}, {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for rank, key, at in cursor.fetchall():
            if rank == -1:
                paused[key] = datetime.fromtimestamp(float(at), UTC)
            elif key is None:
                heads[rank] = at
            else:
                lasts[(rank, key)] = at
    return heads, lasts, paused


def queued_work_age(*, now=None):
    """Move up one priority level every queued order that has waited its
    turn (see the module's docstring); returns how many moved."""
    seconds = settings.AGENTVINE_PRIORITY_AGING_SECONDS
    if seconds <= 0:
        return 0
    now = now or timezone.now()
    # Levels an order may have climbed by now: 1 per period waited.
    climbed = Case(
        *(When(priority=priority, then=Value(rank) - F("priority_rank")) for priority, rank in PRIORITY_RANK.items()),
        default=Value(0),
        output_field=IntegerField(),
    )
    moved = 0
    for levels in range(max(PRIORITY_RANK.values())):
        moved += (
            WorkOrder.objects.filter(
                status=WorkOrderStatus.QUEUED,
                priority_rank__gt=0,
                enqueued_at__lte=now - timedelta(seconds=seconds * (levels + 1)),
            )
            .alias(climbed=climbed)
            .filter(climbed=levels)
            .update(priority_rank=F("priority_rank") - 1)
        )
    return moved
