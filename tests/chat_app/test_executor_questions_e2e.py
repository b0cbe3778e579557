"""An executor's own question (OpenAI-compatible model calling ask_human) through
a real Celery worker: stored, work order waiting, answered by an operator,
handed back to the model, run completes."""

import json

import pytest

from chat_app import selectors, services
from chat_app.models import DeliveryStatus
from queue_app.models import WorkOrderStatus
from tasks_app.models import TaskStatus
from tasks_app.selectors import execution_output
from tasks_app.services import task_create
from tests.conftest import wait_for
from tests.workers_app.test_openai_executor import API_KEY, ChatServer

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_model_question_is_answered_by_an_operator(celery_worker_factory, operator, settings):
    server = ChatServer()
    try:
        profile = {"type": "openai", "base_url": server.base_url, "model": "local-model", "api_key": API_KEY}
        settings.AGENTVINE_EXECUTORS = {**settings.AGENTVINE_EXECUTORS, "model": profile}
        celery_worker_factory(concurrency=1, extra_env={"AGENTVINE_EXECUTORS_JSON": json.dumps({"model": profile})})
        task = task_create(title="Please ask before choosing", executor="model", created_by=operator)

        question = wait_for(
            lambda: selectors.pending_questions().filter(task=task).first(), timeout=60, message="the question"
        )
        assert question.text == "Which database should I use?"
        work_order = task.work_orders.get()
        assert work_order.status == WorkOrderStatus.WAITING
        services.question_answer(
            question=question, answer_text="PostgreSQL", answered_by=services.operator_profile(user=operator)
        )
        wait_for(lambda: task.__class__.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, message="completion")
    finally:
        server.close()
    assert execution_output(execution=task.executions.get()).endswith("Using PostgreSQL.\n")
    assert server.requests[1]["body"]["messages"][-1]["content"] == "PostgreSQL"
    assert question.replies.get().status == DeliveryStatus.DELIVERED
