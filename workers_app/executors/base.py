"""The executor interface: a work order in, a stream of typed events out.

Executors never touch the database; the runner consumes their events,
persists them in batches and drives the work order's state machine.
"""

from dataclasses import dataclass, field
from pathlib import Path


class ExecutorConfigError(Exception):
    """The executor cannot start: missing binary, bad profile, no endpoint.

    Retrying cannot fix configuration, so the work order fails at once.
    """


@dataclass
class RunContext:
    task_id: str
    work_order_id: str
    prompt: str
    workspace: Path
    profile: dict
    time_limit: float
    session_id: str = ""
    env: dict = field(default_factory=dict)


@dataclass
class ExecutorEvent:
    """kind is one of: output, tool_use, question, usage, completed, error, tick."""

    kind: str
    text: str = ""
    data: dict = field(default_factory=dict)


TICK = ExecutorEvent("tick")


class Executor:
    """Subclasses implement :meth:`events`, :meth:`interrupt` and :meth:`kill`."""

    def __init__(self, context: RunContext):
        self.context = context

    def events(self):
        """Yield ExecutorEvents; yield TICK at least every half second while idle
        so the runner can flush output and notice cancellation."""
        raise NotImplementedError

    def interrupt(self):
        """Ask the agent to stop cooperatively (it may save partial work)."""
        raise NotImplementedError

    def kill(self):
        """Stop the agent now."""
        raise NotImplementedError
