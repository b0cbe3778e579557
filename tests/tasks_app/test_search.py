"""The task search reads TaskSearchText, which a run's status changes never rewrite."""

import pytest
from django.db import connection
from django.urls import reverse

from tasks_app import selectors
from tasks_app.models import Task, TaskStatus
from tasks_app.services import task_create, task_update, tasks_create
from tests.factories import make_task

pytestmark = pytest.mark.django_db


def _found(q):
    return {task.title for task in selectors.task_list(q=q)}


def _row_version(task):
    with connection.cursor() as cursor:
        cursor.execute("SELECT xmin::text FROM tasks_app_tasksearchtext WHERE task_id = %s", [task.pk])
        return cursor.fetchone()[0]


def test_search_finds_a_task_by_title_description_or_repository_in_any_case():
    make_task(title="Fix the Login bug", description="users see a blank page", repository_url="")
    tasks_create(
        specs=[
            {"title": "Dark mode", "description": "", "repository_url": "https://git.example.com/acme/Frontend.git"},
            {"title": "Unrelated", "description": "nothing to see"},
        ]
    )
    assert _found("login") == {"Fix the Login bug"}
    assert _found("BLANK PAGE") == {"Fix the Login bug"}
    assert _found("acme/frontend") == {"Dark mode"}
    assert _found("no such words") == set()


def test_an_edit_of_title_or_description_is_what_the_search_finds():
    task = make_task(title="Old title", description="first draft")
    task_update(task=task, title="New title", description="second draft")
    assert _found("new title") == {"New title"}
    assert _found("old title") == set()
    assert _found("second draft") == {"New title"}
    assert _found("first draft") == set()


def test_an_admin_edit_is_what_the_search_finds(admin_client):
    task = make_task(title="Before the edit", description="old words")
    response = admin_client.post(
        reverse("admin:tasks_app_task_change", args=[task.pk]),
        {
            "title": "After the edit",
            "description": "new words",
            "task_type": task.task_type,
            "executor": "",
            "repository_url": "",
            "branch_name": "",
            **{f"{prefix}-{key}": value for prefix in ("work_orders", "executions") for key, value in _empty_inline()},
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert _found("new words") == {"After the edit"}
    assert _found("old words") == set()
    page = admin_client.get(reverse("admin:tasks_app_task_changelist"), {"q": "new words"}).content.decode()
    assert "After the edit" in page


def _empty_inline():
    return [("TOTAL_FORMS", "0"), ("INITIAL_FORMS", "0"), ("MIN_NUM_FORMS", "0"), ("MAX_NUM_FORMS", "1000")]


def test_a_run_to_completion_leaves_the_search_text_untouched(operator, worker):
    from queue_app import lifecycle

    task = task_create(title="long prompt", description="word " * 20_000, created_by=operator)
    written = _row_version(task)
    work_order = lifecycle.work_order_claim(worker=worker)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    lifecycle.work_order_complete(work_order=work_order, worker=worker, execution=execution)

    assert Task.objects.get(pk=task.pk).status == TaskStatus.COMPLETED
    # Same row version: the status changes rewrote the task row, not the text.
    assert _row_version(task) == written
    assert _found("long prompt") == {"long prompt"}


def test_the_trigram_indexes_are_on_the_search_text_not_on_the_task():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename, indexname FROM pg_indexes WHERE indexdef LIKE %s ORDER BY indexname", ["%gin_trgm_ops%"]
        )
        trigram = cursor.fetchall()
    assert ("tasks_app_task", "task_description_trgm_idx") not in trigram
    assert [name for table, name in trigram if table == "tasks_app_task"] == []
    assert sorted(name for table, name in trigram if table == "tasks_app_tasksearchtext") == [
        "tasksearchtext_description_trgm_idx",
        "tasksearchtext_repository_url_trgm_idx",
        "tasksearchtext_title_trgm_idx",
    ]
