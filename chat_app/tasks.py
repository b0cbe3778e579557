"""Thin Celery entry points for chat_app."""

from celery import shared_task

from agentvine.events import live_event_prune
from chat_app import notifications


@shared_task(name="chat_app.prune_live_events", ignore_result=True)
def prune_live_events():
    """Periodic: drop catch-up events past retention, a bounded amount per run."""
    return live_event_prune()


@shared_task(name=notifications.DELIVER_TASK, bind=True, ignore_result=True, max_retries=None)
def notification_deliver(self, delivery_id):
    """One attempt at a notification; the row says whether another is due."""
    countdown = notifications.notification_attempt(delivery_id=delivery_id)
    if countdown is not None:
        # A new doorbell rather than self.retry: the row, not Celery's
        # counter, decides when to give up, and a lost one is found again.
        notifications.notification_dispatch(delivery_id=delivery_id, countdown=countdown)
