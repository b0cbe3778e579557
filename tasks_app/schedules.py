"""Recurring tasks: a template queued on a cron or interval schedule.

Beat (django-celery-beat's DatabaseScheduler) fires one ``PeriodicTask`` per
``TaskSchedule``, kept in step here, on the ``guardians`` queue; the tick
(:func:`schedule_tick`) creates one task from the template. A schedule never
piles runs up: while its last run is still going (blocked, queued or in
progress, a retry included), a tick is skipped (``overlap = skip``) or noted
as one pending run that starts when the last one ends (``queue_one``, at most
one, however many ticks came meanwhile).

A tick arriving again for an instant already served (beat restarted before it
saved its last run, a redelivered message) is ignored: a tick counts only
once the schedule's next due time after the previous tick is less than half a
period (at most 30 s) away.
"""

import json
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from agentvine import events
from agentvine.errors import ValidationFailed
from tasks_app import graph_selectors, services
from tasks_app.models import ScheduleOverlap, Task, TaskSchedule, TaskStatus

TICK_TASK = "tasks_app.schedule_tick"
TICK_QUEUE = "guardians"
# A run that has not ended: a run paused on its spent budget waits to go on.
GOING = (TaskStatus.BLOCKED, TaskStatus.QUEUED, TaskStatus.IN_PROGRESS, TaskStatus.PAUSED_BUDGET)
ERR_ONE_SCHEDULE = "give exactly one of cron and interval_seconds"
ERR_BAD_CRON = "cron needs five fields: minute hour day-of-month month day-of-week"
ERR_BAD_OVERLAP = "overlap is skip or queue_one"
ERR_NAME_TAKEN = "a schedule with this name exists"
ERR_NAME_REQUIRED = "name is required"
# A repeated tick must come this close to the instant it serves to be taken as its own.
MAX_TICK_TOLERANCE = timedelta(seconds=30)

TEMPLATE_FIELDS = ("title", "description", "task_type", "priority", "repository_url", "branch_name", "executor")


def _validate(*, cron, interval_seconds, overlap, template):
    if bool(cron) == bool(interval_seconds):
        raise ValidationFailed(ERR_ONE_SCHEDULE, field="cron")
    if cron and len(cron.split()) != 5:
        raise ValidationFailed(ERR_BAD_CRON, field="cron")
    if overlap not in ScheduleOverlap.values:
        raise ValidationFailed(ERR_BAD_OVERLAP, field="overlap")
    services.task_spec_check(template)


def _beat_schedule(cron, interval_seconds):
    if interval_seconds:
        interval, _ = IntervalSchedule.objects.get_or_create(every=interval_seconds, period=IntervalSchedule.SECONDS)
        return {"interval": interval, "crontab": None}
    minute, hour, day_of_month, month_of_year, day_of_week = cron.split()
    try:
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
            timezone=timezone.get_default_timezone_name(),
        )
        crontab.schedule  # noqa: B018  (parses the fields: a bad one raises here)
    except (ValueError, TypeError) as exc:
        raise ValidationFailed(f"{ERR_BAD_CRON}: {exc}", field="cron") from exc
    return {"interval": None, "crontab": crontab}


def _normalised(cron, template):
    template = {field: template.get(field) or "" for field in TEMPLATE_FIELDS}
    template["task_type"] = template["task_type"] or "feature"
    template["priority"] = template["priority"] or "normal"
    return " ".join((cron or "").split()), template


def schedule_check(*, name, cron="", interval_seconds=None, overlap=ScheduleOverlap.SKIP, **template):
    """Raise ValidationFailed unless :func:`schedule_save` would take these values."""
    if not (name or "").strip():
        raise ValidationFailed(ERR_NAME_REQUIRED, field="name")
    cron, template = _normalised(cron, template)
    _validate(cron=cron, interval_seconds=interval_seconds, overlap=overlap, template=template)
    if cron:
        with transaction.atomic():
            _beat_schedule(cron, None)
            transaction.set_rollback(True)


