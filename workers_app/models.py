import uuid

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
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


class WorkerToken(models.Model):
    """A worker's credential for the REST API. Only its sha256 is stored."""

    id = models.BigAutoField(primary_key=True)
    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="tokens")
    key_hash = models.CharField(max_length=64, unique=True)
    # The first characters of the key, so an operator can tell tokens apart.
    prefix = models.CharField(max_length=12)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.worker} ({self.prefix}…)"


class ApiToken(models.Model):
    """An operator's personal API token. Only its sha256 is stored."""

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=12)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.user} {self.name} ({self.prefix}…)"


class IdempotencyKey(models.Model):
    """The stored response of one write made with an ``Idempotency-Key`` header.

    The row is inserted in the same transaction as the write it guards, so a
    concurrent replay blocks on the unique index until the first request
    commits, then finds the stored response: the write is applied once.
    """

    id = models.BigAutoField(primary_key=True)
    # "user:<id>" or "worker:<id>": keys are private to whoever sent them.
    owner = models.CharField(max_length=64)
    key = models.CharField(max_length=200)
    # sha256 of method, path and body: the same key with another request is refused.
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(default=0)
    response_body = models.JSONField(null=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="idempotency_owner_key_unique")]

    def __str__(self):
        return f"{self.owner} {self.key}"


class HostCleanup(models.Model):
    """Work that must happen on one worker host, where the files are (a
    terminated session's workspace), kept until that host has done it: a
    host that is down or cut off when it is asked does it when it is back
    (workers_app.host_work drains its rows when its worker starts)."""

    id = models.BigAutoField(primary_key=True)
    # The Celery node name of the host's worker (``celery@host``): its queue is ``host.<host>``.
    host = models.CharField(max_length=200)
    task_id = models.UUIDField()
    repository_url = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["host"], name="host_cleanup_pending", condition=models.Q(done_at__isnull=True)),
        ]

    def __str__(self):
        return f"workspace of task {self.task_id} on {self.host}"
