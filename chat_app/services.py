"""Writes for messages, questions, inboxes and the live-event log.

Every message is one ``ChatMessage`` row with its sender and recipient
profiles, conversation, task / work order and delivery status. Messages to an
agent go to its inbox: each takes the next ``inbox_position`` of the
recipient, allocated under a row lock on the recipient's profile, so a batch
takes a contiguous range no other sender can interleave with, and delivery
walks the inbox strictly in position order.
"""

import logging
import uuid

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agentvine import events, wakeups
from agentvine.db import update_sql
from agentvine.errors import IllegalTransition, NotFound, ValidationFailed
from chat_app import notifications
from chat_app.models import (
    ChatMessage,
    Conversation,
    DeliveryStatus,
    MessageKind,
    NotificationEvent,
    SenderKind,
    SenderProfile,
)
from chat_app.selectors import inbox_of_task, inbox_of_task_waiting, inbox_queued
from queue_app import lifecycle
from queue_app.models import ACTIVE_STATUSES, WorkOrder, WorkOrderKind, WorkOrderStatus
from tasks_app.models import Task, TaskStatus

logger = logging.getLogger(__name__)

ERR_TEXT_REQUIRED = "text is required"
ERR_TEXT_TOO_LONG = "text is longer than {limit} characters"
ERR_BATCH_EMPTY = "a batch needs at least one message"
ERR_BATCH_TOO_LARGE = "a batch holds at most {limit} messages"
ERR_ALREADY_ANSWERED = "question already answered"
ERR_QUESTION_CLOSED = "the agent stopped waiting: its run ended before an answer"
ERR_NOT_A_QUESTION = "message is not a question"
ERR_WORK_ORDER_NOT_ACTIVE = "work order is not running"
ERR_NO_AGENT = "conversation has no agent to send to"
ERR_DISCORD_ID_REQUIRED = "discord_user_id is required"
ERR_SLACK_ID_REQUIRED = "user_id is required"
ERR_QUESTION_NOT_FOUND = "no such question"
ERR_SLACK_ANSWER_FORMAT = "write the question's id, then the answer: /agentvine <question id> <answer>"
ERR_NOT_QUEUED = "message is not queued"
ERR_NOT_DELIVERED = "message is not delivered"
ERR_NOT_FAILED = "only a failed message can be retried"
ERR_CONVERSATION_REQUIRED = "conversation_id or task is required"

MAX_TEXT_CHARS = 100_000
MAX_BATCH_MESSAGES = 500
SYSTEM_KEY = "system"


def _clean_text(text, *, field="text"):
    if not isinstance(text, str) or not text.strip():
        raise ValidationFailed(ERR_TEXT_REQUIRED, field=field)
    if len(text) > MAX_TEXT_CHARS:
        raise ValidationFailed(ERR_TEXT_TOO_LONG.format(limit=MAX_TEXT_CHARS), field=field)
    return text


# --- sender profiles -----------------------------------------------------------


def _profile(key, **defaults):
    profile, _ = SenderProfile.objects.get_or_create(key=key, defaults=defaults)
    return profile


def system_profile():
    return _profile(SYSTEM_KEY, kind=SenderKind.SYSTEM, display_name="AgentVine")


def operator_profile(*, user):
    return _profile(f"user:{user.pk}", kind=SenderKind.OPERATOR, display_name=user.get_username(), user=user)


def agent_profile(*, task):
    return _profile(f"agent:{task.pk}", kind=SenderKind.AGENT, display_name=f"agent: {task.title}"[:200], task=task)


def external_profile(*, name):
    """Another agent or program talking to us under its own name."""
    return _profile(f"external:{name}", kind=SenderKind.EXTERNAL, display_name=name[:200])


def discord_profile(*, discord_user_id, discord_username=""):
    """The profile of one Discord person; their current username wins.

    Attribution is per Discord user id, so two people never share a sender,
    and a username change renames the person rather than creating another.
    """
    discord_user_id = str(discord_user_id or "").strip()
    if not discord_user_id:
        raise ValidationFailed(ERR_DISCORD_ID_REQUIRED, field="discord_user_id")
    discord_username = (discord_username or "").strip()[:100]
    display_name = discord_username or f"discord:{discord_user_id}"
    profile, created = SenderProfile.objects.get_or_create(
        key=f"discord:{discord_user_id}",
        defaults={
            "kind": SenderKind.DISCORD,
            "display_name": display_name,
            "discord_user_id": discord_user_id,
            "discord_username": discord_username,
        },
    )
    if not created and discord_username and profile.discord_username != discord_username:
        SenderProfile.objects.filter(pk=profile.pk).update(
            discord_username=discord_username, display_name=display_name, updated_at=timezone.now()
        )
        profile.refresh_from_db()
    return profile


