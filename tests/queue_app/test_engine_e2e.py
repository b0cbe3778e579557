"""End to end through a real Celery worker process, PostgreSQL and Redis."""

import pytest

from queue_app.models import WorkOrderStatus
from tasks_app.models import ExecutionStatus, TaskStatus
from tasks_app.selectors import execution_output
from tasks_app.services import task_create
from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_created_task_runs_demo_agent_to_completion(celery_worker_factory, operator):
    celery_worker_factory(concurrency=1)
    task = task_create(title="Add a greeting", description="Say hello in the README", created_by=operator)

    wait_for(lambda: task.__class__.objects.get(pk=task.pk).status == TaskStatus.COMPLETED, message="completion")

    execution = task.executions.get()
    assert execution.status == ExecutionStatus.COMPLETED
    assert execution.exit_code == 0
    output = execution_output(execution=execution)
    assert "demo agent: starting on task: Add a greeting" in output
    assert output.rstrip().endswith("wrote AGENTVINE_RESULT.md; done")
    work_order = task.work_orders.get()
    assert work_order.status == WorkOrderStatus.COMPLETED
    assert work_order.worker.name.startswith("w0-")
