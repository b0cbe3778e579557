"""Celery's queues and delivery settings for the broker in use: Redis (the
default) or RabbitMQ (``CELERY_BROKER_URL=amqp://…``).

A doorbell only says "claim the first ready work order"; PostgreSQL holds
the work and its order, so the two brokers differ only in how a doorbell is
kept and acknowledged:

- **Redis**: the doorbell is acknowledged when its run ends (``acks_late``)
  and Redis hands an unacknowledged one to another worker only after the
  visibility timeout, longer than the longest run. Queues are drained
  high → default → low by the worker itself (``queue_order_strategy``).
- **RabbitMQ**: durable quorum queues (replicated on a cluster, kept across
  a restart) and publisher confirms, so a doorbell the web has sent is on
  disk. A doorbell is acknowledged when a slot accepts it, not when its run
  ends: RabbitMQ closes the channel of a consumer that holds a delivery
  longer than ``consumer_timeout`` (30 minutes by default), shorter than an
  agent's run. A doorbell delivered to a worker that dies before a slot took
  it is redelivered by RabbitMQ at once; one whose slot dies mid-run is
  recovered from PostgreSQL by the guardians (orphans by lease, lost
  dispatch), as on Redis. Quorum queues have no global QoS, so a delayed
  doorbell (a retry's backoff) goes through Celery's native delayed delivery,
  which needs topic exchanges.
"""

from urllib.parse import urlparse

from kombu import Exchange, Queue

AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


def broker_is_amqp(url):
    return urlparse(url).scheme in AMQP_SCHEMES


def celery_broker_settings(url, *, agent_queues, guardian_queue, max_run_seconds):
    """The ``CELERY_*`` settings that depend on the broker at ``url``."""
    names = [*agent_queues, guardian_queue]
    if not broker_is_amqp(url):
        return {
            "CELERY_TASK_QUEUES": [Queue(name) for name in names],
            "CELERY_TASK_ACKS_LATE": True,
            "CELERY_BROKER_TRANSPORT_OPTIONS": {
                # Always drain "high" before "default" before "low" (the -Q order).
                "queue_order_strategy": "priority",
                # Longer than the longest allowed run, or Redis would hand an unacked
                # doorbell of a still-running agent to a second worker.
                "visibility_timeout": max_run_seconds + 600,
            },
            "CELERY_TASK_DEFAULT_EXCHANGE_TYPE": "direct",
        }
    return {
        "CELERY_TASK_QUEUES": [
            Queue(
                name,
                Exchange(name, type="topic", durable=True),
                routing_key=name,
                durable=True,
                queue_arguments={"x-queue-type": "quorum"},
            )
            for name in names
        ],
        "CELERY_TASK_ACKS_LATE": False,
        "CELERY_BROKER_TRANSPORT_OPTIONS": {"confirm_publish": True},
        # Celery's default exchange is named after the default queue: the
        # same type as that queue's, whichever process declares it first.
        "CELERY_TASK_DEFAULT_EXCHANGE_TYPE": "topic",
    }