def slack_profile(*, slack_user_id, slack_username=""):
    """The profile of one Slack person (by their Slack user id); their current name wins."""
    slack_user_id = str(slack_user_id or "").strip()
    if not slack_user_id:
        raise ValidationFailed(ERR_SLACK_ID_REQUIRED, field="user_id")
    display_name = (slack_username or "").strip()[:200] or f"slack:{slack_user_id}"
    profile = _profile(f"slack:{slack_user_id}", kind=SenderKind.SLACK, display_name=display_name)
    if profile.display_name != display_name:
        SenderProfile.objects.filter(pk=profile.pk).update(display_name=display_name, updated_at=timezone.now())
        profile.display_name = display_name
    return profile


# --- conversations ---------------------------------------------------------------


def conversation_for_task(*, task):
    """A task's agent chat; its id is the task id as a string."""
    conversation, _ = Conversation.objects.get_or_create(
        id=str(task.pk), defaults={"task": task, "title": task.title[:200]}
    )
    return conversation


def conversation_get_or_create(*, conversation_id):
    conversation_id = str(conversation_id)
    task = Task.objects.filter(pk=conversation_id).first() if _is_uuid(conversation_id) else None
    if task is not None:
        return conversation_for_task(task=task)
    conversation, _ = Conversation.objects.get_or_create(id=conversation_id, defaults={"title": conversation_id})
    return conversation


def _is_uuid(value):
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def conversation_mark_read(*, conversation_id):
    Conversation.objects.filter(pk=str(conversation_id)).update(unread_count=0)
    events.publish(
        "conversation.read",
        {"conversation_id": str(conversation_id)},
        groups=[events.conversation_group(conversation_id)],
    )


def _touch_conversation(conversation, *, now, unread):
    changes = {"last_message_at": now}
    if unread:
        changes["unread_count"] = F("unread_count") + 1
    Conversation.objects.filter(pk=conversation.pk).update(**changes)


# --- messages ----------------------------------------------------------------------


def message_payload(message):
    return {
        "id": str(message.id),
        "conversation_id": message.conversation_id,
        "kind": message.kind,
        "text": message.text[-8000:],
        "sender": {
            "id": message.sender_id,
            "kind": message.sender.kind,
            "display_name": message.sender.display_name,
            "discord_username": message.sender.discord_username,
            "discord_user_id": message.sender.discord_user_id,
        },
        "recipient_id": message.recipient_id,
        "recipient_name": message.recipient.display_name if message.recipient_id else None,
        "task_id": str(message.task_id) if message.task_id else None,
        "work_order_id": str(message.work_order_id) if message.work_order_id else None,
        "parent_message_id": str(message.parent_message_id) if message.parent_message_id else None,
        "inbox_position": message.inbox_position,
        "batch_id": str(message.batch_id) if message.batch_id else None,
        "status": message.status,
        "failure_reason": message.failure_reason,
        "created_at": message.created_at,
        "delivered_at": message.delivered_at,
        "answered_at": message.answered_at,
    }


def _message_groups(message):
    groups = [events.conversation_group(message.conversation_id)]
    if message.task_id:
        groups.append(events.task_group(message.task_id))
    if message.kind == MessageKind.QUESTION:
        groups.append(events.ATTENTION_GROUP)
    return groups


def _publish_message(message, event_type="chat.message", **extra):
    events.publish(event_type, {**message_payload(message), **extra}, groups=_message_groups(message))


def _allocate_inbox_positions(recipient, count):
    """Take ``count`` consecutive inbox positions of ``recipient``.

    The row lock on the recipient's profile is the per-recipient mutex: a
    concurrent sender waits here until this transaction commits, so its
    messages land after the whole range, never inside it.
    """
    locked = SenderProfile.objects.select_for_update().only("inbox_next_position").get(pk=recipient.pk)
    first = locked.inbox_next_position
    SenderProfile.objects.filter(pk=recipient.pk).update(inbox_next_position=first + count)
    return range(first, first + count)


