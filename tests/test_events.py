"""The live-event sender of agentvine.events across fork (Celery forks its pool processes)."""

import os

from agentvine import events


def test_a_process_forked_while_the_sender_holds_its_lock_can_still_send():
    sender = events._sender
    assert sender._lock.acquire(timeout=5)
    try:
        pid = os.fork()
        if pid == 0:
            # The child must not wait for a lock no thread of its own will release.
            fresh = sender._lock.acquire(timeout=2)
            os._exit(0 if fresh and sender._pid is None and sender._pending == 0 else 1)
    finally:
        sender._lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
