"""Concurrency keys: at most N active runs of a key at once, whatever the slots.

A work order counts against two keys, fixed when the order is made: its
executor profile's ``concurrency_key`` (default: the profile's name), and its
``scope_key``: the key its task names (``Task.concurrency_key``), else its
repository's, ``repo:<url>`` (the first 100 characters), else none. Limits
come from AGENTVINE_CONCURRENCY_LIMITS by key (``repo:*`` is the default of
every repository key) or from the profile's ``concurrency``. A key with a limit has a
:class:`~queue_app.models.ConcurrencyLimit` row whose ``running`` count a
database trigger keeps (migration 0009): every status change into or out of
claimed/running/waiting moves it, so no transition path can forget a seat.

The claim passes over work whose key is full (:func:`ready_sql`), so the work
stays queued in its place and other keys' work runs; a claim that races
another for a key's last seat is refused by the trigger (it re-checks under
the key row's lock) and the claimer tries again (:func:`is_key_full`). When a
limited run ends, the next queued order of its key gets a doorbell
(:func:`next_in_key_on_commit`): the doorbells that found its key full have
been spent on other work meanwhile.
"""

import time

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q

from agentvine import db
from queue_app import dispatch
from queue_app.models import ACTIVE_STATUSES, ConcurrencyLimit, WorkOrder, WorkOrderStatus

# The trigger's message (migration 0009) when a claim would overfill a key.
ERR_KEY_FULL = "concurrency key full"
# A claim that lost the race for a key's last seat tries this many times more.
CLAIM_ATTEMPTS = 3
# How long a process trusts its list of the keys that have a limit.
LIMITED_KEYS_SECONDS = 10.0
_limited = {"keys": frozenset(), "read_at": float("-inf")}
# A repository's key: this and its URL.
REPOSITORY_PREFIX = "repo:"


def concurrency_key_for(executor):
    """``(key, limit or None)`` of the executor profile named ``executor``."""
    name = executor or settings.AGENTVINE_DEFAULT_EXECUTOR
    profile = settings.AGENTVINE_EXECUTORS.get(name) or {}
    key = str(profile.get("concurrency_key") or name)[:100]
    limit = settings.AGENTVINE_CONCURRENCY_LIMITS.get(key, profile.get("concurrency"))
    return key, None if limit is None else int(limit)


def scope_key_for(task):
    """``(key, limit or None)``: the second key of ``task``'s runs (see the
    module), or ``("", None)``. A key equal to the profile's counts once."""
    if task.concurrency_key:
        key = task.concurrency_key[:100]
    elif task.repository_url:
        key = f"{REPOSITORY_PREFIX}{task.repository_url}"[:100]
    else:
        return "", None
    if key == concurrency_key_for(task.executor)[0]:
        return "", None
    limits = settings.AGENTVINE_CONCURRENCY_LIMITS
    limit = limits.get(key)
    if limit is None and key.startswith(REPOSITORY_PREFIX) and not task.concurrency_key:
        limit = limits.get(f"{REPOSITORY_PREFIX}*")
    return key, None if limit is None else int(limit)


def limits_changes(limits):
    """Changes (``(sql, params)``) that set ``limits`` ({key: limit}) on the
    keys' rows, counting the active work of a key whose row is new."""
    if not limits:
        return []
    # This process knows these keys are limited from now on, whatever its cache read.
    _limited["keys"] = _limited["keys"] | frozenset(limits)
    table, connection = db.table(ConcurrencyLimit)
    orders, _ = db.table(WorkOrder)
    c, o = table.columns, orders.columns
    active = ", ".join(f"'{status.value}'" for status in ACTIVE_STATUSES)
    count = (
        f"(SELECT COUNT(*) FROM {orders.name} WHERE %s IN ({o['concurrency_key']}, {o['scope_key']})"
        f" AND {o['status']} IN ({active}))"
    )
    changes = []
    for key, limit in sorted(limits.items()):
        changes.append(
            (
                f"INSERT INTO {table.name} ({c['key']}, {c['max_running']}, {c['running']}) VALUES (%s, %s, {count})"
                f" ON CONFLICT ({c['key']}) DO UPDATE SET {c['max_running']} = excluded.{c['max_running']}",
                [key, limit, key],
            )
        )
    return changes


def ready_sql(table_name):
    """A condition for a claim's WHERE: neither key of the order (a row of
    ``table_name``) is full.

    The full keys are read once per claim (an InitPlan array), not once per
    queued row passed over: with 10,000 queued behind full keys that is the
    difference between an anti-join per row and a comparison with a few
    keys (bench/fairness.py)."""
    table, _ = db.table(ConcurrencyLimit)
    orders, _ = db.table(WorkOrder)
    c, o = table.columns, orders.columns
    full = f"ARRAY(SELECT {c['key']} FROM {table.name} WHERE {c['running']} >= {c['max_running']})"
    return (
        f"{table_name}.{o['concurrency_key']} <> ALL ({full})"
        f" AND ({table_name}.{o['scope_key']} = '' OR {table_name}.{o['scope_key']} <> ALL ({full}))"
    )


def full_keys():
    """The full keys, for an ORM claim's ``exclude(concurrency_key__in=…)``."""
    return ConcurrencyLimit.objects.filter(running__gte=F("max_running")).values("key")


def keys_ready():
    """An ORM filter (``Q``): neither key of the order is full."""
    return ~Q(concurrency_key__in=full_keys()) & ~Q(scope_key__in=full_keys())


def is_key_full(error):
    """Whether a database error is the trigger refusing a full key's claim."""
    return ERR_KEY_FULL in str(error)


def next_in_key_on_commit(*, work_order_id, key=None, scope_key=""):
    """After commit (at once outside a transaction), ring the doorbell of the
    first queued order sharing the limited key of ``work_order_id`` (a run of
    it ended, a seat is free). Given its ``key``, an unlimited one costs no
    read: the limited keys are cached for LIMITED_KEYS_SECONDS (a key limited
    meanwhile gets its doorbells from the lost-dispatch guardian)."""
    if key is not None and key not in _limited_keys() and (not scope_key or scope_key not in _limited_keys()):
        return
    transaction.on_commit(lambda: _ring_next_in_key(work_order_id))


def _limited_keys():
    now = time.monotonic()
    if now - _limited["read_at"] > LIMITED_KEYS_SECONDS:
        _limited["keys"] = frozenset(ConcurrencyLimit.objects.values_list("key", flat=True))
        _limited["read_at"] = now
    return _limited["keys"]


def _ring_next_in_key(work_order_id):
    ended = WorkOrder.objects.filter(pk=work_order_id).values_list("concurrency_key", "scope_key").first()
    if ended is None:
        return
    for key in ConcurrencyLimit.objects.filter(key__in=[key for key in ended if key]).values_list("key", flat=True):
        # The first queued order of each limited key of the ended run (one
        # per key: a run of both frees a seat in each).
        following = (
            WorkOrder.objects.filter(Q(concurrency_key=key) | Q(scope_key=key), status=WorkOrderStatus.QUEUED)
            .order_by("priority_rank", "line_at", "enqueued_at")
            .values_list("pk", flat=True)
            .first()
        )
        if following is not None:
            dispatch.work_order_dispatch(work_order_id=following)
