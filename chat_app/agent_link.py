"""What the runner needs from the chat side while an agent runs.

- :func:`agent_environment`: the variables that let the agent ask a human
  (``agentvine-ask`` on PATH, the API URL, a per-work-order token).
- :func:`executor_question`: an executor's own ``question`` event (e.g. a
  function call of an OpenAI-compatible model) becomes a stored question; the
  runner blocks here until a person answers or the work stops.
- :func:`inbox_deliver_to_executor`: hands queued operator messages, in
  order, to executors that accept follow-up messages (claude over stdin).
- :func:`next_turn_prompt`: a ``deliver_message`` run takes the queued
  messages, in order, as the agent's prompt.
"""

import os
import time
from pathlib import Path

from django.conf import settings

from chat_app import selectors, services
from chat_app.models import SenderProfile
from queue_app.models import WorkOrderStatus

AGENT_BIN_DIR = Path(__file__).resolve().parent / "agent_bin"
# How often a runner waiting for an answer re-reads the question row.
ANSWER_POLL_SECONDS = 0.25


def agent_environment(*, work_order, token):
    """The run's environment: where to reach AgentVine and its agent ``token``."""
    return {
        "AGENTVINE_API_URL": settings.AGENTVINE_API_URL,
        "AGENTVINE_ASK_CONNECT_SECONDS": f"{settings.AGENTVINE_ASK_CONNECT_SECONDS:g}",
        "AGENTVINE_TOKEN": token,
        "AGENTVINE_WORK_ORDER_ID": str(work_order.pk),
        "AGENTVINE_TASK_ID": str(work_order.task_id),
        "PATH": f"{AGENT_BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def executor_question(*, work_order, execution, text, deadline, on_wait=None, sleep=time.sleep):
    """Ask, then wait for the answer; ``None`` if the work stopped or time ran out.

    ``sleep(seconds)`` waits between looks; the runner's returns early when
    the answer's wake-up signal comes, so the look is then at once."""
    question = services.question_ask(work_order=work_order, execution=execution, text=text, source="executor")
    while True:
        answered_at, answer_text, status = selectors.question_state(question_id=question.pk)
        if answered_at is not None:
            services.answer_mark_delivered(question=question)
            return answer_text
        if status not in (WorkOrderStatus.RUNNING, WorkOrderStatus.WAITING) or time.monotonic() > deadline:
            return None
        if on_wait is not None:
            on_wait()
        sleep(ANSWER_POLL_SECONDS)


def inbox_deliver_to_executor(*, task, executor):
    """Deliver the agent's queued messages through ``executor.send_message`` in order.

    An executor that cannot take a message now returns False and the inbox
    stays queued for the agent's next turn.
    """
    send_message = getattr(executor, "send_message", None)
    if send_message is None:
        return []
    recipient = SenderProfile.objects.filter(key=f"agent:{task.pk}").first()
    if recipient is None:
        return []
    return services.inbox_deliver(recipient=recipient, deliver=lambda message: send_message(message.text))


def next_turn_prompt(*, task, execution=None):
    """Take the agent's queued messages (marked delivered to ``execution``, in
    order) as a prompt.

    Returns None when nothing is queued (another run took them first).
    """
    recipient = SenderProfile.objects.filter(key=f"agent:{task.pk}").first()
    if recipient is None:
        return None
    taken = services.inbox_deliver(recipient=recipient, deliver=lambda message: True, execution=execution)
    if not taken:
        return None
    return "\n".join(f"{message.sender.display_name}: {message.text}" for message in taken)


def ask_failed(*, work_order, reason):
    """The agent's ask client gave up reaching the API: tell the operators."""
    return services.question_failed(work_order=work_order, reason=reason)


def agent_next_turn(*, task):
    services.agent_next_turn(task=task)
