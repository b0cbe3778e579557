"""Every endpoint × every kind of caller: each gets exactly what it should.

The world for each case: task T whose work order W is held by ``worker``
(claimed, or running with execution E), a session S of ``worker`` on T, and a
second queued task whose work order is free to claim. Refused requests must
change nothing.
"""

from dataclasses import dataclass

import pytest

from chat_app import services as chat_services
from chat_app.models import ChatMessage
from queue_app import lifecycle
from queue_app.models import Execution, ExecutionOutputChunk, WorkOrder
from tasks_app.models import Task
from tasks_app.services import task_create
from workers_app.models import AgentSession, ApiToken, Worker, WorkerToken
from workers_app.services import agent_session_create

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "operator", "owner", "other")


@dataclass
class World:
    task: Task
    work_order: WorkOrder
    session: AgentSession
    worker: Worker
    question: ChatMessage | None = None


@dataclass
class Case:
    method: str
    url: str
    expected: dict
    body: dict | None = None
    running: bool = True

    @property
    def id(self):
        return f"{self.method} {self.url}"


def _operator_worker_split(operator, owner, other, anonymous=401):
    return {"anonymous": anonymous, "operator": operator, "owner": owner, "other": other}


OPERATOR_ONLY = {"anonymous": 401, "operator": 200, "owner": 403, "other": 403}
OWNER_ONLY_WORKER = {"anonymous": 401, "operator": 403, "owner": 200, "other": 403}
OPERATOR_OR_OWNER = {"anonymous": 401, "operator": 200, "owner": 200, "other": 403}
ANY_CALLER = {"anonymous": 401, "operator": 200, "owner": 200, "other": 200}
AGENT_TOKEN_ONLY = {"anonymous": 401, "operator": 401, "owner": 401, "other": 401}

CASES = [
    Case("get", "/api/v1/tasks/", OPERATOR_ONLY),
    Case("post", "/api/v1/tasks/", {**OPERATOR_ONLY, "operator": 201}, {"title": "New work"}),
    Case(
        "post", "/api/v1/tasks/batch/", {**OPERATOR_ONLY, "operator": 201}, {"tasks": [{"title": "A"}, {"title": "B"}]}
    ),
    Case("get", "/api/v1/tasks/{task}/", OPERATOR_ONLY),
    Case("patch", "/api/v1/tasks/{task}/", OPERATOR_ONLY, {"title": "Renamed"}),
    Case("post", "/api/v1/tasks/{task}/cancel/", OPERATOR_ONLY),
    # Nothing failed yet: the operator is allowed but the state machine says no.
    Case("post", "/api/v1/tasks/{task}/retry/", {**OPERATOR_ONLY, "operator": 409}),
    Case("get", "/api/v1/workers/", OPERATOR_ONLY),
    Case("post", "/api/v1/workers/", {**OPERATOR_ONLY, "operator": 201}, {"name": "remote-7"}),
    Case("get", "/api/v1/workers/{worker}/", OPERATOR_OR_OWNER),
    Case("delete", "/api/v1/workers/{worker}/", OPERATOR_OR_OWNER),
    Case("post", "/api/v1/workers/{worker}/heartbeat/", OWNER_ONLY_WORKER),
    Case("get", "/api/v1/sessions/", ANY_CALLER),
    Case("post", "/api/v1/sessions/", {**OPERATOR_OR_OWNER, "operator": 201, "owner": 201}, {"session_id": "new-s"}),
    Case("get", "/api/v1/sessions/{session}/", OPERATOR_OR_OWNER),
    Case("post", "/api/v1/sessions/{session}/activity/", OPERATOR_OR_OWNER),
    Case("post", "/api/v1/sessions/{session}/terminate/", OPERATOR_OR_OWNER),
    Case("get", "/api/v1/queue/", OPERATOR_ONLY),
    Case("get", "/api/v1/spend/?group=operator", OPERATOR_ONLY),
    Case("post", "/api/v1/queue/claim/", {**OWNER_ONLY_WORKER, "other": 200}),
    Case("post", "/api/v1/queue/work-orders/", {**OPERATOR_ONLY, "operator": 201}, {"task": "{task}"}),
    Case("get", "/api/v1/queue/work-orders/{work_order}/", OPERATOR_OR_OWNER),
    Case("post", "/api/v1/queue/work-orders/{work_order}/start/", OWNER_ONLY_WORKER, running=False),
    Case("post", "/api/v1/queue/work-orders/{work_order}/complete/", OWNER_ONLY_WORKER, {"exit_code": 0}),
    Case("post", "/api/v1/queue/work-orders/{work_order}/fail/", OWNER_ONLY_WORKER, {"error": "it broke"}),
    Case("post", "/api/v1/queue/work-orders/{work_order}/output/", OWNER_ONLY_WORKER, {"seq": 0, "text": "hi\n"}),
    Case("post", "/api/v1/queue/work-orders/{work_order}/usage/", OWNER_ONLY_WORKER, {"input_tokens": 10}),
    # Still running on its owner: that run ends by completing or failing.
    Case("post", "/api/v1/queue/work-orders/{work_order}/interrupted/", {**OWNER_ONLY_WORKER, "owner": 409}),
    Case("post", "/api/v1/auth/tokens/", {**OPERATOR_ONLY, "operator": 201}, {"name": "laptop"}),
    Case("get", "/api/v1/chat/messages/", OPERATOR_ONLY),
    Case(
        "post",
        "/api/v1/chat/messages/",
        {**OPERATOR_ONLY, "operator": 201},
        {"conversation_id": "{task}", "text": "hello"},
    ),
    Case(
        "post", "/api/v1/chat/batches/", {**OPERATOR_ONLY, "operator": 201}, {"task_id": "{task}", "texts": ["a", "b"]}
    ),
    Case("get", "/api/v1/chat/questions/pending/", OPERATOR_ONLY),
    Case("post", "/api/v1/chat/questions/{question}/answer/", {**OPERATOR_ONLY, "operator": 201}, {"text": "8080"}),
    Case("post", "/api/v1/chat/conversations/{task}/read/", OPERATOR_ONLY),
    Case(
        "post",
        "/api/v1/chat/discord/",
        {**OPERATOR_ONLY, "operator": 201},
        {"discord_user_id": "42", "discord_username": "ada", "conversation_id": "{task}", "text": "hi"},
    ),
    Case("get", "/api/v1/chat/agents/", OPERATOR_ONLY),
    Case("get", "/api/v1/chat/notification-channels/", OPERATOR_ONLY),
    Case(
        "post",
        "/api/v1/chat/notification-channels/",
        {**OPERATOR_ONLY, "operator": 201},
        {"name": "hook", "kind": "webhook", "target": "https://hooks.example/in", "events": ["task_failed"]},
    ),
    # Only Slack's signature lets a slash command in: no token does.
    Case("post", "/api/v1/chat/slack/", dict.fromkeys(ROLES, 403), {"user_id": "U1", "text": "{question} yes"}),
    # Agents' own endpoints take only the per-run agent token.
    Case("post", "/api/v1/chat/agent/questions/", AGENT_TOKEN_ONLY, {"text": "Which port?"}),
    Case("post", "/api/v1/chat/agent/progress/", AGENT_TOKEN_ONLY, {"text": "half way"}),
    Case("get", "/api/v1/chat/agent/questions/{question}/", AGENT_TOKEN_ONLY),
    Case("get", "/api/v1/schema/", ANY_CALLER),
    Case("get", "/api/v1/docs/", ANY_CALLER),
]


