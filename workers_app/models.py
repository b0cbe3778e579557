import uuid

from django.db import models


class WorkerStatus(models.TextChoices):
    IDLE = "idle", "Idle"
    BUSY = "busy", "Busy"
    WAITING = "waiting", "Waiting for a human"
    ERROR = "error", "Error"
    OFFLINE = "offline", "Offline"


class Worker(models.Model):
    """One execution slot: runs one agent at a time."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, unique=True)
    hostname = models.CharField(max_length=200, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    status = models.CharField(max_length=8, choices=WorkerStatus.choices, default=WorkerStatus.IDLE, db_index=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    current_work_order = models.ForeignKey(
        "queue_app.WorkOrder", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class SessionStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    IDLE = "idle", "Idle"
    TERMINATED = "terminated", "Terminated"


class AgentSession(models.Model):
    """An agent's own conversation id, tied to a task and the worker running it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session_id = models.CharField(max_length=200, unique=True)
    worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions")
    task = models.ForeignKey(
        "tasks_app.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions"
    )
    status = models.CharField(max_length=12, choices=SessionStatus.choices, default=SessionStatus.ACTIVE)
    last_activity_at = models.DateTimeField(auto_now_add=True)
    created_at = models.DateTimeField(auto_now_add=True)
    terminated_at = models.DateTimeField(null=True, blank=True)
    termination_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "last_activity_at"], name="session_status_activity_idx")]

    def __str__(self):
        return self.session_id
