import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentvine.settings")

app = Celery("agentvine")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# --- Metrics (agentvine/metrics.py): what a guardian found is recorded
# nowhere else. --------------------------------------------------------------
@signals.task_postrun.connect
def _count_guardian_findings(task=None, retval=None, state=None, **extra):
    name = getattr(task, "name", "")
    if state == "SUCCESS" and name.startswith("workers_app.guard_"):
        from agentvine.metrics import count_guardian_findings

        count_guardian_findings(task_name=name, result=retval)
