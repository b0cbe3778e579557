"""Chat HTTP API: operators with a session, agents with their work-order token."""

import pytest
from rest_framework.test import APIClient

from chat_app import services
from chat_app.authentication import ERR_BAD_AGENT_TOKEN
from chat_app.models import ChatMessage, DeliveryStatus
from queue_app import credentials, lifecycle
from queue_app.models import WorkOrderStatus
from tasks_app.services import task_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(operator):
    client = APIClient()
    client.force_authenticate(operator)
    return client


@pytest.fixture
def running(operator, worker):
    task = task_create(title="api task", created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    return task, work_order, execution


def _agent(work_order, execution):
    client = APIClient()
    token = credentials.agent_token_issue(work_order=work_order, execution=execution)
    client.credentials(HTTP_AUTHORIZATION=f"Agent {token}")
    return client, token


def test_everything_requires_authentication(running):
    task, _, _ = running
    anonymous = APIClient()
    for method, url in [
        ("get", "/api/v1/chat/messages/"),
        ("post", "/api/v1/chat/messages/"),
        ("post", "/api/v1/chat/batches/"),
        ("get", "/api/v1/chat/questions/pending/"),
        ("post", "/api/v1/chat/discord/"),
        ("get", "/api/v1/chat/agents/"),
        ("post", "/api/v1/chat/agent/questions/"),
        ("post", "/api/v1/chat/agent/progress/"),
    ]:
        assert getattr(anonymous, method)(url, {}, format="json").status_code in (401, 403), url
    assert not ChatMessage.objects.exists()


def test_agent_asks_operator_answers_agent_receives(api, running):
    task, work_order, execution = running
    agent, _ = _agent(work_order, execution)
    asked = agent.post("/api/v1/chat/agent/questions/", {"text": "Which branch?"}, format="json")
    assert asked.status_code == 201
    question_id = asked.json()["question_id"]
    pending = agent.get(f"/api/v1/chat/agent/questions/{question_id}/?wait=0")
    assert pending.status_code == 202 and pending.json() == {"status": "pending"}

    listed = api.get("/api/v1/chat/questions/pending/").json()
    assert listed["count"] == 1 and listed["results"][0]["text"] == "Which branch?"
    assert api.post(f"/api/v1/chat/questions/{question_id}/answer/", {"text": "main"}, format="json").status_code == 201
    again = api.post(f"/api/v1/chat/questions/{question_id}/answer/", {"text": "dev"}, format="json")
    assert again.status_code == 409
    assert again.json()["detail"] == "question already answered"

    answered = agent.get(f"/api/v1/chat/agent/questions/{question_id}/?wait=5")
    assert answered.status_code == 200
    assert answered.json() == {"status": "answered", "answer": "main"}
    answer = ChatMessage.objects.get(kind="answer")
    assert answer.status == DeliveryStatus.DELIVERED
    work_order.refresh_from_db()
    assert work_order.status == WorkOrderStatus.RUNNING


def test_agent_token_is_checked(running, operator, other_worker):
    task, work_order, execution = running
    agent, token = _agent(work_order, execution)
    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION="Agent not-a-real-token")
    response = forged.post("/api/v1/chat/agent/questions/", {"text": "hi"}, format="json")
    assert response.status_code == 401 and response.json()["detail"] == ERR_BAD_AGENT_TOKEN
    # A question of another work order cannot be read with this token.
    other_task = task_create(title="other", created_by=operator)
    other_wo = lifecycle.work_order_claim(worker=other_worker, work_order_id=other_task.work_orders.get().id)
    other_wo, other_ex = lifecycle.work_order_start(work_order=other_wo, worker=other_worker)
    foreign = services.question_ask(work_order=other_wo, execution=other_ex, text="secret?")
    assert agent.get(f"/api/v1/chat/agent/questions/{foreign.id}/?wait=0").status_code == 404
    # Operator endpoints do not accept agent tokens.
    assert agent.get("/api/v1/chat/messages/").status_code in (401, 403)
    # When the run ends the token stops working.
    credentials.agent_token_revoke(execution=execution)
    response = agent.post("/api/v1/chat/agent/questions/", {"text": "still there?"}, format="json")
    assert response.status_code == 401
    assert not ChatMessage.objects.filter(text="still there?").exists()


