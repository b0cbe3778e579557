"""Reads for chat, questions, the live-event log and agent activity."""

import uuid
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Max, Q
from django.utils import timezone

from agentvine import db, events
from agentvine.errors import NotFound
from agentvine.models import LiveEvent
from chat_app.models import ChatMessage, Conversation, DeliveryStatus, MessageKind, SenderProfile
from queue_app.models import ACTIVE_STATUSES, Execution, ExecutionStatus, WorkOrder, WorkOrderStatus
from tasks_app.models import Task
from workers_app.models import AgentSession, Worker, WorkerStatus

ERR_QUESTION_NOT_FOUND = "question not found"
ERR_TASK_NOT_FOUND = "task not found"
ERR_UNKNOWN_TARGET = "unknown target {target}: not a task id, agent session or worker name"
ERR_TARGET_HAS_NO_TASK = "{target} is not working on a task"

# A worker whose heartbeat is older than this many heartbeat intervals is
# presumed dead (the stalled-worker guardian uses the same idea).
HEARTBEAT_GRACE_INTERVALS = 3

# A question still waiting for a person: neither answered nor closed with its run.
OPEN_QUESTION = {"kind": MessageKind.QUESTION, "answered_at__isnull": True, "closed_at__isnull": True}


# --- live-event log ----------------------------------------------------------------


def live_events_after(*, group, after_id, limit=500):
    """Events of ``group`` with id > ``after_id``, oldest first."""
    events_qs = LiveEvent.objects.filter(id__gt=after_id)
    if group != events.ACTIVITY_GROUP:
        events_qs = events_qs.filter(groups__contains=f" {group} ")
    return list(events_qs.order_by("id")[:limit])


def live_event_frame(event):
    return events.event_frame(event_id=event.id, event_type=event.type, payload=event.payload, at=event.created_at)


def latest_live_event_id():
    return LiveEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


# --- tasks, questions, conversations ------------------------------------------------


def task_exists(*, task_id):
    return Task.objects.filter(pk=task_id).exists()


def task_for_target(*, target):
    """The task whose agent a message to ``target`` is for.

    ``target`` is what a person types at a terminal: a task id, an agent
    session (its id or the agent's own session id), or a worker's name (the
    task it is running now).
    """

    target = str(target).strip()
    try:
        target_uuid = uuid.UUID(target)
    except ValueError:
        target_uuid = None
    if target_uuid is not None:
        task = Task.objects.filter(pk=target_uuid).first()
        if task is not None:
            return task
    session = (
        AgentSession.objects.select_related("task")
        .filter(Q(pk=target_uuid) if target_uuid is not None else Q(session_id=target))
        .first()
    )
    if session is not None:
        if session.task is None:
            raise NotFound(ERR_TARGET_HAS_NO_TASK.format(target=target))
        return session.task
    worker = Worker.objects.select_related("current_work_order__task").filter(name=target).first()
    if worker is not None:
        if worker.current_work_order is None:
            raise NotFound(ERR_TARGET_HAS_NO_TASK.format(target=target))
        return worker.current_work_order.task
    raise NotFound(ERR_UNKNOWN_TARGET.format(target=target))


def task_get(*, task_id):
    task = Task.objects.filter(pk=task_id).first()
    if task is None:
        raise NotFound(ERR_TASK_NOT_FOUND)
    return task


def question_get(*, question_id):
    try:
        question_id = uuid.UUID(str(question_id))
    except ValueError:
        raise NotFound(ERR_QUESTION_NOT_FOUND) from None
    question = (
        ChatMessage.objects.select_related("sender", "conversation")
        .filter(pk=question_id, kind=MessageKind.QUESTION)
        .first()
    )
    if question is None:
        raise NotFound(ERR_QUESTION_NOT_FOUND)
    return question


def pending_questions():
    """Questions nobody has answered yet, oldest first (they have waited longest)."""
    return (
        ChatMessage.objects.filter(**OPEN_QUESTION)
        .select_related("sender", "task", "work_order")
        .order_by("created_at")
    )


def pending_question_count():
    return ChatMessage.objects.filter(
        kind=MessageKind.QUESTION, answered_at__isnull=True, closed_at__isnull=True
    ).count()


def pending_questions_newest(*, limit=20):
    """``(count, [(id, task title), …])``: how many questions wait, and the
    newest ``limit`` of them (pages notify of a question by its id). One query
    while fewer than ``limit`` wait, the usual case."""
    newest = list(
        ChatMessage.objects.filter(**OPEN_QUESTION).order_by("-created_at").values_list("id", "task__title")[:limit]
    )
    count = len(newest) if len(newest) < limit else pending_question_count()
    return count, newest


