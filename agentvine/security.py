"""Hardening of the processes that hold the platform's secrets.

An agent runs as a child of a worker, as the same user. Whatever the agent's
own environment holds (workers_app/executors/environment.py), the worker's
environment and memory still hold ``DATABASE_URL``, ``SECRET_KEY`` and the
rest, and Linux lets any process of the same user read them through
``/proc/<pid>/environ`` and ``/proc/<pid>/mem`` (or attach a debugger).
A non-dumpable process is exempt: those files belong to root and ptrace is
refused to other processes of its user. Root (or CAP_SYS_PTRACE) still gets
through, which is why workers should run as an unprivileged user.

The flag is inherited by forked children (Celery's pool processes) and reset
by exec, so agents themselves stay ordinary processes.
"""

import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def process_protect():
    """Make this process non-dumpable; True when it is (False where Linux's prctl is missing)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            logger.warning("could not make this process non-dumpable: errno %s", ctypes.get_errno())
            return False
    except (OSError, AttributeError):
        return False
    return True


def process_is_protected():
    if not sys.platform.startswith("linux"):
        return False
    return _libc().prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0
