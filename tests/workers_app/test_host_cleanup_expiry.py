"""A host that never comes back: its pending workspace cleanups expire
(AGENTVINE_HOST_CLEANUP_EXPIRE_SECONDS) through the idle-sessions guardian,
and the event log says which workspaces were left on which host."""

from datetime import timedelta

import pytest
from django.utils import timezone

from agentvine.models import LiveEvent
from tasks_app.services import task_create
from workers_app import tasks
from workers_app.host_work import host_cleanup_request
from workers_app.models import HostCleanup, WorkerStatus
from workers_app.services import worker_mark_offline, worker_register

pytestmark = pytest.mark.django_db


def _aged(cleanup, seconds):
    HostCleanup.objects.filter(pk=cleanup.pk).update(created_at=timezone.now() - timedelta(seconds=seconds))


def test_cleanups_of_a_host_gone_past_the_limit_expire_with_an_event(
    settings, operator, django_capture_on_commit_callbacks
):
    settings.AGENTVINE_HOST_CLEANUP_EXPIRE_SECONDS = 3600
    gone, alive, recent = "celery@gone-host", "celery@alive-host", "celery@recent-host"
    worker_mark_offline(worker=worker_register(name=f"{gone}:0", hostname="gone-host"))
    worker_register(name=f"{alive}:0", hostname="alive-host")
    task = task_create(title="t", created_by=operator)
    with django_capture_on_commit_callbacks(execute=False):
        old_gone = HostCleanup.objects.create(host=gone, task_id=task.pk)
        old_alive = HostCleanup.objects.create(host=alive, task_id=task.pk)
        new_recent = HostCleanup.objects.create(host=recent, task_id=task.pk)
        host_cleanup_request(host=gone, task=task)  # asked just now: not old yet
    for cleanup in (old_gone, old_alive):
        _aged(cleanup, 3601)
    _aged(new_recent, 3000)

    result = tasks.guard_idle_sessions()

    assert result["cleanups_expired"] == 1
    pending = set(HostCleanup.objects.values_list("host", flat=True))
    # The host that is up drains its own; the recent one and the fresh request still wait.
    assert not HostCleanup.objects.filter(pk=old_gone.pk).exists()
    assert pending == {gone, alive, recent}
    event = LiveEvent.objects.get(type="host.cleanups_expired")
    assert event.payload == {"host": gone, "task_ids": [str(task.pk)], "count": 1}
    assert tasks.guard_idle_sessions()["cleanups_expired"] == 0


def test_a_host_back_online_keeps_its_old_cleanups(settings, operator):
    settings.AGENTVINE_HOST_CLEANUP_EXPIRE_SECONDS = 60
    host = "celery@back-host"
    slot = worker_register(name=f"{host}:1", hostname="back-host")
    assert slot.status == WorkerStatus.IDLE
    task = task_create(title="t", created_by=operator)
    cleanup = HostCleanup.objects.create(host=host, task_id=task.pk)
    _aged(cleanup, 600)

    assert tasks.guard_idle_sessions()["cleanups_expired"] == 0
    assert HostCleanup.objects.filter(pk=cleanup.pk, done_at__isnull=True).exists()
