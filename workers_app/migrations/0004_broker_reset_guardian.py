"""The broker-reset guardian's beat row: it looks every 2 s whether the
broker's Redis came back empty, so lost doorbells ring again within seconds
(the lost-dispatch guardian's 120 s rule stays as the last resort)."""

import importlib

from django.db import migrations

GUARDIANS = [("guardians: broker reset", "workers_app.guard_broker_reset", 2)]


def create_schedule(apps, schema_editor):
    # The installer of 0003 (a module name starting with a digit: imported by name).
    importlib.import_module("workers_app.migrations.0003_guardian_schedule").schedule_install(apps, GUARDIANS)


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, _, _ in GUARDIANS]).delete()


class Migration(migrations.Migration):
    dependencies = [("workers_app", "0003_guardian_schedule")]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
