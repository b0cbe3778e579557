"""RabbitMQ as the broker: each test gets a vhost of its own on the machine's
RabbitMQ (127.0.0.1:5672, guest/guest, ``AGENTVINE_TEST_RABBITMQ``), deleted
afterwards; the broker itself is never restarted or reconfigured."""

import os
import subprocess
import uuid

import kombu.pools
import pytest
from django.conf import settings

from agentvine.brokers import celery_broker_settings
from agentvine.celery import app

RABBITMQ = os.environ.get("AGENTVINE_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672")


def _rabbitmqctl(*argv):
    return subprocess.run(["rabbitmqctl", *argv], check=True, capture_output=True, text=True).stdout


def _use_broker(url):
    """This process's Celery app (the one that rings doorbells) on ``url``."""
    derived = celery_broker_settings(
        url,
        agent_queues=settings.AGENT_QUEUES,
        guardian_queue=settings.GUARDIAN_QUEUE,
        max_run_seconds=settings.AGENTVINE_MAX_RUN_SECONDS,
    )
    # Celery's connection and producer pools live in kombu's registry, by
    # connection: closed and forgotten there, or the next doorbell of this
    # process would take a closed pool.
    kombu.pools.reset()
    app.conf.update(broker_url=url, **{name.removeprefix("CELERY_").lower(): value for name, value in derived.items()})
    app._pool = None
    app.__dict__.pop("amqp", None)


@pytest.fixture
def rabbitmq_vhost(monkeypatch):
    vhost = f"agentvine_test_{uuid.uuid4().hex[:10]}"
    try:
        _rabbitmqctl("add_vhost", vhost)
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.fail(f"RabbitMQ is needed for this test (rabbitmqctl add_vhost failed: {error})")
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    url = f"{RABBITMQ}/{vhost}"
    # Workers, beat and the guardians' worker the test starts inherit it.
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    _use_broker(url)
    yield vhost
    _use_broker(settings.CELERY_BROKER_URL)
    _rabbitmqctl("delete_vhost", vhost)


def rabbitmq_queues(vhost):
    """{name: (type, durable, messages ready, unacknowledged)} of the vhost's queues."""
    rows = _rabbitmqctl(
        "list_queues",
        "-q",
        "--no-table-headers",
        "-p",
        vhost,
        "name",
        "type",
        "durable",
        "messages_ready",
        "messages_unacknowledged",
    )
    queues = {}
    for line in rows.splitlines():
        name, kind, durable, ready, unacked = line.split("\t")
        queues[name] = (kind, durable == "true", int(ready), int(unacked))
    return queues


# The recovery tests run here too, with the real beat and guardians' worker.
from tests.workers_app.conftest import guardian_beat  # noqa: E402,F401
