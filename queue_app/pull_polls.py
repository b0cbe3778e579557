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