def test_wait_reports_a_closed_work_order(running):
    task, work_order, execution = running
    agent, token = _agent(work_order, execution)
    question_id = agent.post("/api/v1/chat/agent/questions/", {"text": "?"}, format="json").json()["question_id"]
    from tasks_app.services import task_cancel

    task_cancel(task=task)
    # The token of a finished run is dead, so the agent is told to stop asking.
    assert agent.get(f"/api/v1/chat/agent/questions/{question_id}/?wait=0").status_code == 401


def test_history_api_filters_and_paginates(api, running, operator):
    task, work_order, _ = running
    for n in range(3):
        api.post("/api/v1/chat/messages/", {"conversation_id": str(task.id), "text": f"note {n}"}, format="json")
    discord = api.post(
        "/api/v1/chat/discord/",
        {"discord_user_id": "42", "discord_username": "carol", "conversation_id": str(task.id), "text": "from discord"},
        format="json",
    )
    assert discord.status_code == 201
    assert discord.json()["sender"]["display_name"] == "carol"
    assert discord.json()["sender"]["discord_user_id"] == "42"
    page = api.get(f"/api/v1/chat/messages/?task={task.id}&limit=2").json()
    assert page["count"] == 4 and [m["text"] for m in page["results"]] == ["note 0", "note 1"]
    assert api.get("/api/v1/chat/messages/?sender=discord:42").json()["count"] == 1
    assert api.get("/api/v1/chat/messages/?q=NOTE 2").json()["count"] == 1
    assert api.get("/api/v1/chat/messages/?status=queued").json()["count"] == 4
    bad = api.get("/api/v1/chat/messages/?status=lost&since=yesterday")
    assert bad.status_code == 400 and set(bad.json()) == {"status", "since"}
    blank = api.post("/api/v1/chat/messages/", {"conversation_id": str(task.id), "text": " "}, format="json")
    assert blank.status_code == 400 and blank.json() == {"text": [services.ERR_TEXT_REQUIRED]}
    no_id = api.post("/api/v1/chat/discord/", {"conversation_id": "x", "text": "hi"}, format="json")
    assert no_id.status_code == 400
    assert ChatMessage.objects.count() == 4


def test_batch_api_and_agents_view(api, running, worker):
    task, work_order, _ = running
    response = api.post("/api/v1/chat/batches/", {"task_id": str(task.id), "texts": ["1", "2", "3"]}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert [m["inbox_position"] for m in body] == [1, 2, 3]
    assert len({m["batch_id"] for m in body}) == 1
    assert api.post("/api/v1/chat/batches/", {"task_id": str(task.id), "texts": []}, format="json").status_code == 400
    agents = api.get("/api/v1/chat/agents/").json()["results"]
    mine = next(a for a in agents if a["worker_id"] == str(worker.pk))
    assert mine["active"] and mine["task_id"] == str(task.id)


def test_waiting_agent_gets_503_with_retry_after_while_the_server_stops(running):
    from agentvine import shutdown
    from chat_app.apis import ERR_SERVER_STOPPING

    _, work_order, execution = running
    agent, _ = _agent(work_order, execution)
    question_id = agent.post("/api/v1/chat/agent/questions/", {"text": "Stay?"}, format="json").json()["question_id"]
    shutdown.begin()
    try:
        stopped = agent.get(f"/api/v1/chat/agent/questions/{question_id}/?wait=30")
    finally:
        shutdown.reset()
    assert stopped.status_code == 503
    assert stopped["Retry-After"] == "2"
    assert stopped.json() == {"status": "pending", "detail": ERR_SERVER_STOPPING}
    # The question still waits for its answer.
    assert agent.get(f"/api/v1/chat/agent/questions/{question_id}/?wait=0").status_code == 202