def _active_work_order(task):
    return (
        WorkOrder.objects.filter(task=task, kind=WorkOrderKind.RUN_TASK, status__in=list(ACTIVE_STATUSES))
        .order_by("-enqueued_at")
        .first()
    )


def _create_messages(*, sender, texts, conversation, recipient, task, work_order, kind, parent_message=None):
    """Create and publish messages; to an agent they are queued in its inbox."""
    now = timezone.now()
    to_inbox = recipient is not None and recipient.kind == SenderKind.AGENT
    positions = _allocate_inbox_positions(recipient, len(texts)) if to_inbox else [None] * len(texts)
    batch_id = uuid.uuid4() if len(texts) > 1 else None
    rows = [
        ChatMessage(
            conversation=conversation,
            kind=kind,
            sender=sender,
            recipient=recipient,
            text=text,
            task=task,
            work_order=work_order,
            parent_message=parent_message,
            inbox_position=position,
            batch_id=batch_id,
            status=DeliveryStatus.QUEUED if to_inbox else DeliveryStatus.DELIVERED,
            created_at=now,
            queued_at=now,
            delivered_at=None if to_inbox else now,
        )
        for text, position in zip(texts, positions, strict=True)
    ]
    ChatMessage.objects.bulk_create(rows)
    if to_inbox and task is not None:
        agent_next_turn_on_commit(task)
        _wake_running_agent_on_commit(task)
    # Messages from the agent side are what operators have to read.
    _touch_conversation(conversation, now=now, unread=sender.kind != SenderKind.OPERATOR)
    for message in rows:
        _publish_message(message)
    return rows


def message_send(*, sender, text, conversation=None, task=None, recipient=None, work_order=None, kind=MessageKind.CHAT):
    """Record one message; to an agent it is queued in the agent's inbox."""
    text = _clean_text(text)
    if conversation is None:
        if task is None:
            raise ValidationFailed(ERR_CONVERSATION_REQUIRED, field="conversation_id")
        conversation = conversation_for_task(task=task)
    with transaction.atomic():
        (message,) = _create_messages(
            sender=sender,
            texts=[text],
            conversation=conversation,
            recipient=recipient,
            task=task,
            work_order=work_order,
            kind=kind,
        )
    return message


def message_batch_send(*, sender, recipient, texts, task=None, conversation=None, work_order=None):
    """Send ``texts`` to ``recipient`` as one unit: contiguous and in order.

    All rows are written in one transaction under the recipient's inbox lock,
    so either the whole batch is queued as one consecutive range or nothing
    is; delivery then follows the positions.
    """
    if not isinstance(texts, list | tuple) or not texts:
        raise ValidationFailed(ERR_BATCH_EMPTY, field="texts")
    if len(texts) > MAX_BATCH_MESSAGES:
        raise ValidationFailed(ERR_BATCH_TOO_LARGE.format(limit=MAX_BATCH_MESSAGES), field="texts")
    texts = [_clean_text(text, field="texts") for text in texts]
    if task is None and recipient.task_id:
        task = recipient.task
    if conversation is None:
        if task is None:
            raise ValidationFailed(ERR_CONVERSATION_REQUIRED, field="conversation_id")
        conversation = conversation_for_task(task=task)
    with transaction.atomic():
        if work_order is None and task is not None:
            work_order = _active_work_order(task)
        return _create_messages(
            sender=sender,
            texts=texts,
            conversation=conversation,
            recipient=recipient,
            task=task,
            work_order=work_order,
            kind=MessageKind.CHAT,
        )


def _agent_target(conversation):
    """The agent and the work order an operator's message in ``conversation`` is for."""
    if conversation.task_id is None:
        return None, None
    task = conversation.task
    return agent_profile(task=task), _active_work_order(task)


def operator_message_send(*, user, conversation_id, text):
    """An operator writes in a conversation; in a task chat it goes to the agent's inbox."""
    text = _clean_text(text)
    conversation = conversation_get_or_create(conversation_id=conversation_id)
    recipient, work_order = _agent_target(conversation)
    return message_send(
        sender=operator_profile(user=user),
        text=text,
        conversation=conversation,
        task=conversation.task,
        recipient=recipient,
        work_order=work_order,
    )


def operator_batch_send(*, user, task, texts):
    return message_batch_send(sender=operator_profile(user=user), recipient=agent_profile(task=task), texts=texts)


