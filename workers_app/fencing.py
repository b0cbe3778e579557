"""Self-fencing: a run that cannot renew its lease stops its agent by itself.

A host cut off from PostgreSQL (or a remote worker from the API) cannot hear
that a guardian requeued its work: without a fence its agent would go on
beside the copy that runs elsewhere, both on the task's branch. The fence is
a watchdog thread beside the loop that drives the agent, because that loop
may itself hang for minutes in a query on a half-open connection: once no
renewal has succeeded for nearly AGENTVINE_FENCE_SECONDS (less than the time
a guardian waits before it requeues, see settings) it interrupts the agent's
process group and kills it shortly after, so the agent is gone within
AGENTVINE_FENCE_SECONDS of the last renewal, and marks the run fenced. The runner
then abandons the run and writes nothing more of it; the guardian takes the
work back. No Django import: the remote pull worker uses it too.
"""

import logging
import threading
import time

logger = logging.getLogger(__name__)

# After the interrupt, at most this long (and a sixth of the fence) for the
# agent to stop before it is killed.
KILL_AFTER_SECONDS = 1.0


class Fence:
    """The fence of one run driven by ``executor``: :meth:`renewed` after
    every successful lease renewal; :attr:`fenced` is set once it fired."""

    def __init__(self, *, executor, seconds, name):
        self.executor = executor
        self.seconds = seconds
        self.name = name
        self.kill_after = min(KILL_AFTER_SECONDS, seconds / 6)
        self.tick = min(0.25, seconds / 8)
        # Silence is counted from the last renewal that landed, which came
        # before the cut: firing this much early, with the kill that follows,
        # has the agent gone within ``seconds`` of the cut at the latest.
        self.fire_after = seconds - self.kill_after - self.tick
        self.renewed_at = time.monotonic()
        self.fenced = threading.Event()
        self.reason = ""
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"agentvine-fence-{name}", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def renewed(self):
        self.renewed_at = time.monotonic()

    def fence(self, reason):
        """Stop the agent now and mark the run fenced (once)."""
        if self.fenced.is_set():
            return
        self.reason = reason
        self.fenced.set()
        logger.warning("run %s fenced: %s; stopping its agent", self.name, reason)
        self.executor.interrupt()
        self._closed.wait(self.kill_after)
        self.executor.kill()

    def close(self):
        self._closed.set()

    def _watch(self):
        while not self._closed.wait(self.tick):
            silent = time.monotonic() - self.renewed_at
            if silent > self.fire_after:
                self.fence(f"lease not renewed for {silent:.1f}s")
                return
