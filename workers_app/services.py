"""Writes for workers (execution slots) and agent sessions."""

import uuid

from django.db import transaction
from django.utils import timezone

from agentvine import events
from tasks_app.models import Execution, ExecutionStatus
from workers_app.models import AgentSession, SessionStatus, Worker, WorkerStatus


def _publish(worker):
    payload = {
        "id": str(worker.id),
        "name": worker.name,
        "status": worker.status,
        "hostname": worker.hostname,
        "current_work_order_id": str(worker.current_work_order_id) if worker.current_work_order_id else None,
    }
    events.publish("worker.updated", payload, groups=[events.worker_group(worker.id)])


def worker_register(*, name, hostname="", pid=None):
    """Register (or re-register after a restart) the slot called ``name``."""
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
        _publish(worker)
    return worker


def worker_heartbeat(*, worker):
    """Returns False when the row is gone (deregistered): the caller re-registers."""
    return Worker.objects.filter(pk=worker.pk).update(last_heartbeat_at=timezone.now()) == 1


def worker_mark_offline(*, worker, reason=""):
    with transaction.atomic():
        Worker.objects.filter(pk=worker.pk).update(
            status=WorkerStatus.OFFLINE, current_work_order=None, updated_at=timezone.now()
        )
        worker.refresh_from_db()
        _publish(worker)
    return worker


# --- agent sessions (the agent's own conversation) ------------------------------


def _new_session_id():
    # Claude requires a UUID for --session-id; other agents accept any string.
    return str(uuid.uuid4())


def agent_session_open(*, task, worker):
    """The session a run of ``task`` on ``worker`` works in. Returns ``(session, resume)``.

    A task keeps one live session (and with it one workspace). ``resume`` is
    True when the previous attempt in that session completed or was
    interrupted: the agent saved its conversation and continues it. After a
    failed or crashed attempt the conversation may not exist, so a fresh
    conversation id is assigned; the workspace stays.
    """
    now = timezone.now()
    with transaction.atomic():
        session = (
            AgentSession.objects.select_for_update()
            .filter(task=task)
            .exclude(status=SessionStatus.TERMINATED)
            .order_by("-created_at")
            .first()
        )
        if session is None:
            session = AgentSession.objects.create(session_id=_new_session_id(), task=task, worker=worker)
            return session, False
        last = Execution.objects.filter(session=session).order_by("-started_at").first()
        resume = last is not None and last.status in (ExecutionStatus.COMPLETED, ExecutionStatus.INTERRUPTED)
        changes = {"worker": worker, "status": SessionStatus.ACTIVE, "last_activity_at": now}
        if not resume:
            changes["session_id"] = _new_session_id()
        AgentSession.objects.filter(pk=session.pk).update(**changes)
        session.refresh_from_db()
    return session, resume


def agent_session_set_agent_id(*, session, session_id):
    """Record the id the agent reported for its conversation (codex picks its own)."""
    if not session_id or session_id == session.session_id:
        return session
    with transaction.atomic():
        AgentSession.objects.filter(pk=session.pk).update(session_id=session_id, last_activity_at=timezone.now())
        session.refresh_from_db()
    return session


def agent_session_release(*, session):
    """The run ended: the session stays for a follow-up until it is terminated."""
    AgentSession.objects.filter(pk=session.pk, status=SessionStatus.ACTIVE).update(
        status=SessionStatus.IDLE, last_activity_at=timezone.now()
    )
