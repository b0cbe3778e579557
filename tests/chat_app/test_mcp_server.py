"""The MCP server an agent starts over stdio: real subprocess, real daphne API."""

import asyncio
import os
import shutil
import sys
import threading

import pytest
from django.db import connection
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from chat_app import selectors, services
from chat_app.models import ChatMessage, MessageKind
from queue_app import credentials, lifecycle
from tasks_app.services import task_create
from tests.conftest import ROOT, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _answer_when_asked(task, operator):
    try:
        question = wait_for(lambda: selectors.pending_questions().filter(task=task).first(), message="question")
        services.question_answer(
            question=question, answer_text="use SQLite", answered_by=services.operator_profile(user=operator)
        )
    finally:
        connection.close()


def _running_order(operator, worker):
    task = task_create(title="mcp agent", created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    return task, work_order, credentials.agent_token_issue(work_order=work_order, execution=execution)


def test_mcp_tools_ask_human_and_report_progress(daphne_server, channel_layer, operator, worker):
    task, _, token = _running_order(operator, worker)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "chat_app.mcp_server"],
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT), "AGENTVINE_API_URL": daphne_server.url, "AGENTVINE_TOKEN": token},
    )
    _ask_and_report(params, task, operator)


def test_agentvine_mcp_on_an_agents_path_works_in_its_allowlisted_environment(
    daphne_server, channel_layer, operator, worker, tmp_path, settings
):
    """What an agent CLI configured with {"command": "agentvine-mcp"} starts, in its workspace."""
    from chat_app.agent_link import agent_environment
    from workers_app.executors.base import RunContext
    from workers_app.executors.environment import agent_environment as allowlisted

    settings.AGENTVINE_API_URL = daphne_server.url
    task, work_order, token = _running_order(operator, worker)
    context = RunContext(
        task_id=str(task.id),
        work_order_id=str(work_order.id),
        prompt="",
        workspace=tmp_path,
        profile={},
        time_limit=30,
        env=agent_environment(work_order=work_order, token=token),
        home=tmp_path / "home",
    )
    env = allowlisted(context).variables
    assert "PYTHONPATH" not in env
    params = StdioServerParameters(command=shutil.which("agentvine-mcp", path=env["PATH"]), cwd=str(tmp_path), env=env)
    _ask_and_report(params, task, operator)


def _ask_and_report(params, task, operator):
    answerer = threading.Thread(target=_answer_when_asked, args=(task, operator))
    answerer.start()

    async def body():
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            names = sorted(tool.name for tool in (await session.list_tools()).tools)
            assert names == ["approve_tool", "ask_human", "create_subtask", "report_progress", "wait_for_subtasks"]
            progress = await session.call_tool("report_progress", {"message": "reading the code"})
            assert progress.content[0].text == "reported"
            answer = await asyncio.wait_for(session.call_tool("ask_human", {"question": "Which DB?"}), 30)
            return answer.content[0].text

    try:
        assert asyncio.run(body()) == "use SQLite"
    finally:
        answerer.join()
    assert ChatMessage.objects.get(kind=MessageKind.PROGRESS).text == "reading the code"
    assert ChatMessage.objects.get(kind=MessageKind.QUESTION).text == "Which DB?"
