"""Dependencies and schedules in the REST API: depends_on, add, skip, tree, cycles; schedules."""

import pytest

from tasks_app.models import Task, TaskStatus

pytestmark = pytest.mark.django_db


def create(client, **body):
    response = client.post("/api/v1/tasks/", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_create_after_parents_is_blocked_and_lists_its_parents(operator_client):
    a = create(operator_client, title="A")
    b = create(operator_client, title="B")
    d = create(
        operator_client,
        title="D",
        depends_on=[a["id"], {"task": b["id"], "on_failure": "skip", "base": "parent"}],
    )
    assert d["status"] == "blocked"

    deps = operator_client.get(f"/api/v1/tasks/{d['id']}/dependencies/").json()
    assert [(p["title"], p["on_failure"], p["base_on_parent"]) for p in deps["parents"]] == [
        ("A", "block", False),
        ("B", "skip", True),
    ]
    children = operator_client.get(f"/api/v1/tasks/{a['id']}/dependencies/").json()["children"]
    assert [(c["title"], c["status"]) for c in children] == [("D", "blocked")]

    tree = operator_client.get(f"/api/v1/tasks/{a['id']}/tree/").json()
    assert [(n["title"], n["level"]) for n in tree["nodes"]] == [("A", 0), ("D", 1)]
    assert tree["edges"] == [[a["id"], d["id"], "dependency"]]


def test_cycle_is_a_400_naming_it_and_nothing_changes(operator_client):
    root = create(operator_client, title="root")
    x = create(operator_client, title="X", depends_on=[root["id"]])
    y = create(operator_client, title="Y", depends_on=[x["id"]])

    response = operator_client.post(f"/api/v1/tasks/{x['id']}/dependencies/", {"depends_on": [y["id"]]}, format="json")

    assert response.status_code == 400
    body = str(response.json())
    assert "dependency cycle: 'X'" in body and "'Y'" in body
    assert len(operator_client.get(f"/api/v1/tasks/{x['id']}/dependencies/").json()["parents"]) == 1


@pytest.mark.parametrize(
    "depends_on",
    [
        ["not-a-uuid"],
        ["00000000-0000-0000-0000-000000000000"],
        [{"task": "00000000-0000-0000-0000-000000000000", "on_failure": "explode"}],
        [{"on_failure": "skip"}],
        "just-a-string",
    ],
)
def test_bad_depends_on_is_a_400_and_nothing_created(operator_client, depends_on):
    before = Task.objects.count()
    response = operator_client.post("/api/v1/tasks/", {"title": "bad", "depends_on": depends_on}, format="json")
    assert response.status_code == 400, response.json()
    assert Task.objects.count() == before


def test_skip_releases_a_blocked_task_and_anonymous_is_refused(operator_client, anon_client):
    a = create(operator_client, title="A")
    child = create(operator_client, title="child", depends_on=[a["id"]])

    assert anon_client.post(f"/api/v1/tasks/{child['id']}/dependencies/{a['id']}/skip/").status_code in (401, 403)
    assert anon_client.get(f"/api/v1/tasks/{a['id']}/tree/").status_code in (401, 403)

    response = operator_client.post(f"/api/v1/tasks/{child['id']}/dependencies/{a['id']}/skip/")
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert Task.objects.get(pk=child["id"]).status == TaskStatus.QUEUED
    again = operator_client.post(f"/api/v1/tasks/{child['id']}/dependencies/{a['id']}/skip/")
    assert again.status_code == 409


def test_schema_documents_dependencies(operator_client):
    schema = operator_client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").content.decode()
    for name in ("tasks_dependencies_add", "tasks_tree", "depends_on", "on_failure", "schedules_create", "overlap"):
        assert name in schema


def test_schedules_api_create_list_change_delete(operator_client, anon_client):
    body = {"name": "nightly hunt", "cron": "0 2 * * *", "title": "Hunt flaky tests", "overlap": "skip"}
    created = operator_client.post("/api/v1/schedules/", body, format="json")
    assert created.status_code == 201, created.json()
    schedule = created.json()
    assert (schedule["cron"], schedule["enabled"], schedule["runs_created"]) == ("0 2 * * *", True, 0)

    listed = operator_client.get("/api/v1/schedules/").json()["results"]
    assert [s["name"] for s in listed] == ["nightly hunt"]
    changed = operator_client.put(
        f"/api/v1/schedules/{schedule['id']}/",
        {**body, "cron": "", "interval_seconds": 3600, "enabled": False, "overlap": "queue_one"},
        format="json",
    )
    assert changed.status_code == 200
    assert (changed.json()["interval_seconds"], changed.json()["enabled"]) == (3600, False)

    bad = operator_client.post("/api/v1/schedules/", {**body, "name": "other", "cron": "0 2 *"}, format="json")
    assert bad.status_code == 400 and "five fields" in str(bad.json())
    taken = operator_client.post("/api/v1/schedules/", body, format="json")
    assert taken.status_code == 400 and "exists" in str(taken.json())
    assert anon_client.get("/api/v1/schedules/").status_code in (401, 403)

    assert operator_client.delete(f"/api/v1/schedules/{schedule['id']}/").status_code == 204
    assert operator_client.get("/api/v1/schedules/").json()["results"] == []
