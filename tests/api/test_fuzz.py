"""Property-based fuzzing of the whole API from its own OpenAPI schema.

Schemathesis generates valid and invalid requests for every operation the
schema describes, sent in-process to the Django WSGI app as an operator and
as a worker, with random ids and with ids of real rows (so the fuzzing gets
past the 404s into validation and the state machine). Whatever it sends, the
answer must not be a server error. Bounded by max_examples to stay fast.
"""

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from chat_app.notifications import notification_channel_create
from chat_app.services import question_ask
from queue_app import lifecycle
from tasks_app.schedules import schedule_save
from tasks_app.services import task_create
from workers_app.services import agent_session_create, api_token_create, worker_token_issue

pytestmark = pytest.mark.django_db


@pytest.fixture
def keep_test_connection():
    """The WSGI handler closes DB connections after each request; the test's
    transaction must survive, as Django's own test client arranges."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


EXAMPLES_PER_OPERATION = 10


def _real_ids(operator, worker):
    task = task_create(title="Fuzz target", created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().pk)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    session = agent_session_create(session_id="fuzz-session", task=task, worker=worker)
    question = question_ask(work_order=work_order, text="Fuzz question?")
    parent = task_create(title="Fuzz parent", created_by=operator)
    schedule = schedule_save(name="fuzz schedule", interval_seconds=3600, title="Fuzz scheduled")
    channel = notification_channel_create(
        owner=operator, name="fuzz", kind="webhook", target="https://hooks.example/in", events=["task_failed"]
    )
    return {
        "schedule_id": str(schedule.pk),
        "parent_id": str(parent.pk),
        "channel_id": str(channel.pk),
        "conversation_id": str(task.pk),
        "execution_id": str(execution.pk),
        "question_id": str(question.pk),
        "task_id": str(task.pk),
        "work_order_id": str(work_order.pk),
        "session_pk": str(session.pk),
        "worker_id": str(worker.pk),
    }


def _server_errors(schema, headers, ids):
    errors = []
    for result in schema.get_all_operations():
        operation = result.ok()
        names = {p.name for p in operation.path_parameters}
        strategies = [
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        ]
        if names:
            real = {name: ids[name] for name in names}
            strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=real))
        strategy = st.one_of(*strategies)

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def check(case):
            response = case.call(headers=headers)
            if response.status_code >= 500:
                errors.append((case.method, case.formatted_path, case.body, response.status_code))

        check()
    return errors


@pytest.mark.parametrize("role", ["operator", "worker"])
def test_no_request_from_the_schema_causes_a_server_error(role, operator, worker, keep_test_connection):
    key = api_token_create(user=operator, name="fuzz")[1] if role == "operator" else worker_token_issue(worker=worker)
    headers = {"Authorization": f"Token {key}"}
    ids = _real_ids(operator, worker)
    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", WSGIHandler(), headers=headers)
    assert len(list(schema.get_all_operations())) >= 20

    errors = _server_errors(schema, headers, ids)

    assert errors == []
