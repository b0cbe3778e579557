"""Recurring tasks: one run per tick, none while one runs, across a beat restart."""

from datetime import UTC, datetime, timedelta

import pytest
from django_celery_beat.models import PeriodicTask

from agentvine.errors import ValidationFailed
from queue_app import lifecycle
from tasks_app import schedules
from tasks_app.models import Task, TaskSchedule, TaskStatus
from tasks_app.services import task_cancel
from tests.conftest import TestDatabaseProcess, wait_for

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 12, 4, 2, 0, 0, tzinfo=UTC)


def complete(task, worker):
    order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get(status="queued").id)
    order, execution = lifecycle.work_order_start(work_order=order, worker=worker)
    lifecycle.work_order_complete(work_order=order, worker=worker, execution=execution)


def runs(schedule):
    return Task.objects.filter(title=schedule.title).order_by("created_at")


def test_saving_a_schedule_writes_its_beat_row_on_the_guardians_queue(operator):
    schedule = schedules.schedule_save(
        name="nightly flaky-test hunt", cron="0 2 * * *", title="Hunt flaky tests", executor="noop"
    )
    periodic = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert periodic.task == "tasks_app.schedule_tick" and periodic.queue == "guardians"
    assert periodic.args == f"[{schedule.pk}]"
    assert (periodic.crontab.minute, periodic.crontab.hour) == ("0", "2")

    schedules.schedule_save(schedule=schedule, name=schedule.name, interval_seconds=60, title="Hunt flaky tests")
    periodic.refresh_from_db()
    assert periodic.interval.every == 60 and periodic.crontab is None
    schedules.schedule_set_enabled(schedule=schedule, enabled=False)
    periodic.refresh_from_db()
    assert not periodic.enabled


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "0 2 * *", "title": "t"}, "five fields"),
        ({"cron": "99 2 * * *", "title": "t"}, "five fields"),
        ({"cron": "0 2 * * *", "interval_seconds": 60, "title": "t"}, "exactly one"),
        ({"title": "t"}, "exactly one"),
        ({"interval_seconds": 60, "title": " "}, "title is required"),
        ({"interval_seconds": 60, "title": "t", "executor": "nope"}, "unknown executor"),
        ({"interval_seconds": 60, "title": "t", "overlap": "pile"}, "overlap"),
    ],
)
def test_bad_schedules_are_refused_and_nothing_written(kwargs, message):
    with pytest.raises(ValidationFailed, match=message):
        schedules.schedule_save(name="bad", **kwargs)
    assert not TaskSchedule.objects.exists()
    assert not PeriodicTask.objects.filter(task="tasks_app.schedule_tick").exists()


def test_one_minute_schedule_skip_one_run_per_tick_none_while_one_runs(worker):
    schedule = schedules.schedule_save(name="every minute", interval_seconds=60, title="minutely", executor="noop")

    first = schedules.schedule_tick(schedule_id=schedule.pk, now=T0)
    assert first is not None and first.status == TaskStatus.QUEUED
    # Beat restarted before saving its last run: the same tick again.
    assert schedules.schedule_tick(schedule_id=schedule.pk, now=T0 + timedelta(seconds=3)) is None
    # Next tick, the first run still queued: skipped.
    assert schedules.schedule_tick(schedule_id=schedule.pk, now=T0 + timedelta(seconds=60)) is None
    assert runs(schedule).count() == 1

    complete(first, worker)
    second = schedules.schedule_tick(schedule_id=schedule.pk, now=T0 + timedelta(seconds=120))
    assert second is not None
    assert schedules.schedule_tick(schedule_id=schedule.pk, now=T0 + timedelta(seconds=121)) is None
    schedule.refresh_from_db()
    assert runs(schedule).count() == 2
    assert (schedule.runs_created, schedule.ticks_skipped) == (2, 1)


def test_queue_one_keeps_at_most_one_pending_run_started_when_the_last_ends(worker):
    schedule = schedules.schedule_save(
        name="q1", interval_seconds=60, title="queue one", executor="noop", overlap="queue_one"
    )
    first = schedules.schedule_tick(schedule_id=schedule.pk, now=T0)
    for minute in (1, 2, 3):
        assert schedules.schedule_tick(schedule_id=schedule.pk, now=T0 + timedelta(minutes=minute)) is None
    assert runs(schedule).count() == 1

    complete(first, worker)

    assert runs(schedule).count() == 2
    assert runs(schedule).last().status == TaskStatus.QUEUED
    schedule.refresh_from_db()
    assert not schedule.run_pending


def test_cron_schedule_ticks_once_per_instant(worker):
    schedule = schedules.schedule_save(name="cron minute", cron="* * * * *", title="cron run", executor="noop")
    first = schedules.schedule_tick(schedule_id=schedule.pk)
    assert first is not None
    assert schedules.schedule_tick(schedule_id=schedule.pk) is None  # the same minute again
    task_cancel(task=first)
    schedule.refresh_from_db()
    later = schedule.last_tick_at + timedelta(seconds=61)
    assert schedules.schedule_tick(schedule_id=schedule.pk, now=later) is not None


