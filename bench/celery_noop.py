"""The project's Celery app plus one no-op task: the raw-Celery baseline of bench/lifecycle.py.

Same broker, queues and worker settings as the platform's workers; the task
only counts itself in Redis so the benchmark can see when all have run.
"""

import redis
from django.conf import settings

from agentvine.celery import app

COUNTER_KEY = "bench:noop:done"
_client = None


@app.task(name="bench.noop", ignore_result=True)
def noop():
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.REDIS_URL)
    _client.incr(COUNTER_KEY)