def schedule_save(
    *, schedule=None, name, cron="", interval_seconds=None, overlap=ScheduleOverlap.SKIP, created_by=None, **template
):
    """Create (``schedule`` None) or change a schedule and its beat row."""
    if not (name or "").strip():
        raise ValidationFailed(ERR_NAME_REQUIRED, field="name")
    cron, template = _normalised(cron, template)
    _validate(cron=cron, interval_seconds=interval_seconds, overlap=overlap, template=template)
    with transaction.atomic():
        if TaskSchedule.objects.filter(name=name).exclude(pk=getattr(schedule, "pk", None)).exists():
            raise ValidationFailed(ERR_NAME_TAKEN, field="name")
        if schedule is None:
            schedule = TaskSchedule(name=name, created_by=created_by)
        schedule.name, schedule.cron, schedule.interval_seconds, schedule.overlap = (
            name,
            cron,
            interval_seconds or None,
            overlap,
        )
        for field, value in template.items():
            setattr(schedule, field, value)
        schedule.save()
        beat = {
            **_beat_schedule(cron, interval_seconds),
            "task": TICK_TASK,
            "args": json.dumps([schedule.pk]),
            "queue": TICK_QUEUE,
            "enabled": schedule.enabled,
            "description": f"AgentVine schedule {schedule.name!r} (tasks_app/schedules.py)",
        }
        periodic, _ = PeriodicTask.objects.update_or_create(name=f"schedule: {schedule.pk}", defaults=beat)
        if schedule.periodic_task_id != periodic.pk:
            schedule.periodic_task = periodic
            schedule.save(update_fields=["periodic_task"])
    return schedule


def schedule_set_enabled(*, schedule, enabled):
    with transaction.atomic():
        TaskSchedule.objects.filter(pk=schedule.pk).update(enabled=enabled, updated_at=timezone.now())
        if schedule.periodic_task_id:
            PeriodicTask.objects.filter(pk=schedule.periodic_task_id).update(enabled=enabled)
    schedule.refresh_from_db()
    return schedule


def schedule_delete(*, schedule):
    with transaction.atomic():
        if schedule.periodic_task_id:
            PeriodicTask.objects.filter(pk=schedule.periodic_task_id).delete()
        schedule.delete()


def _repeated_tick(schedule, now):
    """Whether a tick at ``now`` serves an instant the previous tick served."""
    if schedule.last_tick_at is None:
        return False
    if schedule.interval_seconds:
        period = timedelta(seconds=schedule.interval_seconds)
        next_due = schedule.last_tick_at + period
    else:
        periodic = schedule.periodic_task
        if periodic is None:
            return False
        crontab = periodic.schedule
        # The next instant after the previous tick, as an absolute time.
        next_due = timezone.now() + crontab.remaining_estimate(schedule.last_tick_at)
        period = timedelta(minutes=1)
    return now < next_due - min(period / 2, MAX_TICK_TOLERANCE)


def _run_create(schedule, *, now):
    task = services.task_create(
        created_by=schedule.created_by, **{field: getattr(schedule, field) for field in TEMPLATE_FIELDS}
    )
    TaskSchedule.objects.filter(pk=schedule.pk).update(
        last_task=task, runs_created=schedule.runs_created + 1, run_pending=False, updated_at=now
    )
    return task


def schedule_tick(*, schedule_id, now=None):
    """Beat's tick of one schedule: the task it created, or None (disabled,
    repeated, skipped or left pending while the last run goes)."""
    now = now or timezone.now()
    with transaction.atomic():
        schedule = (
            TaskSchedule.objects.select_for_update(of=("self",))
            .select_related("periodic_task")
            .filter(pk=schedule_id)
            .first()
        )
        if schedule is None or not schedule.enabled or _repeated_tick(schedule, now):
            return None
        TaskSchedule.objects.filter(pk=schedule.pk).update(last_tick_at=now)
        going = schedule.last_task_id and Task.objects.filter(pk=schedule.last_task_id, status__in=GOING).exists()
        if going:
            pending = schedule.overlap == ScheduleOverlap.QUEUE_ONE
            if pending:
                TaskSchedule.objects.filter(pk=schedule.pk).update(run_pending=True)
            else:
                TaskSchedule.objects.filter(pk=schedule.pk).update(ticks_skipped=schedule.ticks_skipped + 1)
            events.publish(
                "schedule.tick",
                {"id": schedule.pk, "name": schedule.name, "outcome": "pending" if pending else "skipped"},
                groups=[],
            )
            return None
        return _run_create(schedule, now=now)


def schedules_on_run_finished(sender, work_order, **kwargs):
    """``run_task_finished`` hook: a ``queue_one`` schedule whose last run
    just ended starts its pending run, in the same transaction."""
    if not graph_selectors.finished_task_links(work_order=work_order)[2]:
        return
    # Locked whatever its flag says: a tick holding the lock first saw this
    # run going and set run_pending (seen here once it commits); a tick
    # waiting for it sees this run ended and creates the next run itself.
    schedule = TaskSchedule.objects.select_for_update().filter(last_task_id=work_order.task_id).first()
    if schedule is not None and schedule.run_pending and schedule.enabled:
        _run_create(schedule, now=timezone.now())
