"""Writes for workers (execution slots) and agent sessions."""

import hashlib
import secrets

from django.db import IntegrityError, transaction
from django.db.models import Exists
from django.utils import timezone

from agentvine import events
from agentvine.errors import ExecutionFenced, IllegalTransition, ValidationFailed
from queue_app.lifecycle import ERR_FENCED, work_order_requeue, worker_event
from queue_app.models import ACTIVE_STATUSES, Execution, ExecutionStatus, WorkOrder
from workers_app.host_work import host_cleanup_request, host_of
from workers_app.models import AgentSession, ApiToken, SessionStatus, Worker, WorkerStatus, WorkerToken
from workers_app.workspaces import workspace_remove

ERR_SLOT_RESTARTED = "worker process of slot {name} died while running this work order"
ERR_SESSION_EXISTS = "a session with this session_id already exists"
ERR_SESSION_TERMINATED = "session is already terminated"
ERR_SESSION_ID_REQUIRED = "session_id is required"
ERR_TOKEN_NAME_REQUIRED = "token name is required"

# Key prefixes tell the two kinds of token apart at a glance (and in logs,
# where only the prefix may ever appear).
WORKER_TOKEN_PREFIX = "avw_"
API_TOKEN_PREFIX = "avo_"


def worker_publish(worker):
    """Publish ``worker``'s current state (``worker.updated``) after commit."""
    event_type, payload, groups = worker_event(worker)
    events.publish(event_type, payload, groups=groups)


def worker_register(*, name, hostname="", pid=None, new_process=False):
    """Register (or re-register after a restart) the slot called ``name``.

    ``new_process`` says a fresh process is taking the slot over (Celery
    replaced a killed pool process, or the whole worker restarted): whatever
    the row says its predecessor was running is lost with that process, so
    it is requeued now, spending a retry, instead of waiting for the
    stalled-worker guardian. Work that kills its process every time thus
    ends ``dead`` after its retries.
    """
    if new_process:
        _requeue_lost_work(name)
    now = timezone.now()
    with transaction.atomic():
        worker, _ = Worker.objects.update_or_create(
            name=name,
            defaults={
                "hostname": hostname,
                "pid": pid,
                "status": WorkerStatus.IDLE,
                "last_heartbeat_at": now,
                "current_work_order": None,
            },
        )
        worker_publish(worker)
    return worker


def _requeue_lost_work(name):
    lost = WorkOrder.objects.filter(worker__name=name, status__in=ACTIVE_STATUSES)
    for work_order in lost:
        try:
            work_order_requeue(work_order=work_order, reason=ERR_SLOT_RESTARTED.format(name=name), lost=True)
        except IllegalTransition:
            pass  # a guardian or a cancel moved it on meanwhile


def worker_heartbeat(*, worker):
    """Record a heartbeat. A slot a guardian had given up on (offline) comes
    back idle: its old work was requeued when it went offline. Returns False
    when the row is gone (deregistered): the caller re-registers."""
    now = timezone.now()
    live = Worker.objects.filter(pk=worker.pk).exclude(status=WorkerStatus.OFFLINE)
    if live.update(last_heartbeat_at=now) == 1:
        return True
    with transaction.atomic():
        back = Worker.objects.filter(pk=worker.pk, status=WorkerStatus.OFFLINE).update(
            status=WorkerStatus.IDLE, current_work_order=None, last_heartbeat_at=now, updated_at=now
        )
        if back:
            worker_publish(Worker.objects.get(pk=worker.pk))
    return back == 1


def worker_release(*, worker):
    """The slot's agent stopped without a completion or a failure (cancelled,
    preempted, shutting down): the slot is free again."""
    Worker.objects.filter(pk=worker.pk).exclude(status=WorkerStatus.OFFLINE).update(
        status=WorkerStatus.IDLE, current_work_order=None, updated_at=timezone.now()
    )


def worker_mark_offline(*, worker, reason=""):
    with transaction.atomic():
        Worker.objects.filter(pk=worker.pk).update(
            status=WorkerStatus.OFFLINE, current_work_order=None, updated_at=timezone.now()
        )
        worker.refresh_from_db()
        worker_publish(worker)
    return worker


# --- agent sessions (the agent's own conversation) ------------------------------


def agent_session_set_agent_id(*, session, session_id, execution=None):
    """Record the id the agent reported for its conversation (codex picks its
    own); by the run ``execution`` only while it is still the live one (a
    stale run would point the task's next turn at its own conversation)."""
    if not session_id or session_id == session.session_id:
        return session
    sessions = AgentSession.objects.filter(pk=session.pk)
    if execution is not None:
        sessions = sessions.filter(
            Exists(Execution.objects.filter(pk=execution.pk, session_id=session.pk, status=ExecutionStatus.RUNNING))
        )
    try:
        with transaction.atomic():
            updated = sessions.update(session_id=session_id, last_activity_at=timezone.now())
    except IntegrityError:
        # session_id is unique: another session already has that id.
        raise ValidationFailed(ERR_SESSION_EXISTS, field="session_id") from None
    if updated != 1 and execution is not None:
        raise ExecutionFenced(ERR_FENCED.format(execution=execution.pk))
    session.refresh_from_db()
    return session


