"""The web process's "stopping" flag, for requests that would otherwise hold it up.

A request that waits on purpose (the agent's long poll for an answer) sleeps
through :func:`sleep`, which returns early once :func:`begin` has been
called, so it can answer at once (503 with Retry-After) instead of keeping
its request thread busy while the server stops. ``agentvine.asgi_shutdown``
calls :func:`begin` on the first SIGTERM/SIGINT and stops daphne when the
requests in flight are done.

Process-wide and thread-safe: sleepers run on the server's event loop,
``begin`` may come from a signal handler or any thread.
"""

import asyncio
import threading

_stopping = threading.Event()
_lock = threading.Lock()
# (loop, asyncio.Event) of every sleeper now waiting.
_sleepers = set()


def stopping():
    """True once the process has begun to stop."""
    return _stopping.is_set()


def begin():
    """Start stopping: wake every sleeper now; later sleepers return at once."""
    with _lock:
        _stopping.set()
        sleepers = list(_sleepers)
    for loop, event in sleepers:
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:
            # Its loop is closed: nobody is left waiting there.
            pass


def reset():
    """Forget a :func:`begin` (tests, and a server started again in one process)."""
    _stopping.clear()


async def sleep(seconds):
    """Sleep ``seconds``; returns True at once (or as soon as it happens) when stopping."""
    if _stopping.is_set():
        return True
    sleeper = (asyncio.get_running_loop(), asyncio.Event())
    with _lock:
        if _stopping.is_set():
            return True
        _sleepers.add(sleeper)
    try:
        await asyncio.wait_for(sleeper[1].wait(), seconds)
    except TimeoutError:
        pass
    finally:
        with _lock:
            _sleepers.discard(sleeper)
    return _stopping.is_set()
