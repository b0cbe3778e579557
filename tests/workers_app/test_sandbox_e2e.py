"""A sandboxed agent without network still asks a human: an agent in bwrap
with ``"network": false`` (tests/agents/offline_asker.py), through a real
Celery worker and daphne."""

import pytest

from chat_app import selectors, services
from tasks_app.models import Task, TaskStatus
from tasks_app.selectors import execution_output
from tasks_app.services import task_create
from tests.chat_app.conftest import DaphneServer
from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def api_server(transactional_db, tmp_path):
    server = DaphneServer(tmp_path / "daphne.log")
    yield server
    server.stop()


def test_offline_sandboxed_agent_asks_through_the_api_relay(celery_worker_factory, api_server, operator):
    celery_worker_factory(concurrency=1, extra_env={"AGENTVINE_API_URL": api_server.url})
    task = task_create(title="pick a colour", executor="ask-offline", created_by=operator)

    question = wait_for(lambda: selectors.pending_questions().filter(task=task).first(), message="the question")
    services.question_answer(
        question=question, answer_text="teal", answered_by=services.operator_profile(user=operator)
    )

    wait_for(lambda: Task.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, message="completion")
    output = execution_output(execution=task.executions.get())
    assert "network: unreachable" in output
    assert "answer: teal" in output