def discord_message_receive(*, discord_user_id, discord_username, text, conversation_id, question_id=None):
    """A message relayed from Discord, attributed to the Discord person who
    wrote it; with ``question_id`` (a reply to a question's notification) it
    answers that question as that person."""
    text = _clean_text(text)
    sender = discord_profile(discord_user_id=discord_user_id, discord_username=discord_username)
    if question_id is not None:
        return question_answer(question=_question(question_id), answer_text=text, answered_by=sender)
    conversation = conversation_get_or_create(conversation_id=conversation_id)
    recipient, work_order = _agent_target(conversation)
    return message_send(
        sender=sender,
        text=text,
        conversation=conversation,
        task=conversation.task,
        recipient=recipient,
        work_order=work_order,
    )


def slack_command_receive(*, slack_user_id, slack_username, text):
    """``/agentvine <question id> <answer>`` from Slack: the answer, as that Slack person."""
    question_id, _, answer_text = (text or "").strip().partition(" ")
    if not _is_uuid(question_id) or not answer_text.strip():
        raise ValidationFailed(ERR_SLACK_ANSWER_FORMAT, field="text")
    sender = slack_profile(slack_user_id=slack_user_id, slack_username=slack_username)
    return question_answer(question=_question(question_id), answer_text=answer_text, answered_by=sender)


def _question(question_id):
    question = ChatMessage.objects.filter(pk=question_id, kind=MessageKind.QUESTION).first()
    if question is None:
        raise NotFound(ERR_QUESTION_NOT_FOUND)
    return question


def system_notice(*, task, text, work_order=None):
    return message_send(sender=system_profile(), text=text, task=task, work_order=work_order, kind=MessageKind.NOTICE)


def _delivery_transition(message, *, from_status, error, **changes):
    """Compare-and-set one message's delivery status and publish the change."""
    with transaction.atomic():
        if ChatMessage.objects.filter(pk=message.pk, status=from_status).update(**changes) != 1:
            raise IllegalTransition(error)
        message.refresh_from_db()
        _publish_message(message, "chat.delivery")
    return message


def message_mark_delivered(*, message, execution=None):
    """Delivered; ``execution``: the run of the agent that took it."""
    changes = {"execution": execution} if execution is not None else {}
    return _delivery_transition(
        message,
        from_status=DeliveryStatus.QUEUED,
        error=ERR_NOT_QUEUED,
        status=DeliveryStatus.DELIVERED,
        delivered_at=timezone.now(),
        **changes,
    )


def turn_messages_return(*, execution, retry, reason):
    """The message turn ``execution`` failed: the messages it took did not
    reach a conversation that lives on. With ``retry`` (its work order runs
    again) they go back to the inbox, in their places, for that run; else
    they are marked failed with ``reason`` (an operator can retry them)."""
    taken = list(
        ChatMessage.objects.filter(execution=execution, status=DeliveryStatus.DELIVERED).order_by("inbox_position")
    )
    if retry:
        changes = {"status": DeliveryStatus.QUEUED, "delivered_at": None}
    else:
        changes = {"status": DeliveryStatus.FAILED, "failed_at": timezone.now(), "failure_reason": str(reason)[:2000]}
    for message in taken:
        _delivery_transition(message, from_status=DeliveryStatus.DELIVERED, error=ERR_NOT_DELIVERED, **changes)
    return taken


def questions_close_on_run_end(sender, *, execution, now, **kwargs):
    """``queue_app.lifecycle.run_ended`` hook (connected in ``ChatConfig.ready``):
    the questions a run leaves unanswered are closed with its end (the agent
    stopped waiting), in the end's own statement; answering one is refused."""
    where = {"execution_id": execution.pk, "kind": MessageKind.QUESTION, "answered_at": None, "closed_at": None}
    return [update_sql(ChatMessage, where, closed_at=now)]


def turn_messages_on_attempt_failed(sender, *, work_order, execution, retry, reason, **kwargs):
    """``queue_app.lifecycle.attempt_failed`` hook (connected in ``ChatConfig.ready``):
    a failed message turn leaves no conversation to resume, so its messages
    go to the next attempt, or are marked failed with the turn."""
    if work_order.kind == WorkOrderKind.DELIVER_MESSAGE:
        turn_messages_return(execution=execution, retry=retry, reason=f"agent turn failed: {reason}")


