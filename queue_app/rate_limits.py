"""Rate limits: a refused agent pauses its concurrency key until the reset.

When a provider refuses an agent for now (claude's ``rate_limit_event`` with
status ``rejected``, or a result with ``api_error_status`` 429/529), running
on would burn retries for as long as the limit lasts. Instead the run ends
interrupted, its output and changes kept and no retry spent, and its work
order goes back to the queue with the whole key paused
(:class:`~queue_app.models.ConcurrencyKeyPause`): the key's queued work gets
``not_before`` = the reset time, so the claim passes over it while every other
key's work runs, and a doorbell with that countdown wakes each order at the
reset. The runs then resume in their sessions (``--resume``), oldest first
in line. Work enqueued for a paused key waits the same way.

A reset time that is missing, already past or more than a day away is not
trusted: the key waits ``AGENTVINE_RATE_LIMIT_BACKOFF_SECONDS`` (60) instead,
doubling with each refusal in a row that also came without one, up to
``AGENTVINE_RATE_LIMIT_BACKOFF_MAX_SECONDS`` (1800).
"""

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agentvine import events
from agentvine.errors import IllegalTransition
from queue_app import dispatch
from queue_app.models import ConcurrencyKeyPause, WorkOrder, WorkOrderStatus

# A reset further away than this is not believed.
MAX_RESET_AHEAD = timedelta(days=1)
# A refusal this long after the previous pause ended starts the backoff over.
STRIKES_FORGOTTEN_AFTER = timedelta(hours=1)


def pause_until(*, resets_at, strikes, now):
    """``(until, strikes)``: when a key refused at ``now`` may run again,
    from the provider's ``resets_at`` (epoch seconds or None), and the
    refusals in a row without a usable reset time, this one included."""
    if resets_at is not None:
        try:
            reset = datetime.fromtimestamp(float(resets_at), UTC)
        except (OverflowError, OSError, ValueError):
            reset = None
        if reset is not None and now < reset <= now + MAX_RESET_AHEAD:
            return reset, 0
    strikes += 1
    seconds = min(
        settings.AGENTVINE_RATE_LIMIT_BACKOFF_SECONDS * 2 ** (strikes - 1),
        settings.AGENTVINE_RATE_LIMIT_BACKOFF_MAX_SECONDS,
    )
    return now + timedelta(seconds=seconds), strikes


def key_pause(*, key, resets_at, reason, now=None):
    """Pause ``key`` (see the module): returns when it runs again. Its queued
    work waits until then and is rung then; an event tells who watches."""
    now = now or timezone.now()
    with transaction.atomic():
        pause = ConcurrencyKeyPause.objects.select_for_update().filter(key=key).first()
        strikes = 0
        if pause is not None and pause.paused_until + STRIKES_FORGOTTEN_AFTER > now:
            strikes = pause.strikes
        until, strikes = pause_until(resets_at=resets_at, strikes=strikes, now=now)
        if pause is not None and pause.paused_until > until:
            until = pause.paused_until  # a later reset another run heard of stands
        ConcurrencyKeyPause.objects.update_or_create(
            key=key, defaults={"paused_until": until, "reason": reason[:200], "strikes": strikes}
        )
        waiting = list(
            WorkOrder.objects.filter(status=WorkOrderStatus.QUEUED, concurrency_key=key)
            .exclude(not_before__gte=until)
            .values_list("pk", flat=True)
        )
        WorkOrder.objects.filter(pk__in=waiting, status=WorkOrderStatus.QUEUED).update(not_before=until)
        countdown = (until - now).total_seconds()
        for pk in waiting:
            dispatch.dispatch_on_commit(pk, countdown=countdown)
        events.publish(
            "key.rate_limited",
            {"key": key, "until": until.isoformat(), "reason": reason[:200], "waiting": len(waiting)},
            groups=[],
        )
    return until


def rate_limited_keys(*, now=None):
    """The keys paused now, soonest reset first: ``[{key, until, reason}]``."""
    rows = ConcurrencyKeyPause.objects.filter(paused_until__gt=now or timezone.now()).order_by("paused_until")
    return [{"key": p.key, "until": p.paused_until, "reason": p.reason} for p in rows]


ERR_NOT_PAUSED = "key {key} is not paused"


def key_pause_lift(*, key, by="", now=None):
    """End ``key``'s pause now (an operator knows the limit is back): its
    work waiting for the reset may start at once, in its place in line.
    Returns how many work orders were rung."""
    now = now or timezone.now()
    with transaction.atomic():
        pause = ConcurrencyKeyPause.objects.select_for_update().filter(key=key, paused_until__gt=now).first()
        if pause is None:
            raise IllegalTransition(ERR_NOT_PAUSED.format(key=key))
        waiting = list(
            WorkOrder.objects.filter(status=WorkOrderStatus.QUEUED, concurrency_key=key)
            .filter(not_before__gt=now, not_before__lte=pause.paused_until)
            .values_list("pk", flat=True)
        )
        WorkOrder.objects.filter(pk__in=waiting, status=WorkOrderStatus.QUEUED).update(not_before=None)
        ConcurrencyKeyPause.objects.filter(key=key).update(paused_until=now, strikes=0)
        for pk in waiting:
            dispatch.dispatch_on_commit(pk)
        events.publish("key.resumed", {"key": key, "by": by, "waiting": len(waiting)}, groups=[])
    return len(waiting)
