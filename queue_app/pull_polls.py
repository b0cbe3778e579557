"""A remote pull worker's periodic calls, one statement each: its heartbeat
and its idle claim poll.

A fleet of pull workers sends these all the time: 1,000 workers heartbeat
333 times a second and poll for work about as often. ``bench/fleet.py``
justifies the hand-built SQL: the ORM's heartbeat was four statements (the
worker's UPDATE, the leases' UPDATE, their re-read and the worker's re-read)
and an idle poll opened a transaction to find nothing. On PostgreSQL each
call here is one statement that also checks the caller's worker token when
given its hash, so a revoked token stops working on its very next call;
other vendors (the embedded SQLite) take the ORM's several statements.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from queue_app.models import Execution, ExecutionStatus, WorkOrder, WorkOrderStatus
from workers_app.models import Worker, WorkerStatus, WorkerToken


@dataclass(frozen=True)
class Heartbeat:
    """What one heartbeat found and did.

    ``authorised`` is False when the worker is gone or the token given was
    revoked (nothing was written then); ``status`` is None when the worker
    is offline (a guardian gave up on it: nothing was written either, and
    coming back is :func:`workers_app.services.worker_heartbeat`'s job);
    ``leases`` maps the id of each run it drives that is still live to the
    run's new lease expiry."""

    authorised: bool
    status: str | None
    leases: dict


def worker_heartbeat_record(*, worker_id, key_hash=None, now=None):
    """Record a heartbeat of worker ``worker_id`` (holding the worker token
    with sha256 ``key_hash``, when given) and renew the leases of its running
    executions: a run not renewed is no longer this worker's (requeued under
    it) and its agent must stop (``workers_app.fencing``)."""
    now = now or timezone.now()
    until = now + timedelta(seconds=settings.AGENTVINE_LEASE_SECONDS)
    if connection.vendor != "postgresql":
        return _heartbeat_orm(worker_id=worker_id, key_hash=key_hash, now=now, until=until)
    token_check = ""
    params = {"worker": worker_id, "now": now, "until": until, "offline": WorkerStatus.OFFLINE}
    params["running"] = ExecutionStatus.RUNNING
    if key_hash is not None:
        token_check = (
            f" AND EXISTS (SELECT 1 FROM {WorkerToken._meta.db_table} t"
            " WHERE t.key_hash = %(hash)s AND t.worker_id = w.id AND t.revoked_at IS NULL)"
        )
        params["hash"] = key_hash
    workers, executions = Worker._meta.db_table, Execution._meta.db_table
    # One statement, one snapshot: a run requeued concurrently is either
    # renewed and listed (the requeue then ends it: the next heartbeat fences
    # it) or neither, never renewed but missing.
    sql = (
        f"WITH caller AS (SELECT w.id FROM {workers} w WHERE w.id = %(worker)s{token_check}),"
        f" beat AS (UPDATE {workers} w SET last_heartbeat_at = %(now)s FROM caller"
        "  WHERE w.id = caller.id AND w.status <> %(offline)s RETURNING w.id, w.status),"
        f" renewed AS (UPDATE {executions} e SET lease_expires_at = %(until)s FROM beat"
        "  WHERE e.worker_id = beat.id AND e.status = %(running)s RETURNING e.id)"
        " SELECT EXISTS (SELECT 1 FROM caller), (SELECT status FROM beat), ARRAY(SELECT id FROM renewed)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        authorised, status, renewed = cursor.fetchone()
    return Heartbeat(authorised, status, {str(pk): until for pk in renewed})


def _heartbeat_orm(*, worker_id, key_hash, now, until):
    with transaction.atomic():
        callers = Worker.objects.filter(pk=worker_id)
        if key_hash is not None:
            callers = callers.filter(tokens__key_hash=key_hash, tokens__revoked_at__isnull=True)
        if not callers.exists():
            return Heartbeat(False, None, {})
        live = Worker.objects.filter(pk=worker_id).exclude(status=WorkerStatus.OFFLINE)
        if not live.update(last_heartbeat_at=now):
            return Heartbeat(True, None, {})
        runs = Execution.objects.filter(worker_id=worker_id, status=ExecutionStatus.RUNNING)
        renewed = list(runs.values_list("pk", flat=True))
        runs.filter(pk__in=renewed).update(lease_expires_at=until)
        status = live.values_list("status", flat=True).first()
    return Heartbeat(True, status, {str(pk): until for pk in renewed})


def worker_heartbeats_record(beats, *, now=None):
    """:func:`worker_heartbeat_record` for many heartbeats at once, each a
    ``(worker id, token hash)``: one statement for them all on PostgreSQL
    (the web's fast path sends the heartbeats that arrived while the last
    batch ran). Returns one :class:`Heartbeat` per beat, in order."""
    now = now or timezone.now()
    if connection.vendor != "postgresql":
        return [worker_heartbeat_record(worker_id=w, key_hash=h, now=now) for w, h in beats]
    until = now + timedelta(seconds=settings.AGENTVINE_LEASE_SECONDS)
    workers, executions, tokens = Worker._meta.db_table, Execution._meta.db_table, WorkerToken._meta.db_table
    # The workers' rows are locked in id order before they are updated: two
    # web processes' batches naming the same workers wait for each other
    # instead of deadlocking.
    sql = (
        "WITH beats AS (SELECT * FROM unnest(%(workers)s::uuid[], %(hashes)s::text[]) AS b(worker_id, key_hash)),"
        f" checked AS (SELECT b.worker_id, b.key_hash FROM beats b JOIN {tokens} t"
        "  ON t.key_hash = b.key_hash AND t.worker_id = b.worker_id AND t.revoked_at IS NULL),"
        f" locked AS (SELECT w.id FROM {workers} w WHERE w.id IN (SELECT worker_id FROM checked)"
        "  AND w.status <> %(offline)s ORDER BY w.id FOR NO KEY UPDATE),"
        f" beat AS (UPDATE {workers} w SET last_heartbeat_at = %(now)s FROM locked"
        "  WHERE w.id = locked.id AND w.status <> %(offline)s RETURNING w.id, w.status),"
        f" renewed AS (UPDATE {executions} e SET lease_expires_at = %(until)s FROM beat"
        "  WHERE e.worker_id = beat.id AND e.status = %(running)s RETURNING e.id, e.worker_id)"
        " SELECT c.worker_id, c.key_hash, beat.status,"
        "  ARRAY(SELECT r.id FROM renewed r WHERE r.worker_id = c.worker_id)"
        " FROM checked c LEFT JOIN beat ON beat.id = c.worker_id"
    )
    params = {
        "workers": [str(w) for w, _ in beats],
        "hashes": [h for _, h in beats],
        "now": now,
        "until": until,
        "offline": WorkerStatus.OFFLINE,
        "running": ExecutionStatus.RUNNING,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        found = {(str(w), h): (status, renewed) for w, h, status, renewed in cursor.fetchall()}
    answers = []
    for worker_id, key_hash in beats:
        if (str(worker_id), key_hash) not in found:
            answers.append(Heartbeat(False, None, {}))
            continue
        status, renewed = found[(str(worker_id), key_hash)]
        answers.append(Heartbeat(True, status, {str(pk): until for pk in renewed}))
    return answers


def work_orders_claim_possible(polls, *, now=None):
    """:func:`work_order_claim_possible` for many polls at once, each a
    ``(worker id, token hash)``: one statement. Returns ``(authorised of
    each poll, how many work orders are ready)``, counted up to one a poll."""
    now = now or timezone.now()
    if connection.vendor != "postgresql":
        answers = [work_order_claim_possible(worker_id=w, key_hash=h, now=now) for w, h in polls]
        ready = Q(not_before__isnull=True) | Q(not_before__lte=now)
        return [a for a, _ in answers], WorkOrder.objects.filter(ready, status=WorkOrderStatus.QUEUED)[
            : len(polls)
        ].count()
    sql = (
        f"SELECT ARRAY(SELECT t.key_hash FROM {WorkerToken._meta.db_table} t"
        "  JOIN unnest(%(workers)s::uuid[], %(hashes)s::text[]) AS p(worker_id, key_hash)"
        "  ON t.key_hash = p.key_hash AND t.worker_id = p.worker_id WHERE t.revoked_at IS NULL),"
        f" (SELECT count(*) FROM (SELECT 1 FROM {WorkOrder._meta.db_table}"
        "  WHERE status = %(queued)s AND (not_before IS NULL OR not_before <= %(now)s) LIMIT %(most)s) ready)"
    )
    params = {
        "most": len(polls),
        "workers": [str(w) for w, _ in polls],
        "hashes": [h for _, h in polls],
        "queued": WorkOrderStatus.QUEUED,
        "now": now,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        live, ready = cursor.fetchone()
    live = set(live)
    return [h in live for _, h in polls], ready


def worker_token_owners(key_hashes):
    """``{token hash: worker id}`` of the live worker tokens among ``key_hashes``."""
    return {
        h: str(w)
        for h, w in WorkerToken.objects.filter(key_hash__in=key_hashes, revoked_at__isnull=True).values_list(
            "key_hash", "worker_id"
        )
    }


def work_order_claim_possible(*, worker_id, key_hash, now=None):
    """``(authorised, possible)`` for an idle pull worker's claim poll:
    whether worker ``worker_id`` holds the live worker token ``key_hash``,
    and whether any work order is ready to claim at all. When none is, the
    claim (``queue_app.lifecycle.work_order_claim``) would find nothing and
    write nothing: the poll is answered without it."""
    now = now or timezone.now()
    ready = Q(not_before__isnull=True) | Q(not_before__lte=now)
    if connection.vendor != "postgresql":
        authorised = WorkerToken.objects.filter(
            worker_id=worker_id, key_hash=key_hash, revoked_at__isnull=True
        ).exists()
        return authorised, WorkOrder.objects.filter(ready, status=WorkOrderStatus.QUEUED).exists()
    sql = (
        f"SELECT EXISTS (SELECT 1 FROM {WorkerToken._meta.db_table}"
        "  WHERE key_hash = %(hash)s AND worker_id = %(worker)s AND revoked_at IS NULL),"
        f" EXISTS (SELECT 1 FROM {WorkOrder._meta.db_table}"
        "  WHERE status = %(queued)s AND (not_before IS NULL OR not_before <= %(now)s))"
    )
    params = {"hash": key_hash, "worker": worker_id, "queued": WorkOrderStatus.QUEUED, "now": now}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        authorised, possible = cursor.fetchone()
    return authorised, possible


def worker_token_owner(*, key_hash):
    """The id of the worker holding the live worker token ``key_hash``, or None."""
    return (
        WorkerToken.objects.filter(key_hash=key_hash, revoked_at__isnull=True)
        .values_list("worker_id", flat=True)
        .first()
    )
