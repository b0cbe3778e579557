"""What the lost-dispatch guardian does for notifications: quiet agents are
told of once per run, and deliveries whose doorbell was lost ring again."""

from datetime import timedelta

import pytest
from django.utils import timezone

from chat_app import notifications
from chat_app.models import NotificationDelivery, NotificationEvent
from queue_app import lifecycle
from queue_app.models import Execution
from tasks_app.services import task_create

pytestmark = pytest.mark.django_db


def _channel(operator, events):
    return notifications.notification_channel_create(
        owner=operator, name="hook", kind="webhook", target="https://hooks.example/in", events=events
    )


def test_an_agent_quiet_past_the_limit_is_told_of_once_and_a_waiting_one_never(operator, worker, settings):
    settings.AGENTVINE_QUIET_WARNING_SECONDS = 60
    _channel(operator, [NotificationEvent.AGENT_QUIET])
    task = task_create(title="Long silence", created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    assert notifications.notifications_guard() == (0, 0)  # just started

    Execution.objects.filter(pk=execution.pk).update(started_at=timezone.now() - timedelta(minutes=5))

    assert notifications.notifications_guard() == (0, 1)
    [told] = NotificationDelivery.objects.filter(event=NotificationEvent.AGENT_QUIET)
    assert told.payload["execution_id"] == str(execution.pk)
    assert told.payload["text"] == notifications.MSG_AGENT_QUIET.format(minutes=1)
    assert notifications.notifications_guard() == (0, 0)


def test_a_pending_delivery_whose_doorbell_was_lost_rings_again(operator, worker):
    channel = _channel(operator, [NotificationEvent.TASK_FAILED])
    stale = NotificationDelivery.objects.create(
        channel=channel, event="task_failed", payload={}, next_attempt_at=timezone.now() - timedelta(minutes=5)
    )
    NotificationDelivery.objects.create(channel=channel, event="task_failed", payload={})

    assert notifications.notifications_guard() == (1, 0)
    stale.refresh_from_db()
    assert stale.next_attempt_at > timezone.now() - timedelta(seconds=5)
    assert notifications.notifications_guard() == (0, 0)


def test_completion_and_a_final_failure_are_queued_for_their_subscribers_only(operator, worker):
    _channel(operator, [NotificationEvent.TASK_COMPLETED])
    done = task_create(title="Will finish", created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=done.work_orders.get().id)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)

    lifecycle.work_order_complete(work_order=work_order, worker=worker, execution=execution)

    [delivery] = NotificationDelivery.objects.all()
    assert delivery.event == NotificationEvent.TASK_COMPLETED
    assert delivery.payload["task"] == {"id": str(done.id), "title": "Will finish"}
    failing = task_create(title="Will fail", created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=failing.work_orders.get().id)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    lifecycle.work_order_fail(work_order=work_order, worker=worker, execution=execution, error="boom", retryable=False)
    assert NotificationDelivery.objects.count() == 1  # nobody subscribed to failures