def conversations_overview():
    """Conversations with their unread and needs-answer counts, for the 📬 badge."""
    return Conversation.objects.annotate(
        pending_questions=Count(
            "messages",
            filter=Q(
                messages__kind=MessageKind.QUESTION,
                messages__answered_at__isnull=True,
                messages__closed_at__isnull=True,
            ),
        )
    ).order_by("-last_message_at")


def conversation_state(*, conversation_id):
    """``{"unread": n, "pending_questions": n, "needs_answer": bool}`` for one conversation."""
    conversation = Conversation.objects.filter(pk=str(conversation_id)).first()
    pending = ChatMessage.objects.filter(
        conversation_id=str(conversation_id),
        kind=MessageKind.QUESTION,
        answered_at__isnull=True,
        closed_at__isnull=True,
    ).count()
    return {
        "unread": conversation.unread_count if conversation else 0,
        "pending_questions": pending,
        "needs_answer": pending > 0,
    }


def question_state(*, question_id):
    """``(answered_at, answer_text, work_order_status)`` for an agent waiting on an answer."""
    row = (
        ChatMessage.objects.filter(pk=question_id, kind=MessageKind.QUESTION)
        .values_list("answered_at", "answer_text", "work_order__status")
        .first()
    )
    if row is None:
        raise NotFound(ERR_QUESTION_NOT_FOUND)
    return row


# --- inboxes and history ---------------------------------------------------------------


def _inbox(**recipient):
    return (
        ChatMessage.objects.filter(status=DeliveryStatus.QUEUED, inbox_position__isnull=False, **recipient)
        .select_related("sender")
        .order_by("inbox_position")
    )


def inbox_queued(*, recipient):
    """The recipient's queued messages in delivery order."""
    return _inbox(recipient=recipient)


def _agent_key(task):
    return f"agent:{task.pk}"


def inbox_of_task(*, task):
    """The queued messages of ``task``'s agent, in delivery order (one query)."""
    return _inbox(recipient__key=_agent_key(task))


