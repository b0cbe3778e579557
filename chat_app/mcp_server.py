"""An MCP server (stdio) giving an agent ``ask_human``, ``report_progress``,
``create_subtask`` and ``wait_for_subtasks`` (``chat_app.subtasks``).

Started by the agent CLI from its MCP config, inside the agent's environment
(``AGENTVINE_API_URL`` and ``AGENTVINE_TOKEN`` set by the runner)::

    {"mcpServers": {"agentvine": {"command": "python", "args": ["-m", "chat_app.mcp_server"]}}}

Tools talk to AgentVine over the same authenticated HTTP endpoints as the
``agentvine-ask`` command.
"""

import json

import anyio
from mcp.server.mcpserver import MCPServer

from chat_app import subtask_client
from chat_app.ask_client import AgentVineClient, AskError

server = MCPServer(
    "agentvine",
    instructions=(
        "Use ask_human when you need a decision or information only a person has; it blocks until "
        "someone answers. Use report_progress to tell the operators what you are doing. Use "
        "create_subtask to split your work and wait_for_subtasks to get their results as your next turn."
    ),
)


@server.tool()
async def ask_human(question: str) -> str:
    """Ask the human operators a question and wait for their answer (may take minutes)."""
    try:
        return await anyio.to_thread.run_sync(AgentVineClient().ask, question)
    except AskError as exc:
        return f"could not get an answer: {exc}"


@server.tool()
async def report_progress(message: str) -> str:
    """Tell the operators, in one line, what you are doing now."""
    try:
        await anyio.to_thread.run_sync(AgentVineClient().report_progress, message)
    except AskError as exc:
        return f"could not report progress: {exc}"
    return "reported"


@server.tool()
async def create_subtask(title: str, description: str = "", depends_on: list[str] | None = None) -> str:
    """Split your work: create a subtask (another agent runs it). ``depends_on``: ids of your other
    subtasks that must complete first. Returns the new subtask's id."""
    try:
        created = await anyio.to_thread.run_sync(
            subtask_client.subtask_create, title, description, tuple(depends_on or ())
        )
    except AskError as exc:
        return f"could not create the subtask: {exc}"
    return created["id"]


@server.tool()
async def wait_for_subtasks() -> str:
    """Wait for your subtasks. Unless they have all ended already, end your turn after this call:
    you are resumed in this conversation with their summaries as your next message."""
    try:
        return await anyio.to_thread.run_sync(subtask_client.subtasks_wait)
    except AskError as exc:
        return f"could not wait for subtasks: {exc}"


PERMISSION_QUESTION = "Allow {tool} with {input}? Answer allow or deny (words after deny are passed on as the reason)."
ALLOW_WORDS = frozenset({"allow", "allowed", "yes", "y", "ok", "approve"})


@server.tool()
async def approve_tool(tool_name: str, input: dict, tool_use_id: str = "") -> str:
    """Claude Code's ``--permission-prompt-tool``: a human allows or denies a tool call.

    Answers in the JSON Claude Code expects: ``{"behavior": "allow",
    "updatedInput": …}`` or ``{"behavior": "deny", "message": …}``."""
    question = PERMISSION_QUESTION.format(tool=tool_name, input=json.dumps(input, ensure_ascii=False)[:2000])
    try:
        answer = await anyio.to_thread.run_sync(AgentVineClient().ask, question)
    except AskError as exc:
        return json.dumps({"behavior": "deny", "message": f"no human could be asked: {exc}"})
    verdict, _, reason = answer.strip().partition(" ")
    if verdict.lower().strip(".!,") in ALLOW_WORDS:
        return json.dumps({"behavior": "allow", "updatedInput": input})
    return json.dumps({"behavior": "deny", "message": reason.strip() or "denied by the operator"})


def main():
    server.run("stdio")


if __name__ == "__main__":
    main()
