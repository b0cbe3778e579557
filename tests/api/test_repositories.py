"""Which repositories a task may name: refused with a clear 400 where a task
is created (API, batch, console form), and again on the worker, without ever
repeating a URL's credentials."""

import json
import logging
from types import SimpleNamespace

import pytest
from django.urls import reverse

from agentvine.models import LiveEvent
from tasks_app import repositories
from tasks_app.models import Task
from workers_app.workspaces import WorkspaceError, workspace_prepare

pytestmark = pytest.mark.django_db

TOKEN = "ghp_s3cretT0kenValue0123456789"


@pytest.fixture
def production_policy(settings):
    settings.AGENTVINE_REPOSITORY_ALLOW_LOCAL = False
    settings.AGENTVINE_REPOSITORY_ALLOW = ["https://*", "ssh://*", "git@*"]
    return settings


def _create(client, url):
    return client.post("/api/v1/tasks/", {"title": "t", "repository_url": url}, format="json")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/etc", repositories.ERR_LOCAL),
        ("file:///etc", repositories.ERR_LOCAL),
        ("file:///srv/repo", repositories.ERR_LOCAL),
        ("../../other-project", repositories.ERR_LOCAL),
        ("ext::sh -c touch% /tmp/pwned", repositories.ERR_CHARACTERS),
        ("ext::touch /tmp/pwned", repositories.ERR_CHARACTERS),
        ("ext::/tmp/pwned", repositories.ERR_REMOTE_HELPER),
        ("fd::17", repositories.ERR_REMOTE_HELPER),
        ("--upload-pack=touch /tmp/pwned", repositories.ERR_OPTION),
        ("-uhttps://example.com/r.git", repositories.ERR_OPTION),
        ("https://example.com/r.git\n--upload-pack=x", repositories.ERR_CHARACTERS),
        ("http://example.com/plain.git", repositories.ERR_NOT_ALLOWED),
        ("git://example.com/r.git", repositories.ERR_NOT_ALLOWED),
    ],
)
def test_attacks_on_repository_url_are_refused_with_a_clear_400(production_policy, operator_client, url, message):
    response = _create(operator_client, url)

    assert response.status_code == 400
    assert response.json() == {"repository_url": [message]}
    assert Task.objects.count() == 0


def test_another_tasks_cache_and_workspace_are_refused_even_where_local_repositories_are_allowed(
    settings, operator_client
):
    settings.AGENTVINE_REPOSITORY_ALLOW_LOCAL = True
    root = settings.AGENTVINE_WORKSPACE_ROOT
    for url in (f"{root}/_repos/0123abcd.git", f"file://{root}/5f0c/", str(settings.VAR_DIR), f"{root}/../workspaces"):
        response = _create(operator_client, url)
        assert response.status_code == 400, url
        assert response.json() == {"repository_url": [repositories.ERR_PLATFORM_PATH]}
    assert _create(operator_client, "/srv/projects/app").status_code == 201


@pytest.mark.parametrize(
    "url",
    [
        f"https://{TOKEN}@github.com/acme/app.git",
        f"https://oauth2:{TOKEN}@gitlab.example.com/acme/app.git",
        f"ssh://git:{TOKEN}@example.com/acme/app.git",
    ],
)
def test_credentials_in_a_url_are_refused_and_never_echoed_stored_published_or_logged(
    production_policy, operator_client, caplog, url
):
    caplog.set_level(logging.DEBUG)
    single = _create(operator_client, url)
    batch = operator_client.post(
        "/api/v1/tasks/batch/", {"tasks": [{"title": "ok"}, {"title": "t", "repository_url": url}]}, format="json"
    )

    assert single.status_code == batch.status_code == 400
    assert single.json() == {"repository_url": [repositories.ERR_CREDENTIALS]}
    assert batch.json() == {"repository_url": [f"task 1: {repositories.ERR_CREDENTIALS}"]}
    for response in (single, batch):
        assert TOKEN not in response.content.decode()
    assert Task.objects.count() == 0
    assert not any(TOKEN in json.dumps(event.payload) for event in LiveEvent.objects.all())
    assert TOKEN not in caplog.text


def test_account_names_are_not_credentials_and_allowed_patterns_decide(production_policy, operator_client):
    production_policy.AGENTVINE_REPOSITORY_ALLOW = ["https://github.com/acme/*", "git@github.com:acme/*"]

    assert _create(operator_client, "https://github.com/acme/app.git").status_code == 201
    assert _create(operator_client, "git@github.com:acme/app.git").status_code == 201
    refused = _create(operator_client, "https://github.com/evil/app.git")
    assert refused.json() == {"repository_url": [repositories.ERR_NOT_ALLOWED]}
    production_policy.AGENTVINE_REPOSITORY_ALLOW = ["ssh://*"]
    assert _create(operator_client, "ssh://git@example.com/acme/app.git").status_code == 201


def test_console_form_refuses_credentials_without_showing_them_again(production_policy, client, operator):
    client.force_login(operator)
    form = {"title": "t", "task_type": "feature", "priority": "normal", "executor": ""}

    response = client.post(reverse("task-list"), {**form, "repository_url": f"https://{TOKEN}@github.com/a/b.git"})
    local = client.post(reverse("task-list"), {**form, "repository_url": "/etc"})

    assert response.status_code == 400
    page = response.content.decode()
    assert repositories.ERR_CREDENTIALS in page
    assert TOKEN not in page
    assert local.status_code == 400
    assert repositories.ERR_LOCAL in local.content.decode()
    assert Task.objects.count() == 0


def test_worker_refuses_a_repository_its_policy_forbids_before_running_git(production_policy, tmp_path):
    pwned = tmp_path / "pwned"
    for url in (f"ext::sh -c touch% {pwned}", "--upload-pack=touch", str(tmp_path)):
        task = SimpleNamespace(id="t-1", repository_url=url, branch_name="")
        with pytest.raises(WorkspaceError):
            workspace_prepare(task=task)
    assert not pwned.exists()


def test_admin_edit_of_a_task_follows_the_same_policy(production_policy, admin_client):
    from tests.factories import make_task

    task = make_task(title="edit me")
    url = reverse("admin:tasks_app_task_change", args=[task.pk])
    form = {"title": "edit me", "description": "", "task_type": "feature", "executor": "", "branch_name": ""}

    response = admin_client.post(url, {**form, "repository_url": f"https://{TOKEN}@github.com/a/b.git"})

    assert response.status_code == 200  # the form again, with the error
    assert repositories.ERR_CREDENTIALS in response.content.decode()
    task.refresh_from_db()
    assert task.repository_url == ""


def test_credentials_a_task_stored_before_they_were_refused_are_never_shown(operator_client, client, operator):
    from tests.factories import make_task

    task = make_task(title="legacy", repository_url="https://github.com/acme/app.git")
    Task.objects.filter(pk=task.pk).update(repository_url=f"https://oauth2:{TOKEN}@github.com/acme/app.git")
    client.force_login(operator)

    responses = [
        operator_client.get(f"/api/v1/tasks/{task.pk}/"),
        operator_client.get("/api/v1/tasks/"),
        client.get(reverse("task-detail", kwargs={"task_id": task.pk})),
        client.get(reverse("task-list")),
    ]

    assert responses[0].json()["repository_url"] == "https://***@github.com/acme/app.git"
    for response in responses:
        assert response.status_code == 200
        assert TOKEN not in response.content.decode()
