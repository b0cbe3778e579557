"""Thin Celery entry points for chat_app."""

from celery import shared_task

from agentvine.events import live_event_prune


@shared_task(name="chat_app.prune_live_events", ignore_result=True)
def prune_live_events():
    """Periodic: drop catch-up events past retention, a bounded amount per run."""
    return live_event_prune()