def worker_deregister(*, worker):
    """A worker leaves for good: its tokens stop working, its row stays for history."""
    now = timezone.now()
    with transaction.atomic():
        WorkerToken.objects.filter(worker=worker, revoked_at__isnull=True).update(revoked_at=now)
        return worker_mark_offline(worker=worker, reason="deregistered")


# --- API tokens -------------------------------------------------------------------


def token_hash(key):
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key(prefix):
    return prefix + secrets.token_urlsafe(32)


def worker_token_issue(*, worker):
    """A new token for ``worker``; earlier ones are revoked. The key is shown once."""
    key = _new_key(WORKER_TOKEN_PREFIX)
    with transaction.atomic():
        WorkerToken.objects.filter(worker=worker, revoked_at__isnull=True).update(revoked_at=timezone.now())
        WorkerToken.objects.create(worker=worker, key_hash=token_hash(key), prefix=key[:12])
    return key


def worker_register_with_token(*, name, hostname="", pid=None):
    """Register a remote worker and hand back its token (once)."""
    with transaction.atomic():
        worker = worker_register(name=name, hostname=hostname, pid=pid)
        key = worker_token_issue(worker=worker)
    return worker, key


def api_token_create(*, user, name):
    """A personal API token for an operator. Returns (token row, key); the key is shown once."""
    if not name or not name.strip():
        raise ValidationFailed(ERR_TOKEN_NAME_REQUIRED, field="name")
    key = _new_key(API_TOKEN_PREFIX)
    token = ApiToken.objects.create(user=user, name=name.strip(), key_hash=token_hash(key), prefix=key[:12])
    return token, key


def api_token_revoke(*, token):
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


# --- agent sessions -----------------------------------------------------------------


def _publish_session(session):
    payload = {
        "id": str(session.id),
        "session_id": session.session_id,
        "status": session.status,
        "task_id": str(session.task_id) if session.task_id else None,
        "worker_id": str(session.worker_id) if session.worker_id else None,
    }
    groups = [events.task_group(session.task_id)] if session.task_id else []
    events.publish("session.updated", payload, groups=groups)


def agent_session_create(*, session_id, task=None, worker=None):
    """Record the mapping agent conversation id ↔ task ↔ worker."""
    if not session_id or not session_id.strip():
        raise ValidationFailed(ERR_SESSION_ID_REQUIRED, field="session_id")
    with transaction.atomic():
        if AgentSession.objects.filter(session_id=session_id).exists():
            raise ValidationFailed(ERR_SESSION_EXISTS, field="session_id")
        session = AgentSession.objects.create(session_id=session_id, task=task, worker=worker)
        _publish_session(session)
    return session


def agent_session_touch(*, session, agent_session_id=None, execution=None):
    """Activity on a session keeps it alive (and wakes an idle one);
    ``agent_session_id`` records the id the agent gave its conversation.
    Reported by the run ``execution``: refused once it is not the live one."""
    now = timezone.now()
    with transaction.atomic():
        if (
            execution is not None
            and not Execution.objects.filter(
                pk=execution.pk, session_id=session.pk, status=ExecutionStatus.RUNNING
            ).exists()
        ):
            raise ExecutionFenced(ERR_FENCED.format(execution=execution.pk))
        agent_session_set_agent_id(session=session, session_id=agent_session_id, execution=execution)
        updated = AgentSession.objects.filter(
            pk=session.pk, status__in=[SessionStatus.ACTIVE, SessionStatus.IDLE]
        ).update(last_activity_at=now, status=SessionStatus.ACTIVE)
        if updated != 1:
            raise IllegalTransition(ERR_SESSION_TERMINATED)
        session.refresh_from_db()
        _publish_session(session)
    return session


def agent_session_terminate(*, session, reason="terminated"):
    """End an agent session for good and remove its task's workspace."""
    now = timezone.now()
    with transaction.atomic():
        updated = AgentSession.objects.filter(
            pk=session.pk, status__in=[SessionStatus.ACTIVE, SessionStatus.IDLE]
        ).update(status=SessionStatus.TERMINATED, terminated_at=now, termination_reason=reason[:200])
        if updated != 1:
            raise IllegalTransition(ERR_SESSION_TERMINATED)
        session.refresh_from_db()
        _publish_session(session)
        if session.task_id:
            # The workspace goes with the session (its branch stays in the
            # repository cache), removed on the host that holds it: a job on
            # that host's own queue, kept until the host has done it (a host
            # that is away does it when it is back). A session without a
            # Celery slot (a remote worker's, or none) is removed here, where
            # the workspace root is visible when it is shared.
            host = host_of(session.worker)
            if host is not None:
                host_cleanup_request(host=host, task=session.task)
            else:
                transaction.on_commit(lambda: workspace_remove(task=session.task))
    return session