def _build_world(worker, operator, *, running):
    task = task_create(title="Matrix task", created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().pk)
    question = None
    if running:
        work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
        question = chat_services.question_ask(work_order=work_order, execution=execution, text="Which port?")
    task_create(title="Free to claim", created_by=operator)
    session = agent_session_create(session_id="matrix-session", task=task, worker=worker)
    return World(task=task, work_order=work_order, session=session, worker=worker, question=question)


def _snapshot():
    return {
        "tasks": sorted(Task.objects.values_list("title", "status", "priority")),
        "work_orders": sorted(WorkOrder.objects.values_list("status", "worker_id", "priority")),
        "executions": sorted(Execution.objects.values_list("status", "output_chunks")),
        "chunks": ExecutionOutputChunk.objects.count(),
        "sessions": sorted(AgentSession.objects.values_list("session_id", "status", "last_activity_at")),
        "workers": sorted(Worker.objects.values_list("name", "status", "last_heartbeat_at")),
        "tokens": (WorkerToken.objects.filter(revoked_at=None).count(), ApiToken.objects.count()),
        "messages": sorted(ChatMessage.objects.values_list("id", flat=True)),
    }


def _fill(value, world):
    ids = {
        "task": world.task.pk,
        "work_order": world.work_order.pk,
        "session": world.session.pk,
        "worker": world.worker.pk,
        "question": world.question.pk if world.question else None,
    }
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {key: _fill(item, world) for key, item in value.items()}
    return value


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_authorization_matrix(
    case, role, operator, worker, anon_client, operator_client, worker_client, other_worker_client
):
    world = _build_world(worker, operator, running=case.running)
    client = {
        "anonymous": anon_client,
        "operator": operator_client,
        "owner": worker_client,
        "other": other_worker_client,
    }[role]
    if case.url == "/api/v1/sessions/" and role == "owner":
        # A worker opens sessions only for the task it is running.
        case = Case(case.method, case.url, case.expected, {"session_id": "new-s", "task": "{task}"})
    before = _snapshot()

    response = getattr(client, case.method)(_fill(case.url, world), _fill(case.body, world), format="json")

    assert response.status_code == case.expected[role], response.content[:500]
    if response.status_code in (401, 403) and case.method != "get":
        assert _snapshot() == before
    if role == "anonymous" and "/chat/agent/" not in case.url and "/chat/slack/" not in case.url:
        assert response["WWW-Authenticate"].startswith("Token")


def test_workers_list_sessions_of_their_own_work_only(operator, worker, worker_client, other_worker_client):
    _build_world(worker, operator, running=True)

    mine = worker_client.get("/api/v1/sessions/").json()["results"]
    theirs = other_worker_client.get("/api/v1/sessions/").json()["results"]

    assert [s["session_id"] for s in mine] == ["matrix-session"]
    assert theirs == []


def test_worker_cannot_open_session_for_task_it_does_not_run(operator, worker, other_worker_client):
    world = _build_world(worker, operator, running=True)

    response = other_worker_client.post(
        "/api/v1/sessions/", {"session_id": "sneaky", "task": str(world.task.pk)}, format="json"
    )

    assert response.status_code == 403
    assert not AgentSession.objects.filter(session_id="sneaky").exists()
