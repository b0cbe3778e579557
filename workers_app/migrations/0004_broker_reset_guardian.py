"""The broker-reset guardian's beat row: it looks every 2 s whether the
broker's Redis came back empty, so lost doorbells ring again within seconds
(the lost-dispatch guardian's 120 s rule stays as the last resort)."""

from django.db import migrations

GUARDIANS = [("guardians: broker reset", "workers_app.guard_broker_reset", 2)]


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, seconds in GUARDIANS:
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


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, _, _ in GUARDIANS]).delete()


class Migration(migrations.Migration):
    dependencies = [("workers_app", "0003_guardian_schedule")]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
