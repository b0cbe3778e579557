import uuid

from django.db import models


class SenderType(models.TextChoices):
    WORKER = "worker", "Worker"
    HUMAN = "human", "Human"
    SYSTEM = "system", "System"


class MessageType(models.TextChoices):
    REQUEST = "request", "Request"
    RESPONSE = "response", "Response"
    STATUS = "status", "Status"


class ChatMessage(models.Model):
    """One message, with who sent it. The live-oversight work extends it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation_id = models.CharField(max_length=200, db_index=True)
    sender_type = models.CharField(max_length=8, choices=SenderType.choices)
    sender_id = models.CharField(max_length=200)
    message = models.TextField()
    message_type = models.CharField(max_length=10, choices=MessageType.choices, default=MessageType.REQUEST)
    parent_message = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replies")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self):
        return f"{self.sender_type}:{self.sender_id}: {self.message[:40]}"
