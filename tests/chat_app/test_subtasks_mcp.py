"""create_subtask and wait_for_subtasks over MCP: the real agentvine MCP server
(a subprocess speaking stdio) against a real daphne."""

import asyncio
import os
import sys

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from queue_app import credentials, lifecycle
from tasks_app.models import Task, TaskDependency
from tasks_app.services import task_create
from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_mcp_agent_creates_three_subtasks_and_waits(daphne_server, operator, worker):
    task = task_create(title="mcp parent", created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    token = credentials.agent_token_issue(work_order=work_order, execution=execution)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "chat_app.mcp_server"],
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT), "AGENTVINE_API_URL": daphne_server.url, "AGENTVINE_TOKEN": token},
    )

    async def body():
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            first = (await session.call_tool("create_subtask", {"title": "one", "description": "d1"})).content[0].text
            await session.call_tool("create_subtask", {"title": "two"})
            await session.call_tool("create_subtask", {"title": "three", "depends_on": [first]})
            stranger = await session.call_tool("create_subtask", {"title": "x", "depends_on": [str(task.pk)]})
            waited = await session.call_tool("wait_for_subtasks", {})
            return first, stranger.content[0].text, waited.content[0].text

    first, stranger, waited = asyncio.run(body())

    children = Task.objects.filter(spawned_by=task).order_by("created_at")
    assert [c.title for c in children] == ["one", "two", "three"]
    assert str(children[0].pk) == first
    assert TaskDependency.objects.get(child=children[2]).parent_id == children[0].pk
    assert stranger.startswith("could not create the subtask") and "only subtasks of this task" in stranger
    assert waited.startswith("3 subtask(s) still running. End your turn now")
    assert Task.objects.get(pk=task.pk).awaiting_subtasks
