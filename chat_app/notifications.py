"""Notifications that leave the browser: an operator's channels (signed
webhooks, Slack and Discord incoming webhooks, email) hear of the events
they subscribe to.

An event becomes one :class:`NotificationDelivery` row per subscribed
channel, written with the event's own transaction; after commit each row
rings a Celery doorbell (``chat_app.notification_deliver``, on the
``guardians`` queue, so agent slots never hold it up) that makes one attempt.
A failed attempt (a connection error, a non-2xx answer) is logged on the row
and tried again with exponential backoff until
``AGENTVINE_NOTIFY_MAX_ATTEMPTS``. The lifecycle never waits for a delivery:
the hooks only write rows, and only when some channel subscribes to the event
(a cached check, so runs pay nothing when nobody listens).

Webhook requests carry ``X-AgentVine-Signature: sha256=<hex>``, the
HMAC-SHA256 with the channel's secret of ``<timestamp>.<body>``, and the
timestamp in ``X-AgentVine-Timestamp`` (receivers should refuse old ones).
"""

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from agentvine.celery import app as celery_app
from agentvine.errors import NotFound, ValidationFailed
from chat_app.models import (
    ChannelKind,
    NotificationChannel,
    NotificationDelivery,
    NotificationEvent,
    NotificationStatus,
)
from queue_app.models import Execution, ExecutionOutputChunk, ExecutionStatus, WorkOrderStatus

logger = logging.getLogger(__name__)

DELIVER_TASK = "chat_app.notification_deliver"
DELIVER_QUEUE = "guardians"
SIGNATURE_HEADER = "X-AgentVine-Signature"
TIMESTAMP_HEADER = "X-AgentVine-Timestamp"
EVENT_HEADER = "X-AgentVine-Event"
DELIVERY_HEADER = "X-AgentVine-Delivery"
# Seconds a process trusts its answer to "does any channel want this event?".
SUBSCRIPTIONS_CACHE_SECONDS = 5.0

TITLES = {
    NotificationEvent.QUESTION_ASKED: "An agent asks: {title}",
    NotificationEvent.TASK_FAILED: "Task failed: {title}",
    NotificationEvent.TASK_COMPLETED: "Task completed: {title}",
    NotificationEvent.AGENT_QUIET: "Agent quiet: {title}",
}
MSG_AGENT_QUIET = "The agent has printed nothing for {minutes:g} minutes."
# A pending delivery this late lost its doorbell: ring again.
REDISPATCH_AFTER_SECONDS = 60

_subscribed = {"at": 0.0, "events": frozenset()}


def subscribed_events():
    """Event kinds some enabled channel wants (cached per process)."""
    now = time.monotonic()
    if now - _subscribed["at"] > SUBSCRIPTIONS_CACHE_SECONDS:
        wanted = set()
        for events in NotificationChannel.objects.filter(enabled=True).values_list("events", flat=True):
            wanted.update(events or [])
        _subscribed.update(at=now, events=frozenset(wanted))
    return _subscribed["events"]


def subscriptions_changed():
    _subscribed["at"] = 0.0


ERR_CHANNEL_KIND = "unknown channel kind"
ERR_CHANNEL_EVENT = "unknown event kind: {event}"
ERR_CHANNEL_URL = "a webhook channel needs an http:// or https:// URL"
ERR_CHANNEL_EMAIL = "an email channel needs an email address"


def notification_channel_create(*, owner, name, kind, target, events):
    """Subscribe ``owner`` (an operator) to ``events`` through a new channel."""
    if kind not in ChannelKind.values:
        raise ValidationFailed(ERR_CHANNEL_KIND, field="kind")
    for event in events:
        if event not in NotificationEvent.values:
            raise ValidationFailed(ERR_CHANNEL_EVENT.format(event=event), field="events")
    target = (target or "").strip()
    if kind == ChannelKind.EMAIL:
        try:
            validate_email(target)
        except DjangoValidationError:
            raise ValidationFailed(ERR_CHANNEL_EMAIL, field="target") from None
    elif not target.startswith(("http://", "https://")):
        raise ValidationFailed(ERR_CHANNEL_URL, field="target")
    channel = NotificationChannel.objects.create(
        owner=owner, name=name[:100], kind=kind, target=target, events=sorted(set(events))
    )
    transaction.on_commit(subscriptions_changed)
    subscriptions_changed()
    return channel


