"""Console pages of task graphs and schedules."""

import re

import pytest
from django.urls import reverse

from tasks_app.models import Task, TaskSchedule, TaskStatus
from tasks_app.services import task_cancel, task_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


def test_blocked_task_page_says_what_it_waits_for_and_skip_releases_it(operator_client):
    a = task_create(title="Write the parser")
    b = task_create(title="Write the printer")
    child = task_create(title="Release", depends_on=[a.pk, b.pk])
    task_cancel(task=b)

    page = operator_client.get(reverse("task-detail", args=[child.pk])).content.decode()

    waits = re.search(r'data-testid="blocked-for">(.*?)</p>', page, re.S).group(1)
    assert "Write the parser" in waits and "(queued)" in waits and "Write the printer" in waits
    assert "parent &#x27;Write the printer&#x27;" in page and "cancelled" in page
    parent_page = operator_client.get(reverse("task-detail", args=[a.pk])).content.decode()
    assert "Release" in parent_page and "depends on this task" in parent_page

    response = operator_client.post(reverse("dependency-skip", args=[child.pk, b.pk]))
    assert response.status_code == 302
    assert Task.objects.get(pk=child.pk).status == TaskStatus.BLOCKED  # still waits for the parser
    operator_client.post(reverse("dependency-skip", args=[child.pk, a.pk]))
    assert Task.objects.get(pk=child.pk).status == TaskStatus.QUEUED


def test_graph_page_renders_fifty_nodes_with_escaped_titles_in_few_queries(
    operator_client, django_assert_max_num_queries
):
    root = task_create(title="<script>alert(1)</script> root")
    levels = [[root]]
    for level in range(1, 5):
        levels.append(
            [
                task_create(title=f"L{level} n{n}", depends_on=[levels[-1][n % len(levels[-1])].pk])
                for n in range(12 if level < 4 else 13)
            ]
        )
    assert sum(len(level) for level in levels) == 50

    with django_assert_max_num_queries(20):
        response = operator_client.get(reverse("task-graph", args=[root.pk]))

    page = response.content.decode()
    assert response.status_code == 200
    assert page.count('data-testid="graph-node"') == 50
    assert page.count("<line ") == 49
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert 'data-status="blocked"' in page


def test_graph_page_needs_an_operator(client):
    root = task_create(title="root")
    response = client.get(reverse("task-graph", args=[root.pk]))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_schedules_page_creates_edits_disables_and_deletes(operator_client):
    form = {"name": "nightly", "cron": "0 2 * * *", "overlap": "skip", "title": "Hunt flaky tests"}
    form |= {"task_type": "test", "priority": "normal"}
    assert operator_client.post(reverse("schedule-list"), form).status_code == 302
    schedule = TaskSchedule.objects.get(name="nightly")
    page = operator_client.get(reverse("schedule-list")).content.decode()
    assert "0 2 * * *" in page and "Hunt flaky tests" in page

    bad = operator_client.post(reverse("schedule-list"), {**form, "name": "other", "cron": "0 2"})
    assert bad.status_code == 400 and "five fields" in bad.content.decode()
    edit = operator_client.get(reverse("schedule-list") + f"?edit={schedule.pk}").content.decode()
    assert 'value="nightly"' in edit
    operator_client.post(
        reverse("schedule-list"), {**form, "schedule": schedule.pk, "cron": "", "interval_seconds": 600}
    )
    schedule.refresh_from_db()
    assert (schedule.cron, schedule.interval_seconds) == ("", 600)

    operator_client.post(reverse("schedule-action", args=[schedule.pk, "disable"]))
    assert not TaskSchedule.objects.get(pk=schedule.pk).enabled
    operator_client.post(reverse("schedule-action", args=[schedule.pk, "delete"]))
    assert not TaskSchedule.objects.exists()
