import os

from celery import Celery
from celery.signals import beat_init, worker_init

from agentvine.security import process_protect

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentvine.settings")

app = Celery("agentvine")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
@beat_init.connect
def _protect_worker(**kwargs):
    # Before the pool forks: every slot inherits it, and the agents they
    # start cannot read the worker's environment or memory (agentvine/security.py).
    process_protect()
