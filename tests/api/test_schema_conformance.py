"""The OpenAPI schema tells the truth: real requests to every operation, and
the responses they get, validate against what ``/api/v1/schema/`` documents
for that operation (its own request body, the status code, the response body).

The requests are the authorization matrix's (tests/api/test_authorization.py)
as a caller allowed to make them, plus the agent's and Slack's own endpoints;
the last test checks that together they reached every documented operation
with a success. The schema is OpenAPI 3.0, turned into JSON Schema 2020-12
(``nullable``) and checked with jsonschema, formats included.
"""

import hashlib
import hmac
import re
import time
import urllib.parse

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from chat_app import notifications
from queue_app import credentials, lifecycle
from tasks_app.services import task_cancel, task_create
from tests.api.conftest import token_client
from tests.api.test_authorization import CASES, _build_world, _fill

pytestmark = pytest.mark.django_db

_schema = {}
REACHED = set()


def _json_schema(node):
    """OpenAPI 3.0's ``nullable`` → a JSON Schema ``anyOf`` with null."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def schema(client):
    if not _schema:
        document = client.get("/api/v1/schema/?format=json").json()
        _schema["document"] = document
        _schema["components"] = _json_schema(document["components"])
        # Fixed paths first: /tasks/batch/ is not /tasks/{task_id}/.
        _schema["routes"] = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path)
            for path in sorted(document["paths"], key=lambda path: path.count("{"))
        ]
    return _schema


def _validate(instance, node, where):
    root = {**_json_schema(node), "components": _schema["components"]}
    errors = sorted(Draft202012Validator(root, format_checker=FormatChecker()).iter_errors(instance), key=str)
    assert not errors, f"{where}: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def checked(client, method, url, body=None, *, content_type="application/json", **extra):
    """Send a request, validating it and its response against the schema."""
    spec = schema(client)
    path = urllib.parse.urlsplit(url).path
    template = next((template for pattern, template in spec["routes"] if pattern.match(path)), None)
    assert template is not None, f"{path} is not in the schema"
    operation = spec["document"]["paths"][template].get(method)
    assert operation is not None, f"{method.upper()} {template} is not in the schema"
    where = f"{method.upper()} {template}"
    if body is not None:
        documented = operation.get("requestBody", {}).get("content", {})
        assert content_type in documented, f"{where}: no {content_type} request body documented"
        form = content_type == "application/x-www-form-urlencoded"
        if content_type != "application/octet-stream":  # bytes: documented as binary, nothing to validate
            _validate(dict(urllib.parse.parse_qsl(body)) if form else body, documented[content_type]["schema"], where)
    send = getattr(client, method)
    if body is None:
        response = send(url, **extra)
    elif content_type == "application/json":
        response = send(url, body, format="json", **extra)
    else:
        response = send(url, body, content_type=content_type, **extra)
    responses = operation["responses"]
    assert str(response.status_code) in responses, f"{where}: status {response.status_code} is not documented"
    content = responses[str(response.status_code)].get("content", {})
    is_json = response.get("Content-Type", "").startswith("application/json")
    if response.status_code != 204 and is_json and "application/json" in content:
        _validate(response.json(), content["application/json"]["schema"], f"{where} → {response.status_code}")
    if 200 <= response.status_code < 300:
        REACHED.add((method, template))
    return response


def _allowed_role(case):
    for role in ("operator", "owner"):
        if 200 <= case.expected[role] < 300:
            return role
    return None


SUCCESSFUL = [case for case in CASES if _allowed_role(case) and case.url != "/api/v1/docs/"]


@pytest.mark.parametrize("case", SUCCESSFUL, ids=lambda case: case.id)
def test_a_real_request_and_its_response_match_the_schema(case, operator, worker, operator_client, worker_client):
    world = _build_world(worker, operator, running=case.running)
    role = _allowed_role(case)
    client = operator_client if role == "operator" else worker_client
    body = _fill(case.body, world)
    if case.url == "/api/v1/sessions/" and role == "owner":
        body = {"session_id": "new-s", "task": str(world.task.pk)}

    response = checked(client, case.method, _fill(case.url, world), body)

    assert response.status_code == case.expected[role]


def test_the_agents_and_slacks_own_endpoints_match_the_schema(operator, worker, operator_client, client, settings):
    schema(operator_client)
    task = task_create(title="Agent", created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().pk)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    agent = token_client("")
    agent.credentials(
        HTTP_AUTHORIZATION=f"Agent {credentials.agent_token_issue(work_order=work_order, execution=execution)}"
    )

    assert checked(agent, "post", "/api/v1/chat/agent/progress/", {"text": "half way"}).status_code == 201
    asked = checked(agent, "post", "/api/v1/chat/agent/questions/", {"text": "Which port?"})
    question_id = asked.json()["question_id"]
    assert checked(agent, "get", f"/api/v1/chat/agent/questions/{question_id}/?wait=0").status_code == 202

    settings.AGENTVINE_SLACK_SIGNING_SECRET = "secret"
    body = urllib.parse.urlencode({"user_id": "U1", "user_name": "grace", "text": f"{question_id} 8080"})
    stamp = str(int(time.time()))
    signature = "v0=" + hmac.new(b"secret", f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
    slack = checked(
        client,
        "post",
        "/api/v1/chat/slack/",
        body,
        content_type="application/x-www-form-urlencoded",
        HTTP_X_SLACK_REQUEST_TIMESTAMP=stamp,
        HTTP_X_SLACK_SIGNATURE=signature,
    )
    assert slack.status_code == 200
    assert checked(agent, "get", f"/api/v1/chat/agent/questions/{question_id}/?wait=0").json()["answer"] == "8080"

    channel = notifications.notification_channel_create(
        owner=operator, name="hook", kind="webhook", target="https://hooks.example/in", events=["task_failed"]
    )
    assert checked(operator_client, "delete", f"/api/v1/chat/notification-channels/{channel.pk}/").status_code == 204


def test_retry_and_interrupted_match_the_schema(operator, worker, operator_client, worker_client):
    """The two operations the matrix only reaches in a state that refuses them."""
    schema(operator_client)
    failed = task_create(title="Fails", created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=failed.work_orders.get().pk)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    lifecycle.work_order_fail(work_order=work_order, worker=worker, execution=execution, error="x", retryable=False)
    assert checked(operator_client, "post", f"/api/v1/tasks/{failed.pk}/retry/").status_code == 200

    cancelled = task_create(title="Cancelled", created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=cancelled.work_orders.get().pk)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    task_cancel(task=cancelled)
    url = f"/api/v1/queue/work-orders/{work_order.pk}/interrupted/"
    assert checked(worker_client, "post", url, {"reason": "stopped"}).status_code == 200


def test_graph_schedules_subtasks_and_results_match_the_schema(
    operator, worker, operator_client, worker_client, settings, tmp_path
):
    """Task graphs and schedules (tasks_app/graph.py, schedules.py), an agent's
    subtasks, and a run's results: a real bundle from a real workspace."""
    from tests.tasks_app.test_results_server import running_execution, worked_branch

    schema(operator_client)
    parent = task_create(title="Parent", created_by=operator)
    child = task_create(title="Child", created_by=operator, depends_on=[str(parent.pk)])
    other = task_create(title="Other parent", created_by=operator)
    assert checked(operator_client, "get", f"/api/v1/tasks/{child.pk}/dependencies/").status_code == 200
    added = checked(operator_client, "post", f"/api/v1/tasks/{child.pk}/dependencies/", {"depends_on": [str(other.pk)]})
    assert added.status_code == 201
    skip = f"/api/v1/tasks/{child.pk}/dependencies/{other.pk}/skip/"
    assert checked(operator_client, "post", skip).status_code == 200
    assert checked(operator_client, "get", f"/api/v1/tasks/{parent.pk}/tree/").status_code == 200

    template = {"name": "nightly", "cron": "0 2 * * *", "title": "Hunt flaky tests"}
    created = checked(operator_client, "post", "/api/v1/schedules/", template)
    assert created.status_code == 201
    one = f"/api/v1/schedules/{created.json()['id']}/"
    assert checked(operator_client, "get", "/api/v1/schedules/").status_code == 200
    assert checked(operator_client, "get", one).status_code == 200
    assert checked(operator_client, "put", one, {**template, "cron": "0 3 * * *"}).status_code == 200
    assert checked(operator_client, "delete", one).status_code == 204

    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=parent.work_orders.get().pk)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    agent = token_client("")
    agent.credentials(
        HTTP_AUTHORIZATION=f"Agent {credentials.agent_token_issue(work_order=work_order, execution=execution)}"
    )
    assert checked(agent, "post", "/api/v1/chat/agent/subtasks/", {"title": "Half of it"}).status_code == 201
    assert checked(agent, "post", "/api/v1/chat/agent/subtasks/wait/").status_code == 200

    settings.AGENTVINE_WORKSPACE_ROOT = tmp_path / "workspaces"
    settings.AGENTVINE_RESULTS_ROOT = tmp_path / "results"
    task, execution = running_execution(operator, worker)
    snapshot, bundle, _ = worked_branch(task, tmp_path)
    upload = f"/api/v1/executions/{execution.pk}/bundle/?base={snapshot.base_commit}"
    sent = checked(worker_client, "post", upload, bundle.read_bytes(), content_type="application/octet-stream")
    assert sent.status_code == 201
    assert checked(operator_client, "get", f"/api/v1/executions/{execution.pk}/diff/").status_code == 200
    assert checked(operator_client, "get", f"/api/v1/tasks/{task.pk}/changes/").status_code == 200
    fetched = checked(worker_client, "get", f"/api/v1/executions/{execution.pk}/bundle/")
    assert fetched.status_code == 200 and fetched["X-AgentVine-Head"] == snapshot.head_commit
    lifecycle.work_order_complete(work_order=execution.work_order, worker=worker, execution=execution)
    review = f"/api/v1/tasks/{task.pk}/review/"
    assert checked(operator_client, "post", review, {"action": "request_changes", "comment": "More"}).status_code == 200
    running = f"/api/v1/tasks/{parent.pk}/review/"
    assert checked(operator_client, "post", running, {"action": "approve"}).status_code == 409


def test_every_documented_operation_was_reached_with_a_success(operator_client, request):
    """Runs after the tests above (same module, in order)."""
    others = [item for item in request.session.items if item.module is request.module and item is not request.node]
    if len(others) < len(SUCCESSFUL) + 2:
        pytest.skip("counts what the whole module reached: run all of it")
    document = schema(operator_client)["document"]
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert sorted(documented - REACHED) == []
