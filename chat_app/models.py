import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class SenderKind(models.TextChoices):
    OPERATOR = "operator", "Operator"
    AGENT = "agent", "Agent"
    DISCORD = "discord", "Discord user"
    SLACK = "slack", "Slack user"
    SYSTEM = "system", "System"
    EXTERNAL = "external", "Other agent or program"


class SenderProfile(models.Model):
    """Who a message is from or to: one row per person, agent or program.

    ``key`` makes identities unique and stable: ``user:<id>``, ``agent:<task id>``,
    ``discord:<discord user id>``, ``system``. The row doubles as the
    recipient's inbox lock: batches lock it to take a contiguous range of
    ``inbox_next_position``.
    """

    id = models.BigAutoField(primary_key=True)
    key = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=10, choices=SenderKind.choices)
    display_name = models.CharField(max_length=200)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="sender_profiles"
    )
    task = models.ForeignKey(
        "tasks_app.Task", null=True, blank=True, on_delete=models.CASCADE, related_name="sender_profiles"
    )
    discord_username = models.CharField(max_length=100, blank=True)
    discord_user_id = models.CharField(max_length=32, blank=True, db_index=True)
    inbox_next_position = models.BigIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["display_name"]

    def __str__(self):
        return self.display_name


class Conversation(models.Model):
    """A chat thread; a task's agent chat uses the task id as its id."""

    id = models.CharField(max_length=200, primary_key=True)
    task = models.ForeignKey(
        "tasks_app.Task", null=True, blank=True, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True)
    # Messages operators have not read yet (reset by conversation_mark_read).
    unread_count = models.PositiveIntegerField(default=0)
    last_message_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-last_message_at"]

    def __str__(self):
        return self.title or self.id


class MessageKind(models.TextChoices):
    CHAT = "chat", "Chat"
    QUESTION = "question", "Question"
    ANSWER = "answer", "Answer"
    NOTICE = "notice", "System notice"
    PROGRESS = "progress", "Progress report"


class DeliveryStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class ChatMessage(models.Model):
    """One message: who sent it to whom, about which work, and its delivery."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    kind = models.CharField(max_length=10, choices=MessageKind.choices, default=MessageKind.CHAT)
    sender = models.ForeignKey(SenderProfile, on_delete=models.PROTECT, related_name="sent_messages")
    recipient = models.ForeignKey(
        SenderProfile, null=True, blank=True, on_delete=models.PROTECT, related_name="received_messages"
    )
    text = models.TextField()
    task = models.ForeignKey(
        "tasks_app.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="chat_messages"
    )
    work_order = models.ForeignKey(
        "queue_app.WorkOrder", null=True, blank=True, on_delete=models.SET_NULL, related_name="chat_messages"
    )
    execution = models.ForeignKey(
        "queue_app.Execution", null=True, blank=True, on_delete=models.SET_NULL, related_name="chat_messages"
    )
    # An answer points at its question.
    parent_message = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replies")
    # Order within the recipient's inbox; a batch takes a contiguous range.
    inbox_position = models.BigIntegerField(null=True, blank=True)
    batch_id = models.UUIDField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.QUEUED)
    failure_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    # Questions only: the first answer wins (compare-and-set on answered_at).
    answered_at = models.DateTimeField(null=True, blank=True)
    answered_by = models.ForeignKey(
        SenderProfile, null=True, blank=True, on_delete=models.SET_NULL, related_name="answered_questions"
    )
    answer_text = models.TextField(blank=True)
    # Questions only: the run that asked ended without an answer (the agent
    # stopped waiting); a closed question can no longer be answered.
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["recipient", "inbox_position"], name="chatmessage_unique_inbox_position"),
        ]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="chatmessage_conversation_idx"),
            models.Index(
                fields=["created_at"],
                name="chatmessage_pending_q_idx",
                condition=Q(kind="question", answered_at__isnull=True, closed_at__isnull=True),
            ),
            models.Index(
                fields=["recipient", "inbox_position"],
                name="chatmessage_inbox_queued_idx",
                condition=Q(status="queued"),
            ),
        ]

    def __str__(self):
        return f"{self.sender_id}: {self.text[:40]}"


class NotificationEvent(models.TextChoices):
    QUESTION_ASKED = "question_asked", "An agent asked a question"
    TASK_FAILED = "task_failed", "A task failed (retries spent, or not retryable)"
    TASK_COMPLETED = "task_completed", "A task completed"
    AGENT_QUIET = "agent_quiet", "A running agent printed nothing for a while"


class ChannelKind(models.TextChoices):
    WEBHOOK = "webhook", "Signed webhook"
    SLACK = "slack", "Slack incoming webhook"
    DISCORD = "discord", "Discord webhook"
    EMAIL = "email", "Email"


def _webhook_secret():
    import secrets

    return secrets.token_urlsafe(32)


class NotificationChannel(models.Model):
    """Where an operator wants to hear of the events they subscribe to.

    ``target`` is a URL (webhook, Slack, Discord) or an email address;
    ``secret`` signs webhook deliveries (HMAC-SHA256, chat_app/notifications.py).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_channels")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=ChannelKind.choices)
    target = models.CharField(max_length=500)
    events = models.JSONField(default=list, help_text="Event kinds this channel receives.")
    secret = models.CharField(max_length=100, default=_webhook_secret, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["owner", "name"]

    def __str__(self):
        return f"{self.name} ({self.get_kind_display()})"


class NotificationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class NotificationDelivery(models.Model):
    """One event for one channel, and every attempt to deliver it (``log``:
    ``{"at", "status_code", "error"}`` each)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    channel = models.ForeignKey(NotificationChannel, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=20, choices=NotificationEvent.choices)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=NotificationStatus.choices, default=NotificationStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    log = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # When the next attempt is due: a pending row overdue by more than a
    # minute lost its doorbell (a broker restarted empty) and is rung again.
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # agent_quiet only: the run it was about, so it is told once.
    execution = models.ForeignKey(
        "queue_app.Execution", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["next_attempt_at"], name="notification_pending_idx", condition=Q(status="pending")),
        ]

    def __str__(self):
        return f"{self.event} → {self.channel_id}: {self.status}"