def task_link(task_id):
    return f"{settings.AGENTVINE_PUBLIC_URL.rstrip('/')}/tasks/{task_id}/"


ERR_CHANNEL_NOT_FOUND = "no such notification channel of yours"


def notification_channel_delete(*, owner, channel_id):
    deleted, _ = NotificationChannel.objects.filter(pk=channel_id, owner=owner).delete()
    if not deleted:
        raise NotFound(ERR_CHANNEL_NOT_FOUND)
    subscriptions_changed()


def notify(*, event, task, text, execution=None, **extra):
    """Queue ``event`` about ``task`` for every channel subscribed to it."""
    if event not in subscribed_events():
        return []
    payload = {
        "event": event,
        "title": TITLES[event].format(title=task.title),
        "text": text,
        "task": {"id": str(task.id), "title": task.title},
        "link": task_link(task.id),
        "at": timezone.now().isoformat(),
        **extra,
    }
    # Only operators hear of tasks: a channel of a user who left (inactive)
    # or lost staff status stays silent.
    candidates = NotificationChannel.objects.filter(enabled=True, owner__is_active=True, owner__is_staff=True)
    channels = [channel for channel in candidates if event in (channel.events or [])]
    deliveries = NotificationDelivery.objects.bulk_create(
        NotificationDelivery(channel=channel, event=event, payload=payload, execution=execution) for channel in channels
    )
    for delivery in deliveries:
        transaction.on_commit(lambda pk=delivery.pk: notification_dispatch(delivery_id=pk))
    return deliveries


def notification_dispatch(*, delivery_id, countdown=None):
    try:
        celery_app.send_task(DELIVER_TASK, args=[str(delivery_id)], queue=DELIVER_QUEUE, countdown=countdown)
    except Exception:
        # The row stays pending; a redelivery sweep (or the next restart) sends it.
        logger.exception("could not queue notification %s", delivery_id)


def retry_countdown(attempts):
    return min(settings.AGENTVINE_NOTIFY_BACKOFF_SECONDS * 2 ** (attempts - 1), 3600)


# --- delivery -------------------------------------------------------------------


def webhook_signature(secret, timestamp, body):
    message = f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _slack_escape(text):
    # Slack's mrkdwn: an agent's text must not become a link or a mention.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _request_for(channel, delivery):
    payload = delivery.payload
    if channel.kind == ChannelKind.SLACK:
        title, text = _slack_escape(payload["title"]), _slack_escape(payload["text"])
        text = f"*{title}*\n{text}\n<{payload['link']}|Open in AgentVine>"
        return json.dumps({"text": text}).encode(), {}
    if channel.kind == ChannelKind.DISCORD:
        content = f"**{payload['title']}**\n{payload['text']}\n{payload['link']}"
        # No @everyone or role pings from text an agent wrote.
        body = {"content": content[:2000], "username": "AgentVine", "allowed_mentions": {"parse": []}}
        return json.dumps(body).encode(), {}
    body = json.dumps({"delivery": str(delivery.pk), **payload}).encode()
    timestamp = str(int(time.time()))
    return body, {
        SIGNATURE_HEADER: webhook_signature(channel.secret, timestamp, body),
        TIMESTAMP_HEADER: timestamp,
        EVENT_HEADER: delivery.event,
        DELIVERY_HEADER: str(delivery.pk),
    }


def _post(channel, delivery):
    """One HTTP attempt: ``(status code or None, error text)``."""
    body, headers = _request_for(channel, delivery)
    request = urllib.request.Request(
        channel.target,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "AgentVine-Notifications", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=settings.AGENTVINE_NOTIFY_TIMEOUT_SECONDS) as response:
            return response.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, str(getattr(exc, "reason", exc))[:500]


def _email(channel, delivery):
    payload = delivery.payload
    try:
        send_mail(
            subject=payload["title"][:200],
            message=f"{payload['text']}\n\n{payload['link']}\n",
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=[channel.target],
        )
    except Exception as exc:  # smtplib, socket and backend errors alike
        return None, f"{type(exc).__name__}: {exc}"[:500]
    return 250, ""