def message_mark_failed(*, message, reason):
    return _delivery_transition(
        message,
        from_status=DeliveryStatus.QUEUED,
        error=ERR_NOT_QUEUED,
        status=DeliveryStatus.FAILED,
        failed_at=timezone.now(),
        failure_reason=str(reason)[:2000],
    )


def message_retry(*, message):
    """Queue a failed message again; it keeps its inbox position, so its turn."""
    return _delivery_transition(
        message,
        from_status=DeliveryStatus.FAILED,
        error=ERR_NOT_FAILED,
        status=DeliveryStatus.QUEUED,
        queued_at=timezone.now(),
        failure_reason="",
    )


def agent_next_turn(*, task):
    """Give a finished agent a turn for the messages waiting in its inbox.

    A running agent reads operator messages while it works (claude through
    its stdin, an OpenAI-compatible model on its next request); the rest wait
    in the inbox. Once the task is completed and nothing of it is queued or
    running, a ``deliver_message`` work order resumes the agent's session
    with those messages as its prompt. A failed or cancelled task's messages
    wait for a retry, which is the agent's next turn. Returns the new work
    order, or None when no turn is due.
    """
    # Most runs end with an empty inbox: one read, no lock.
    if not inbox_of_task_waiting(task=task):
        return None
    with transaction.atomic():
        locked = Task.objects.select_for_update().filter(pk=task.pk).first()
        if locked is None or locked.status != TaskStatus.COMPLETED:
            return None
        pending = [WorkOrderStatus.QUEUED, *ACTIVE_STATUSES]
        if WorkOrder.objects.filter(task_id=task.pk, status__in=pending).exists():
            return None
        if not inbox_of_task(task=task).exists():
            return None
        return lifecycle.work_order_enqueue(task=locked, kind=WorkOrderKind.DELIVER_MESSAGE)


def _wake_running_agent_on_commit(task):
    """A running agent's runner delivers its new messages now, not at its next poll."""

    def wake():
        running = WorkOrder.objects.filter(task_id=task.pk, status__in=list(ACTIVE_STATUSES)).values_list(
            "pk", flat=True
        )
        for work_order_id in running:
            wakeups.work_order_wake(work_order_id=work_order_id)

    transaction.on_commit(wake)


def agent_next_turn_on_commit(task):
    def next_turn():
        try:
            agent_next_turn(task=task)
        except Exception:
            # The message stays queued; the next message or run end tries again.
            logger.exception("could not give the agent of task %s a turn for its messages", task.pk)

    transaction.on_commit(next_turn)


def inbox_deliver(*, recipient, deliver, limit=100, execution=None):
    """Hand queued inbox messages to ``deliver(message)`` strictly in order.

    ``deliver`` returning False means "not now" (the agent cannot take input
    at the moment): the walk stops and everything stays queued. An exception
    is a failed delivery: recorded on that message, and the messages after it
    stay queued, in order, for the next attempt. Returns the delivered ones,
    each marked as taken by ``execution`` when given.
    """
    delivered = []
    for message in inbox_queued(recipient=recipient)[:limit]:
        try:
            accepted = deliver(message)
        except Exception as exc:
            message_mark_failed(message=message, reason=f"{type(exc).__name__}: {exc}")
            break
        if accepted is False:
            break
        delivered.append(message_mark_delivered(message=message, execution=execution))
    return delivered


# --- questions ---------------------------------------------------------------------


def question_ask(*, work_order, text, execution=None, source="agent"):
    """An agent asks a human: store the question, work order → waiting, tell operators."""
    text = _clean_text(text)
    now = timezone.now()
    with transaction.atomic():
        current = (
            WorkOrder.objects.select_for_update(of=("self",)).select_related("task", "worker").get(pk=work_order.pk)
        )
        if current.status not in (WorkOrderStatus.RUNNING, WorkOrderStatus.WAITING) or current.worker is None:
            raise IllegalTransition(ERR_WORK_ORDER_NOT_ACTIVE)
        if execution is not None:
            # A stale run (its work requeued under it) asks nobody.
            lifecycle.execution_assert_live(work_order=current, execution=execution)
        task = current.task
        conversation = conversation_for_task(task=task)
        question = ChatMessage.objects.create(
            conversation=conversation,
            kind=MessageKind.QUESTION,
            sender=agent_profile(task=task),
            text=text,
            task=task,
            work_order=current,
            execution=execution,
            status=DeliveryStatus.DELIVERED,
            queued_at=now,
            delivered_at=now,
        )
        _touch_conversation(conversation, now=now, unread=True)
        if current.status == WorkOrderStatus.RUNNING:
            lifecycle.work_order_set_waiting(work_order=current, worker=current.worker, waiting=True)
        _publish_message(question, "question.asked", source=source)
        notifications.notify(event=NotificationEvent.QUESTION_ASKED, task=task, text=text, question_id=str(question.pk))
    return question