def inbox_of_task_waiting(*, task):
    """Whether ``task``'s agent has queued messages: the one read most runs
    end with (hand-built, it costs a fraction of the ORM's ``exists()``)."""
    messages, connection = db.table(ChatMessage)
    profiles, _ = db.table(SenderProfile)
    queued, queued_params = messages.where(
        {"status": DeliveryStatus.QUEUED, "inbox_position__isnull": False}, connection, alias="m"
    )
    recipient, recipient_params = profiles.where({"key": _agent_key(task)}, connection, alias="p")
    sql = (
        f"SELECT 1 FROM {messages.name} m JOIN {profiles.name} p"
        f" ON p.{profiles.columns['id']} = m.{messages.columns['recipient_id']}"
        f" WHERE {queued} AND {recipient} LIMIT 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*queued_params, *recipient_params])
        return cursor.fetchone() is not None


def _profile_filter(prefix, value):
    """Match a profile by id, by key (``discord:123``) or by display name."""
    value = str(value)
    if value.isdigit():
        return Q(**{f"{prefix}_id": int(value)}) | Q(**{f"{prefix}__key": value})
    return Q(**{f"{prefix}__key": value}) | Q(**{f"{prefix}__display_name": value})


def message_history(
    *,
    sender=None,
    recipient=None,
    task=None,
    work_order=None,
    conversation=None,
    status=None,
    kind=None,
    since=None,
    until=None,
    text=None,
):
    """Every message matching the filters, oldest first (paginate the result).

    ``sender`` / ``recipient`` accept a profile, its id, its key or its display
    name; ``task`` / ``work_order`` an instance or id; ``since`` / ``until``
    datetimes; ``text`` a case-insensitive substring.
    """
    qs = ChatMessage.objects.select_related("sender", "recipient", "answered_by")
    if sender is not None:
        qs = (
            qs.filter(sender=sender)
            if isinstance(sender, SenderProfile)
            else qs.filter(_profile_filter("sender", sender))
        )
    if recipient is not None:
        if isinstance(recipient, SenderProfile):
            qs = qs.filter(recipient=recipient)
        else:
            qs = qs.filter(_profile_filter("recipient", recipient))
    if task is not None:
        qs = qs.filter(task_id=getattr(task, "pk", task))
    if work_order is not None:
        qs = qs.filter(work_order_id=getattr(work_order, "pk", work_order))
    if conversation is not None:
        qs = qs.filter(conversation_id=str(getattr(conversation, "pk", conversation)))
    if status:
        qs = qs.filter(status=status)
    if kind:
        qs = qs.filter(kind=kind)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    if until is not None:
        qs = qs.filter(created_at__lt=until)
    if text:
        qs = qs.filter(text__icontains=text)
    return qs.order_by("created_at", "id")


# --- agent activity -------------------------------------------------------------------


def _heartbeat_cutoff(now):
    return now - timedelta(seconds=settings.AGENTVINE_HEARTBEAT_SECONDS * HEARTBEAT_GRACE_INTERVALS)


def is_agent_active(*, worker=None, task=None):
    """Is an agent working right now (on ``worker``, or on ``task``)?

    Active means: a claimed/running/waiting run work order on a worker whose
    heartbeat is fresh. A dead slot with a stale "running" row is not active.
    """
    now = timezone.now()
    qs = WorkOrder.objects.filter(
        status__in=list(ACTIVE_STATUSES),
        worker__isnull=False,
        worker__last_heartbeat_at__gte=_heartbeat_cutoff(now),
    ).exclude(worker__status=WorkerStatus.OFFLINE)
    if worker is not None:
        qs = qs.filter(worker_id=getattr(worker, "pk", worker))
    if task is not None:
        qs = qs.filter(task_id=getattr(task, "pk", task))
    return qs.exists()


def agents_activity(*, include_offline=False):
    """One entry per worker slot: what its agent is doing, since when, last output.

    Derived from workers (heartbeats), their active work orders and the
    running executions: four queries however many agents there are.
    """
    now = timezone.now()
    cutoff = _heartbeat_cutoff(now)
    workers = Worker.objects.all().order_by("name")
    if not include_offline:
        workers = workers.exclude(status=WorkerStatus.OFFLINE)
    workers = list(workers)
    work_orders = {
        wo.worker_id: wo
        for wo in WorkOrder.objects.filter(
            worker_id__in=[w.pk for w in workers], status__in=list(ACTIVE_STATUSES)
        ).select_related("task")
    }
    executions = {
        ex.work_order_id: ex
        for ex in Execution.objects.filter(
            work_order_id__in=[wo.pk for wo in work_orders.values()], status=ExecutionStatus.RUNNING
        ).annotate(last_output_at=Max("chunks__created_at"))
    }
    open_questions = dict(
        ChatMessage.objects.filter(
            work_order_id__in=[wo.pk for wo in work_orders.values()],
            **OPEN_QUESTION,
        )
        .values_list("work_order_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    return [_activity_entry(w, work_orders.get(w.pk), executions, open_questions, cutoff) for w in workers]


def _activity_entry(worker, work_order, executions, open_questions, cutoff):
    alive = worker.last_heartbeat_at is not None and worker.last_heartbeat_at >= cutoff
    entry = {
        "worker_id": str(worker.pk),
        "worker_name": worker.name,
        "hostname": worker.hostname,
        "worker_status": worker.status,
        "last_heartbeat_at": worker.last_heartbeat_at,
        "alive": alive and worker.status != WorkerStatus.OFFLINE,
        "active": False,
        "doing": "idle",
        "since": None,
        "last_output_at": None,
        "task_id": None,
        "task_title": None,
        "work_order_id": None,
        "work_order_status": None,
        "execution_id": None,
        "waiting_for_human": False,
        "open_questions": 0,
    }
    if work_order is None:
        return entry
    execution = executions.get(work_order.pk)
    waiting = work_order.status == WorkOrderStatus.WAITING
    entry.update(
        active=entry["alive"],
        doing=(
            "waiting for a human answer"
            if waiting
            else f"running {work_order.task.title}"
            if work_order.status == WorkOrderStatus.RUNNING
            else f"starting {work_order.task.title}"
        ),
        since=work_order.started_at or work_order.claimed_at,
        task_id=str(work_order.task_id),
        task_title=work_order.task.title,
        work_order_id=str(work_order.pk),
        work_order_status=work_order.status,
        execution_id=str(execution.pk) if execution else None,
        last_output_at=execution.last_output_at if execution else None,
        waiting_for_human=waiting,
        open_questions=open_questions.get(work_order.pk, 0),
    )
    return entry


def agent_activity(*, worker):
    worker_id = getattr(worker, "pk", worker)
    for entry in agents_activity(include_offline=True):
        if entry["worker_id"] == str(worker_id):
            return entry
    raise NotFound("worker not found")
