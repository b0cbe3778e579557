"""Beat entry points for the guardians (scheduled in the django-celery-beat
tables, routed to the ``guardians`` queue). Thin: the logic lives in
workers_app/guardians.py. Each returns counts so a run is visible in logs."""

from celery import shared_task

from chat_app import notifications
from workers_app import guardians, host_work
from workers_app.slots import node_name


@shared_task(name="workers_app.guard_stalled_workers", ignore_result=True)
def guard_stalled_workers():
    offline, requeued = guardians.guard_stalled_workers()
    return {"offline": len(offline), "requeued": len(requeued)}


@shared_task(name="workers_app.guard_idle_sessions", ignore_result=True)
def guard_idle_sessions():
    # Sessions' workspaces are what host cleanups remove: the same guardian
    # gives up on those of hosts that never came back.
    return {"terminated": len(guardians.guard_idle_sessions()), "cleanups_expired": host_work.host_cleanups_expire()}


@shared_task(name="workers_app.guard_lost_dispatches", ignore_result=True)
def guard_lost_dispatches():
    # Lost notification doorbells are rung again here too, and agents gone
    # quiet are told of (chat_app/notifications.py).
    redispatched, quiet = notifications.notifications_guard()
    return {"dispatched": len(guardians.guard_lost_dispatches()), "notifications": redispatched, "quiet": quiet}


@shared_task(name="workers_app.guard_broker_reset", ignore_result=True)
def guard_broker_reset():
    return {"dispatched": len(guardians.guard_broker_reset())}


@shared_task(name="workers_app.guard_priority_preemption", ignore_result=True)
def guard_priority_preemption():
    return {"preempting": len(guardians.guard_priority_preemption())}


@shared_task(name=host_work.DRAIN_TASK, ignore_result=True)
def host_cleanups_drain(host):
    """Routed to ``host.<host>``: only that host's slots run it."""
    if host != node_name():
        return {"done": 0, "not_here": host}
    return {"done": host_work.host_cleanups_drain(host=host)}
