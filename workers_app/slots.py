"""Each Celery pool process is one execution slot with its own Worker row.

The slot registers when its process starts, heartbeats from a daemon thread
while alive, and marks itself offline on a clean shutdown. Its name is stable
across restarts (``<node name>:<pool index>``), so a replaced child process
takes over its predecessor's row instead of leaving ghosts behind.
"""

import logging
import os
import socket
import threading

from celery.signals import (
    celeryd_after_setup,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutting_down,
)
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connection, connections

from agentvine.redis_client import one_connection_per_process, shared_redis_disconnect
from agentvine.wakeups import node_shutdown_announce, node_shutdown_clear, wakeups_start
from workers_app.host_work import host_cleanups_ring, host_queue
from workers_app.services import worker_heartbeat, worker_mark_offline, worker_register

logger = logging.getLogger(__name__)

_state = {"nodename": None, "agent_slots": True, "worker": None, "stop": None}
_lock = threading.Lock()


@celeryd_after_setup.connect
def _remember_nodename(sender, instance=None, **kwargs):
    # Runs in the parent before the pool forks, so children inherit it.
    _state["nodename"] = sender
    # Connections persist across tasks (CELERY_DB_REUSE_MAX): the parent must
    # hold none when it forks, or every child would share its socket.
    connections.close_all()
    if instance is not None:
        # A worker consuming only the guardians queue runs no agents: its
        # processes are not execution slots and must not look like idle ones.
        consumed = set(instance.app.amqp.queues.consume_from or ())
        _state["agent_slots"] = not consumed or bool(consumed & set(settings.AGENT_QUEUES))
    if _state["agent_slots"]:
        # A node restarting under the same name is not shutting down.
        node_shutdown_clear(nodename=sender)
        shared_redis_disconnect()
        if instance is not None:
            # Work that must happen where this host's files are comes on a
            # queue of its own (workers_app.host_work), with no -Q to add.
            instance.app.amqp.queues.select_add(host_queue(sender))


@worker_ready.connect
def _drain_host_work(sender, **kwargs):
    # What this host was asked to do while it was away: its slots drain it.
    if _state["agent_slots"]:
        host_cleanups_ring(host=sender.hostname)


def node_name():
    return _state["nodename"]


@worker_shutting_down.connect
def _announce_shutdown(sender, how=None, **kwargs):
    # Runs in the parent's signal handler: the children keep running their
    # agents through a warm shutdown and only learn of it from this message
    # (workers_app/runner.py then finishes or interrupts-and-requeues within
    # AGENTVINE_SHUTDOWN_GRACE_SECONDS). A thread, because a signal handler
    # must not block on the network.
    if how != "Warm" or not _state["agent_slots"]:
        return

    threading.Thread(target=node_shutdown_announce, kwargs={"nodename": sender}, name="agentvine-shutdown").start()


def _slot_name():
    from billiard.process import current_process

    index = getattr(current_process(), "index", None)
    nodename = _state["nodename"] or f"celery@{socket.gethostname()}"
    return f"{nodename}:{index if index is not None else os.getpid()}"


def _heartbeat_loop(stop, owner):
    # The slot's one PostgreSQL connection serves its heartbeat too
    # (agentvine.postgresql): a beat waits while the slot is in a statement or
    # a transaction, which are short; a slot stuck in a query on a dead link
    # beats no more, as a cut-off host should not.
    shared = _share_connection(owner)
    while not stop.wait(settings.AGENTVINE_HEARTBEAT_SECONDS):
        try:
            with shared:
                worker = _state["worker"]
                if worker is not None and not worker_heartbeat(worker=worker):
                    _state["worker"] = worker_register(name=worker.name, hostname=worker.hostname, pid=os.getpid())
        except Exception:
            logger.warning("heartbeat failed; retrying next interval", exc_info=True)
        finally:
            # A borrower lets go of the connection after each beat: the owner
            # may replace it (a restart, a cut link) before the next one.
            connection.close()
    connection.close()


class _OwnConnection:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _share_connection(owner):
    """The lock to hold around a beat on ``owner``'s connection, from this
    thread; its own connection where the backend cannot share (SQLite, a
    pool: there each thread takes a connection of the pool)."""
    if not hasattr(owner, "lend") or settings.DATABASES[owner.alias].get("OPTIONS", {}).get("pool"):
        return _OwnConnection()
    connection.borrow(owner)
    return connection.use_lock


def current_worker():
    """The Worker row of this process's slot, registering it on first use."""
    with _lock:
        if _state["worker"] is None:
            _state["worker"] = worker_register(
                name=_slot_name(), hostname=socket.gethostname(), pid=os.getpid(), new_process=True
            )
            stop = threading.Event()
            _state["stop"] = stop
            threading.Thread(
                target=_heartbeat_loop,
                args=(stop, connections[DEFAULT_DB_ALIAS]),
                name="agentvine-heartbeat",
                daemon=True,
            ).start()
        return _state["worker"]


def use_generic_plans():
    """Let PostgreSQL keep one generic plan per prepared statement on this
    process's connections opened from now on (see DATABASE_PLAN_CACHE_MODE in settings).

    A slot's statements pin one row by its key (``agentvine.db``), so their
    generic plan is the one a custom plan would pick, without planning again.
    """
    for alias in connections:
        options = connections.settings[alias].get("OPTIONS", {})
        if options.get("options", "").startswith(settings.PLAN_CACHE_MODE_OPTION):
            options["options"] = f"{settings.PLAN_CACHE_MODE_OPTION}auto"


@worker_process_init.connect
def _on_process_init(**kwargs):
    # Connections inherited from the parent must not be shared across fork.
    close_old_connections()
    connection.close()
    if not _state["agent_slots"]:
        return
    use_generic_plans()
    one_connection_per_process()

    wakeups_start(nodename=node_name())
    try:
        current_worker()
    except Exception:
        logger.exception("slot registration failed; will retry on first task")
    finally:
        # Celery's Django fix-up also handles this signal, after us: it takes
        # any open connection of this thread for one inherited from the parent
        # and closes its file descriptor by number. Meanwhile the heartbeat and
        # live-event threads started above open sockets of their own, and one
        # that got that number was cut or had a Postgres goodbye written into
        # it (lost events, refused connections). Closed here, there is nothing
        # left for it to close.
        connection.close()


@task_prerun.connect
def _checked_connection(**kwargs):
    # Connections outlive tasks (CELERY_DB_REUSE_MAX): like a web request,
    # each task starts by dropping a connection that is broken or past
    # CONN_MAX_AGE, so a PostgreSQL restart between tasks fails no task.
    close_old_connections()


@worker_process_shutdown.connect
def _on_process_shutdown(**kwargs):

    worker = _state["worker"]
    if worker is None:
        return
    if _state["stop"] is not None:
        _state["stop"].set()
    try:
        worker_mark_offline(worker=worker, reason="clean shutdown")
    except Exception:
        logger.warning("could not mark %s offline", worker.name, exc_info=True)
