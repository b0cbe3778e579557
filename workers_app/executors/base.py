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
    # The agent's own conversation id (AgentSession.session_id). With
    # ``resume`` the agent continues that conversation instead of starting it.
    session_id: str = ""
    resume: bool = False
    env: dict = field(default_factory=dict)
    # Extra command-line arguments for CLI agents (for example an MCP config).
    extra_args: list = field(default_factory=list)
    # The agent's own HOME (see executors/environment.py); executor_for sets
    # it when the caller did not.
    home: Path | None = None
    # What the run may spend before a budget stops it, in US dollars (None:
    # no budget); an agent that can stop itself at it is told (claude's
    # --max-budget-usd).
    budget_usd: float | None = None


@dataclass
class ExecutorEvent:
    """One thing the agent did. ``kind`` is one of:

    - ``output``: text for the execution's log (``text``).
    - ``tool_use``: the agent used a tool; ``text`` is a log line, ``data`` has
      ``name`` and ``input``.
    - ``question``: the agent asks a human (``text``) and waits for
      :meth:`Executor.provide_answer`; ``data`` may carry protocol ids.
    - ``usage``: ``data`` has ``input_tokens``, ``output_tokens`` and
      ``cost_usd`` to add to the execution (increments, never totals).
    - ``session``: the agent reported its conversation id (``data["session_id"]``),
      which may differ from the pre-assigned one (codex picks its own).
    - ``rate_limited``: the provider refused the agent for now; ``data`` has
      ``resets_at`` (epoch seconds, or None when it did not say) and ``reason``.
      The run stops and its concurrency key waits (queue_app.rate_limits).
    - ``completed`` / ``error``: the run ended (``data["exit_code"]`` when known).
    - ``tick``: nothing happened; lets the runner flush and check for cancel.
    """

    kind: str
    text: str = ""
    data: dict = field(default_factory=dict)


TICK = ExecutorEvent("tick")


class Executor:
    """Subclasses implement :meth:`events`, :meth:`interrupt` and :meth:`kill`;
    :meth:`send_message` and :meth:`provide_answer` where the agent supports them.

    :meth:`events` runs on the runner's thread; the other methods may be called
    from any thread while it runs.
    """

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

    def poke(self):
        """Make :meth:`events` yield (a TICK if nothing happened) as soon as it
        can: the runner has something to do now (a wake-up signal). May be
        called from any thread."""

    def send_message(self, text):
        """Deliver a follow-up message to the running agent.

        Returns False when this agent cannot take one now (not supported, or
        its input is already closed); the caller then delivers it another way.
        """
        return False

    def provide_answer(self, text):
        """Answer the last ``question`` event; False when none is pending."""
        return False


def usage_event(profile, *, input_tokens, output_tokens, cost_usd=None):
    """A ``usage`` event; without a reported cost, priced from the profile's
    ``usd_per_million_input`` / ``usd_per_million_output`` (0 when unset)."""
    if cost_usd is None:
        cost_usd = (
            input_tokens * float(profile.get("usd_per_million_input", 0))
            + output_tokens * float(profile.get("usd_per_million_output", 0))
        ) / 1_000_000
    return ExecutorEvent(
        "usage", data={"input_tokens": input_tokens, "output_tokens": output_tokens, "cost_usd": cost_usd}
    )
