"""A real daphne stops at once while an agent waits for a human (SIGTERM
answers the long poll 503 with Retry-After), and the agent's real ask client
keeps waiting across the restart and gets the answer."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from chat_app import selectors, services
from chat_app.apis import ERR_SERVER_STOPPING
from queue_app import credentials, lifecycle
from tasks_app.services import task_create
from tests.chat_app.conftest import DaphneServer
from tests.conftest import ROOT, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.django_db(transaction=True)]

# Stopping with nothing in flight takes ~1 s; the bar leaves room for a busy machine.
STOP_SECONDS = 5


@pytest.fixture
def running_task(operator, worker):
    task = task_create(title="asks a human", created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    return task, credentials.agent_token_issue(work_order=work_order, execution=execution)


def _call(url, token, method="GET", body=None, timeout=90):
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Agent {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"{}")


def _sigterm_and_wait(server):
    """SIGTERM daphne; the seconds it took to exit (fails past STOP_SECONDS)."""
    started = time.monotonic()
    os.kill(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"daphne still running {STOP_SECONDS}s after SIGTERM:\n{server.output()}")
    return time.monotonic() - started


def test_sigterm_answers_a_waiting_ask_503_and_daphne_exits(tmp_path, running_task):
    _, token = running_task
    server = DaphneServer(tmp_path / "daphne.log")
    try:
        status, _, asked = _call(f"{server.url}/api/v1/chat/agent/questions/", token, "POST", {"text": "ok?"})
        assert status == 201
        url = f"{server.url}/api/v1/chat/agent/questions/{asked['question_id']}/?wait=60"
        results = []
        waiter = threading.Thread(target=lambda: results.append(_call(url, token)))
        waiter.start()
        time.sleep(1.5)
        assert not results, "the request is in its long poll"

        _sigterm_and_wait(server)
        waiter.join(5)

        status, headers, body = results[0]
        assert status == 503
        assert int(headers["Retry-After"]) >= 1
        assert body == {"status": "pending", "detail": ERR_SERVER_STOPPING}
        assert server.process.returncode is not None
    finally:
        server.stop()


def test_ask_client_keeps_waiting_across_a_web_restart(tmp_path, running_task, operator):
    task, token = running_task
    server = DaphneServer(tmp_path / "daphne-1.log")
    # The real agentvine-ask command, as an agent runs it.
    agent = subprocess.Popen(
        [sys.executable, str(ROOT / "chat_app" / "agent_bin" / "agentvine-ask"), "Which colour?"],
        env={**os.environ, "AGENTVINE_API_URL": server.url, "AGENTVINE_TOKEN": token},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    restarted = None
    try:
        question = wait_for(lambda: selectors.pending_questions().filter(task=task).first(), message="the question")
        time.sleep(1.0)  # the client is in its long poll

        _sigterm_and_wait(server)
        assert f'"GET /api/v1/chat/agent/questions/{question.id}/?wait=' in server.output()
        assert "503" in server.output().rsplit("/?wait=", 1)[1].splitlines()[0], server.output()
        time.sleep(3.0)  # down for a while: the client retries meanwhile
        assert agent.poll() is None, agent.communicate()

        restarted = DaphneServer(tmp_path / "daphne-2.log", port=server.port)
        services.question_answer(
            question=question, answer_text="teal", answered_by=services.operator_profile(user=operator)
        )
        out, err = agent.communicate(timeout=30)
        assert agent.returncode == 0, err
        assert out.strip() == "teal"
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        server.stop()
        if restarted:
            restarted.stop()
