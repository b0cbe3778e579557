"""The agent's side of subtasks (stdlib only, like ``chat_app.ask_client``):
create a subtask of the agent's own task, and wait for them."""

from chat_app.ask_client import AgentVineClient, AskError

# What an agent is told after asking to wait: end the turn, the answer comes as the next one.
WAIT_NOTE = (
    "{pending} subtask(s) still running. End your turn now: you will be resumed in this same "
    "conversation with every subtask's summary as your next message."
)


def subtask_create(title, description="", depends_on=(), *, client=None):
    """Create a subtask; returns ``{"id", "title", "status"}``."""
    client = client or AgentVineClient()
    body = {"title": title, "description": description, "depends_on": list(depends_on)}
    status, payload = client._with_retries("POST", "/api/v1/chat/agent/subtasks/", body)
    if status != 201:
        raise AskError(f"subtask refused ({status}): {payload.get('detail') or payload}")
    return payload


def subtasks_wait(*, client=None):
    """Ask to wait for this task's subtasks; returns what to tell the agent."""
    client = client or AgentVineClient()
    status, payload = client._with_retries("POST", "/api/v1/chat/agent/subtasks/wait/", {})
    if status != 200:
        raise AskError(f"wait refused ({status}): {payload.get('detail') or payload}")
    if payload["waiting"]:
        return WAIT_NOTE.format(pending=payload["pending"])
    return payload["summary"]
