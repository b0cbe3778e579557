"""The MCP server an agent starts over stdio: real subprocess, real daphne API."""

import asyncio
import os
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


def test_mcp_tools_ask_human_and_report_progress(daphne_server, channel_layer, operator, worker):
    task = task_create(title="mcp agent", created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    token = credentials.agent_token_issue(work_order=work_order, execution=execution)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "chat_app.mcp_server"],
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT), "AGENTVINE_API_URL": daphne_server.url, "AGENTVINE_TOKEN": token},
    )
    answerer = threading.Thread(target=_answer_when_asked, args=(task, operator))
    answerer.start()

    async def body():
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            names = sorted(tool.name for tool in (await session.list_tools()).tools)
            assert names == ["ask_human", "report_progress"]
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