def notification_attempt(*, delivery_id):
    """Make one attempt at a pending delivery; returns the seconds to wait
    before the next one, or None when it is done (delivered, or given up)."""
    delivery = (
        NotificationDelivery.objects.select_related("channel")
        .filter(pk=delivery_id, status=NotificationStatus.PENDING)
        .first()
    )
    if delivery is None:
        return None  # delivered or given up already: a duplicate doorbell
    channel = delivery.channel
    code, error = _email(channel, delivery) if channel.kind == ChannelKind.EMAIL else _post(channel, delivery)
    ok = code is not None and 200 <= code < 300 and not error
    attempts = delivery.attempts + 1
    now = timezone.now()
    if ok:
        status = NotificationStatus.DELIVERED
    elif attempts >= settings.AGENTVINE_NOTIFY_MAX_ATTEMPTS:
        status = NotificationStatus.FAILED
    else:
        status = NotificationStatus.PENDING
    countdown = retry_countdown(attempts) if status == NotificationStatus.PENDING else None
    NotificationDelivery.objects.filter(pk=delivery.pk, status=NotificationStatus.PENDING).update(
        next_attempt_at=now + timedelta(seconds=countdown or 0),
        status=status,
        attempts=attempts,
        last_status_code=code,
        last_error=error,
        log=[*delivery.log, {"at": now.isoformat(), "status_code": code, "error": error}],
        delivered_at=now if ok else None,
    )
    return countdown


def notifications_guard(*, batch=100):
    """Run by the lost-dispatch guardian: ring again for pending deliveries
    whose doorbell was lost, and tell of running agents gone quiet (once per
    run). Returns ``(redispatched, quiet)`` counts."""
    now = timezone.now()
    with transaction.atomic():
        lost = list(
            NotificationDelivery.objects.select_for_update(skip_locked=True)
            .filter(
                status=NotificationStatus.PENDING,
                next_attempt_at__lt=now - timedelta(seconds=REDISPATCH_AFTER_SECONDS),
            )
            .values_list("pk", flat=True)[:batch]
        )
        NotificationDelivery.objects.filter(pk__in=lost).update(next_attempt_at=now)
        for pk in lost:
            transaction.on_commit(lambda pk=pk: notification_dispatch(delivery_id=pk))
    quiet = 0
    if NotificationEvent.AGENT_QUIET in subscribed_events():
        quiet = len(_agents_quiet(now=now, batch=batch))
    return len(lost), quiet


def _agents_quiet(*, now, batch):
    seconds = settings.AGENTVINE_QUIET_WARNING_SECONDS
    cutoff = now - timedelta(seconds=seconds)
    recent_output = ExecutionOutputChunk.objects.filter(execution=OuterRef("pk"), created_at__gte=cutoff)
    told = NotificationDelivery.objects.filter(execution=OuterRef("pk"), event=NotificationEvent.AGENT_QUIET)
    # Waiting for a person is not quiet: only runs whose work order runs.
    quiet = (
        Execution.objects.filter(
            status=ExecutionStatus.RUNNING, work_order__status=WorkOrderStatus.RUNNING, started_at__lt=cutoff
        )
        .exclude(Exists(recent_output))
        .exclude(Exists(told))
        .select_related("task")[:batch]
    )
    told_now = []
    for execution in quiet:
        with transaction.atomic():
            told_now += notify(
                event=NotificationEvent.AGENT_QUIET,
                task=execution.task,
                text=MSG_AGENT_QUIET.format(minutes=seconds / 60),
                execution=execution,
                execution_id=str(execution.pk),
            )
    return told_now


# --- hooks (connected in apps.py) ---------------------------------------------------


def on_attempt_failed(sender, *, work_order, execution, retry, reason, **kwargs):
    if not retry and NotificationEvent.TASK_FAILED in subscribed_events():
        notify(event=NotificationEvent.TASK_FAILED, task=work_order.task, text=reason[-2000:])


def on_work_order_completed(sender, *, work_order, **kwargs):
    if NotificationEvent.TASK_COMPLETED in subscribed_events():
        notify(event=NotificationEvent.TASK_COMPLETED, task=work_order.task, text="The agent finished its work.")
