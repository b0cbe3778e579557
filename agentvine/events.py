"""The one place that publishes live events.

Services call :func:`publish` inside their transaction; the event goes out on
the Channels layer only after the transaction commits, so nobody sees a state
that was rolled back. Event types are namespaced (``work_order.updated``);
Channels maps them to consumer handlers (``work_order_updated``).
"""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

ACTIVITY_GROUP = "activity"


def task_group(task_id):
    return f"task.{task_id}"


def worker_group(worker_id):
    return f"worker.{worker_id}"


def conversation_group(conversation_id):
    return f"conversation.{conversation_id}"


def _send(groups, message):
    layer = get_channel_layer()
    if layer is None:
        return
    for group in groups:
        try:
            async_to_sync(layer.group_send)(group, message)
        except Exception:
            # The live layer is best effort: the state is already committed in
            # Postgres and pages can always re-read it.
            logger.warning("could not publish %s to %s", message["type"], group, exc_info=True)


def publish(event_type, payload, *, groups):
    """Queue ``event_type`` with ``payload`` for ``groups`` after commit."""
    message = {"type": event_type, "payload": payload}
    groups = [ACTIVITY_GROUP, *groups]
    transaction.on_commit(lambda: _send(groups, message))
