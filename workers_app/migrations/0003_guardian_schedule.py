"""The guardians' beat schedule, as django-celery-beat rows editable in admin.

Intervals fit the defaults: a slot is stalled after 3 heartbeats (9 s), so
checking every 3 s gets killed work running again elsewhere within ~15 s.
A tick that waited longer than its interval expires: the next one covers it.
"""

from django.db import migrations

GUARDIANS = [
    ("guardians: stalled workers", "workers_app.guard_stalled_workers", 3),
    ("guardians: priority preemption", "workers_app.guard_priority_preemption", 5),
    ("guardians: lost dispatches", "workers_app.guard_lost_dispatches", 30),
    ("guardians: idle sessions", "workers_app.guard_idle_sessions", 60),
]


def schedule_install(apps, guardians):
    """Write the beat rows of ``guardians`` (name, task, seconds); later
    migrations that add a guardian call it with theirs."""
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, seconds in guardians:
        interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={
                "task": task,
                "interval": interval,
                "queue": "guardians",
                "expire_seconds": seconds,
                "enabled": True,
                "description": "AgentVine guardian (workers_app/guardians.py)",
            },
        )


def create_schedule(apps, schema_editor):
    schedule_install(apps, GUARDIANS)


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, _, _ in GUARDIANS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("workers_app", "0002_api_tokens"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
