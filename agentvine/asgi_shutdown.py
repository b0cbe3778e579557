"""A graceful stop for daphne: requests in flight are answered before it exits.

Daphne stops on SIGTERM/SIGINT by cancelling every application instance and
stopping the reactor at once. A request thread inside the agents' long poll
for an answer (``chat_app.apis.agent_question_wait``, an async view the sync
chain runs on the server's loop) then waits for a loop that no longer runs,
and the interpreter waits for that thread at exit: the process never ends,
and a second signal only asks the stopped reactor to stop again.

Here the first signal starts :mod:`agentvine.shutdown` instead: the long
polls answer 503 with Retry-After at once (the ask client retries until the
server is back), other requests finish, and the reactor is stopped when no
HTTP request is in flight or ``AGENTVINE_WEB_SHUTDOWN_GRACE_SECONDS`` have
passed. A second signal stops it at once, a third ends the process.
"""

import logging
import os
import signal
import sys
import time

from django.conf import settings

from agentvine import shutdown

logger = logging.getLogger(__name__)

_DRAIN_POLL_SECONDS = 0.05


def install(handler):
    """Under daphne, make its stop signals drain ``handler``'s requests first.

    ``handler`` counts its requests in flight (``requests_in_flight``). Does
    nothing outside daphne (no Twisted reactor imported: tests, other servers).
    """
    if "twisted.internet.reactor" not in sys.modules:
        return False
    from twisted.internet import reactor

    # Twisted installs its own handlers when the reactor starts; wrap them then.
    reactor.callWhenRunning(_wrap_stop_signals, reactor, handler)
    return True


def _wrap_stop_signals(reactor, handler):
    received = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        stop_now = signal.getsignal(signum)
        if not callable(stop_now):
            continue

        def on_signal(number, frame, stop_now=stop_now):
            received.append(number)
            if len(received) == 1:
                logger.info("stopping: answering waiting requests first")
                shutdown.begin()
                deadline = time.monotonic() + settings.AGENTVINE_WEB_SHUTDOWN_GRACE_SECONDS
                reactor.callFromThread(_stop_when_drained, reactor, handler, deadline, stop_now, number)
            elif len(received) == 2:
                stop_now(number, frame)
            else:
                # The reactor was asked twice and the process is still here.
                os._exit(128 + number)

        signal.signal(signum, on_signal)


def _stop_when_drained(reactor, handler, deadline, stop_now, number):
    if handler.requests_in_flight and time.monotonic() < deadline:
        reactor.callLater(_DRAIN_POLL_SECONDS, _stop_when_drained, reactor, handler, deadline, stop_now, number)
        return
    if handler.requests_in_flight:
        logger.warning("stopping with %d requests still in flight", handler.requests_in_flight)
    stop_now(number, None)