def question_answer(*, question, answer_text, answered_by):
    """The first answer wins; the agent's work order goes back to running."""
    answer_text = _clean_text(answer_text)
    now = timezone.now()
    with transaction.atomic():
        # Compare-and-set: a concurrent answer blocks on the row lock, then
        # re-checks answered_at and finds it set.
        won = ChatMessage.objects.filter(
            pk=question.pk, kind=MessageKind.QUESTION, answered_at__isnull=True, closed_at__isnull=True
        ).update(answered_at=now, answered_by=answered_by, answer_text=answer_text)
        if won != 1:
            if question.kind != MessageKind.QUESTION:
                raise ValidationFailed(ERR_NOT_A_QUESTION, field="question_id")
            if ChatMessage.objects.filter(pk=question.pk, answered_at__isnull=True, closed_at__isnull=False).exists():
                raise IllegalTransition(ERR_QUESTION_CLOSED)
            raise IllegalTransition(ERR_ALREADY_ANSWERED)
        question.refresh_from_db()
        conversation = question.conversation
        recipient = agent_profile(task=question.task) if question.task_id else question.sender
        # Queued until the agent actually receives it (ask command or runner).
        answer = ChatMessage.objects.create(
            conversation=conversation,
            kind=MessageKind.ANSWER,
            sender=answered_by,
            recipient=recipient,
            text=answer_text,
            task_id=question.task_id,
            work_order_id=question.work_order_id,
            execution_id=question.execution_id,
            parent_message=question,
            status=DeliveryStatus.QUEUED,
            queued_at=now,
        )
        _touch_conversation(conversation, now=now, unread=False)
        _resume_if_no_open_questions(question.work_order_id)
        _publish_message(question, "question.answered", answer_message_id=str(answer.id), answer_text=answer_text)
        # The agent waits for this answer in an API long poll (ask client, MCP
        # server) or in its runner (an executor's own question): both now.
        question_id, work_order_id = question.pk, question.work_order_id
        transaction.on_commit(lambda: wakeups.question_answered_announce(question_id=question_id))
        if work_order_id is not None:
            transaction.on_commit(lambda: wakeups.work_order_wake(work_order_id=work_order_id))
    return answer


def _resume_if_no_open_questions(work_order_id):
    if work_order_id is None:
        return
    work_order = (
        WorkOrder.objects.select_for_update(of=("self",)).select_related("worker").filter(pk=work_order_id).first()
    )
    if work_order is None or work_order.status != WorkOrderStatus.WAITING or work_order.worker is None:
        # Cancelled or finished meanwhile: the answer is recorded, nothing resumes.
        return
    still_open = ChatMessage.objects.filter(
        work_order_id=work_order_id, kind=MessageKind.QUESTION, answered_at__isnull=True, closed_at__isnull=True
    ).exists()
    if not still_open:
        lifecycle.work_order_set_waiting(work_order=work_order, worker=work_order.worker, waiting=False)


def question_failed(*, work_order, reason):
    """An agent could not even ask (its ask client never reached the API): a
    system notice in the task's conversation, announced as ``question.failed``."""
    with transaction.atomic():
        notice = system_notice(task=work_order.task, text=reason, work_order=work_order)
        _publish_message(notice, "question.failed")
    return notice


def answer_mark_delivered(*, question):
    """The agent has the answer in hand: record the answer's delivery."""
    answer = question.replies.filter(kind=MessageKind.ANSWER, status=DeliveryStatus.QUEUED).first()
    if answer is not None:
        try:
            message_mark_delivered(message=answer)
        except IllegalTransition:
            pass  # delivered by a concurrent poll of the same agent


def progress_report(*, work_order, text):
    text = _clean_text(text)
    task = work_order.task
    return message_send(
        sender=agent_profile(task=task), text=text, task=task, work_order=work_order, kind=MessageKind.PROGRESS
    )