def test_disabled_schedule_creates_nothing():
    schedule = schedules.schedule_save(name="off", interval_seconds=60, title="off", executor="noop")
    schedules.schedule_set_enabled(schedule=schedule, enabled=False)
    assert schedules.schedule_tick(schedule_id=schedule.pk, now=T0) is None
    assert not runs(schedule).exists()


class _Celery(TestDatabaseProcess):
    def __init__(self, argv, *, log_path):
        super().__init__(["celery", "-A", "agentvine", *argv], log_path=log_path)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_real_beat_one_run_while_it_goes_across_a_beat_restart(clean_broker, tmp_path):
    """A 1 s schedule on a real beat and guardians worker; no agent worker, so
    its first run stays queued (going): every later tick is skipped, before
    and after beat restarts; cancelled, the next tick makes the second run."""
    schedule = schedules.schedule_save(name="fast", interval_seconds=1, title="fast run", executor="noop")
    guardians = _Celery(["worker", "-Q", "guardians", "-c", "1", "-n", "guardians@%h"], log_path=tmp_path / "g.log")
    beat_args = ["beat", "--schedule", str(tmp_path / "beat"), "--max-interval", "1"]
    beat = _Celery(beat_args, log_path=tmp_path / "beat.log")
    try:
        wait_for(lambda: runs(schedule).exists(), message="the first run")
        skipped = lambda: TaskSchedule.objects.get(pk=schedule.pk).ticks_skipped  # noqa: E731
        wait_for(lambda: skipped() >= 2, message="two skipped ticks")
        beat.stop()
        before = skipped()
        beat = _Celery(beat_args, log_path=tmp_path / "beat2.log")
        wait_for(lambda: skipped() >= before + 2, message="skipped ticks after the restart")
        assert runs(schedule).count() == 1

        task_cancel(task=runs(schedule).get())
        wait_for(lambda: runs(schedule).count() == 2, message="the second run")
    finally:
        beat.stop()
        guardians.stop()
    assert runs(schedule).count() == 2


def _form(**overrides):
    data = {
        "name": "nightly",
        "enabled": "on",
        "cron": "0 2 * * *",
        "interval_seconds": "",
        "overlap": "skip",
        "title": "Hunt flaky tests",
        "description": "",
        "task_type": "test",
        "priority": "normal",
        "repository_url": "",
        "branch_name": "main",
        "executor": "noop",
    }
    return {**data, **overrides}


def test_admin_creates_and_edits_a_schedule_and_its_beat_row(admin_client):
    added = admin_client.post("/admin/tasks_app/taskschedule/add/", _form())
    assert added.status_code == 302, added.content.decode()[:2000]
    schedule = TaskSchedule.objects.get(name="nightly")
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).crontab.hour == "2"

    edited = admin_client.post(
        f"/admin/tasks_app/taskschedule/{schedule.pk}/change/", _form(cron="30 3 * * 1-5", overlap="queue_one")
    )
    assert edited.status_code == 302
    periodic = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert (periodic.crontab.minute, periodic.crontab.hour, periodic.crontab.day_of_week) == ("30", "3", "1-5")
    assert TaskSchedule.objects.get(pk=schedule.pk).overlap == "queue_one"

    refused = admin_client.post(f"/admin/tasks_app/taskschedule/{schedule.pk}/change/", _form(cron="61 * * * *"))
    assert refused.status_code == 200 and "five fields" in refused.content.decode()
    assert PeriodicTask.objects.get(pk=schedule.periodic_task_id).crontab.minute == "30"

    admin_client.post(f"/admin/tasks_app/taskschedule/{schedule.pk}/delete/", {"post": "yes"})
    assert not TaskSchedule.objects.exists()
    assert not PeriodicTask.objects.filter(task="tasks_app.schedule_tick").exists()


def test_a_run_paused_on_its_budget_is_still_going_and_skips_the_next_tick(worker, settings):
    from tests.factories import run_that_spends

    settings.AGENTVINE_TASK_BUDGET_USD = "0.05"
    schedule = schedules.schedule_save(name="budgeted", interval_seconds=60, title="nightly", executor="noop")
    first = schedules.schedule_tick(schedule_id=schedule.pk, now=T0)
    run_that_spends(first, "0.06", worker=worker)
    assert lifecycle.work_order_claim_start(worker=worker, work_order_id=None) is None
    assert Task.objects.get(pk=first.pk).status == TaskStatus.PAUSED_BUDGET
    # Paused, not ended: the next tick starts no second run beside it.
    assert schedules.schedule_tick(schedule_id=schedule.pk, now=T0 + timedelta(seconds=60)) is None
    assert runs(schedule).count() == 1
