"""Chat services against real Postgres: questions, inboxes, batches, history."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from agentvine.errors import IllegalTransition, ValidationFailed
from agentvine.models import LiveEvent
from chat_app import selectors, services
from chat_app.models import ChatMessage, DeliveryStatus, MessageKind, SenderKind
from queue_app import lifecycle
from queue_app.models import WorkOrderStatus
from tasks_app.services import task_create

pytestmark = pytest.mark.sqlite


def _running(task, worker):
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    return lifecycle.work_order_start(work_order=work_order, worker=worker)


@pytest.fixture
def running(db, operator, worker):
    task = task_create(title="needs answers", created_by=operator)
    work_order, execution = _running(task, worker)
    return task, work_order, execution


def test_question_ask_and_answer_round_trip(running, operator):
    task, work_order, execution = running
    question = services.question_ask(work_order=work_order, execution=execution, text="Which port?")
    work_order.refresh_from_db()
    assert work_order.status == WorkOrderStatus.WAITING
    assert work_order.worker.status == "waiting"
    assert list(selectors.pending_questions()) == [question]
    assert selectors.pending_question_count() == 1
    state = selectors.conversation_state(conversation_id=str(task.id))
    assert state == {"unread": 1, "pending_questions": 1, "needs_answer": True}
    assert question.conversation_id == str(task.id)
    assert question.sender.kind == SenderKind.AGENT

    answer = services.question_answer(
        question=question, answer_text="8080", answered_by=services.operator_profile(user=operator)
    )
    work_order.refresh_from_db()
    assert work_order.status == WorkOrderStatus.RUNNING
    assert selectors.pending_question_count() == 0
    assert answer.parent_message_id == question.id
    assert answer.status == DeliveryStatus.QUEUED  # until the agent receives it
    services.answer_mark_delivered(question=question)
    answer.refresh_from_db()
    assert answer.status == DeliveryStatus.DELIVERED and answer.delivered_at is not None
    types = list(LiveEvent.objects.filter(type__startswith="question.").values_list("type", flat=True))
    assert types == ["question.asked", "question.answered"]


def test_second_answer_is_refused_and_changes_nothing(running, operator, django_user_model):
    _, work_order, execution = running
    question = services.question_ask(work_order=work_order, execution=execution, text="Yes or no?")
    services.question_answer(question=question, answer_text="yes", answered_by=services.operator_profile(user=operator))
    other = django_user_model.objects.create_user(username="late-op", password="x" * 12, is_staff=True)
    with pytest.raises(IllegalTransition) as refused:
        services.question_answer(question=question, answer_text="no", answered_by=services.operator_profile(user=other))
    assert refused.value.message == services.ERR_ALREADY_ANSWERED == "question already answered"
    question.refresh_from_db()
    assert question.answer_text == "yes"
    assert question.replies.count() == 1


def test_work_order_waits_until_every_open_question_is_answered(running, operator):
    _, work_order, execution = running
    first = services.question_ask(work_order=work_order, execution=execution, text="one?")
    second = services.question_ask(work_order=work_order, execution=execution, text="two?")
    me = services.operator_profile(user=operator)
    services.question_answer(question=first, answer_text="1", answered_by=me)
    work_order.refresh_from_db()
    assert work_order.status == WorkOrderStatus.WAITING
    services.question_answer(question=second, answer_text="2", answered_by=me)
    work_order.refresh_from_db()
    assert work_order.status == WorkOrderStatus.RUNNING


def test_question_on_finished_work_is_refused(running, worker):
    _, work_order, execution = running
    lifecycle.work_order_complete(work_order=work_order, worker=worker, execution=execution)
    with pytest.raises(IllegalTransition, match=services.ERR_WORK_ORDER_NOT_ACTIVE):
        services.question_ask(work_order=work_order, execution=execution, text="too late?")
    assert not ChatMessage.objects.exists()


def test_bad_text_is_refused(running, operator):
    task, work_order, execution = running
    with pytest.raises(ValidationFailed, match=services.ERR_TEXT_REQUIRED):
        services.question_ask(work_order=work_order, execution=execution, text="  ")
    with pytest.raises(ValidationFailed, match=services.ERR_BATCH_EMPTY):
        services.operator_batch_send(user=operator, task=task, texts=[])
    with pytest.raises(ValidationFailed, match=services.ERR_TEXT_REQUIRED):
        services.operator_batch_send(user=operator, task=task, texts=["fine", ""])
    assert not ChatMessage.objects.exists()


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_double_answer_race_has_one_winner(operator, worker, django_user_model):
    task = task_create(title="race", created_by=operator)
    work_order, execution = _running(task, worker)
    question = services.question_ask(work_order=work_order, execution=execution, text="who wins?")
    people = [operator] + [
        django_user_model.objects.create_user(username=f"racer-{n}", password="x" * 12) for n in range(5)
    ]
    profiles = [services.operator_profile(user=person) for person in people]
    barrier = threading.Barrier(len(profiles))
    outcomes = []

    def answer(profile):
        try:
            barrier.wait()
            services.question_answer(question=question, answer_text=f"from {profile.pk}", answered_by=profile)
            outcomes.append(("won", profile.pk))
        except IllegalTransition as exc:
            outcomes.append(("lost", exc.message))
        finally:
            connection.close()

    threads = [threading.Thread(target=answer, args=(p,)) for p in profiles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o[0] == "won"]
    assert len(winners) == 1
    assert sorted(o[1] for o in outcomes if o[0] == "lost") == [services.ERR_ALREADY_ANSWERED] * 5
    question.refresh_from_db()
    assert question.answered_by_id == winners[0][1]
    assert question.answer_text == f"from {winners[0][1]}"
    assert question.replies.count() == 1
    assert work_order.__class__.objects.get(pk=work_order.pk).status == WorkOrderStatus.RUNNING


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_are_contiguous_and_ordered(operator, django_user_model):
    """12 senders, 8-message batches each, one agent: no interleaving, nothing lost."""
    task = task_create(title="busy inbox", created_by=operator)
    recipient = services.agent_profile(task=task)
    senders = [services.discord_profile(discord_user_id=str(1000 + n), discord_username=f"p{n}") for n in range(12)]
    barrier = threading.Barrier(len(senders))
    errors = []

    def send(sender):
        try:
            barrier.wait()
            services.message_batch_send(
                sender=sender, recipient=recipient, texts=[f"{sender.pk}:{i}" for i in range(8)]
            )
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(s,)) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    inbox = list(selectors.inbox_queued(recipient=recipient))
    assert len(inbox) == 96
    assert [m.inbox_position for m in inbox] == list(range(1, 97))
    for start in range(0, 96, 8):
        batch = inbox[start : start + 8]
        assert len({m.sender_id for m in batch}) == 1, f"batch at {start} interleaved"
        assert len({m.batch_id for m in batch}) == 1
        assert [m.text for m in batch] == [f"{batch[0].sender_id}:{i}" for i in range(8)]
    assert sorted({m.sender_id for m in inbox}) == sorted(s.pk for s in senders)


def test_inbox_delivery_in_order_and_failure_leaves_the_rest_queued(running, operator):
    task, _, _ = running
    services.operator_batch_send(user=operator, task=task, texts=["a", "b", "c", "d"])
    recipient = services.agent_profile(task=task)
    received = []

    def flaky(message):
        if message.text == "c":
            raise ConnectionError("agent stdin closed")
        received.append(message.text)

    delivered = services.inbox_deliver(recipient=recipient, deliver=flaky)
    assert [m.text for m in delivered] == received == ["a", "b"]
    failed = ChatMessage.objects.get(text="c")
    assert failed.status == DeliveryStatus.FAILED
    assert failed.failure_reason == "ConnectionError: agent stdin closed"
    assert failed.failed_at is not None
    assert [m.text for m in selectors.inbox_queued(recipient=recipient)] == ["d"]

    services.message_retry(message=failed)
    delivered = services.inbox_deliver(recipient=recipient, deliver=lambda m: received.append(m.text))
    assert received == ["a", "b", "c", "d"]
    assert all(m.status == DeliveryStatus.DELIVERED for m in delivered)
    with pytest.raises(IllegalTransition, match=services.ERR_NOT_FAILED):
        services.message_retry(message=failed)


def test_history_attribution_and_filters(running, operator):
    task, work_order, execution = running
    alice = services.discord_message_receive(
        discord_user_id="111", discord_username="alice", text="hi agent", conversation_id=str(task.id)
    )
    bob = services.discord_message_receive(
        discord_user_id="222", discord_username="", text="me too", conversation_id=str(task.id)
    )
    renamed = services.discord_message_receive(
        discord_user_id="111", discord_username="alice2", text="new name", conversation_id=str(task.id)
    )
    op = services.operator_message_send(user=operator, conversation_id=str(task.id), text="please hurry")
    question = services.question_ask(work_order=work_order, execution=execution, text="Need a key?")
    answer = services.question_answer(question=question, answer_text="no", answered_by=op.sender)
    notice = services.system_notice(task=task, text="retrying soon")
    progress = services.progress_report(work_order=work_order, text="halfway")

    assert alice.sender.display_name == "alice" and alice.sender.discord_user_id == "111"
    assert bob.sender.display_name == "discord:222"
    assert renamed.sender_id == alice.sender_id
    alice.sender.refresh_from_db()
    assert alice.sender.display_name == "alice2"
    assert alice.sender_id != bob.sender_id
    assert not selectors.message_history(sender="DISCORD").exists()

    everything = list(selectors.message_history(task=task))
    assert [m.kind for m in everything] == ["chat", "chat", "chat", "chat", "question", "answer", "notice", "progress"]
    agent = services.agent_profile(task=task)
    assert {m.recipient_id for m in (alice, bob, op)} == {agent.pk}
    assert question.sender_id == agent.pk and progress.sender_id == agent.pk
    assert notice.sender.kind == SenderKind.SYSTEM
    assert answer.sender.user == operator

    assert list(selectors.message_history(sender="discord:111")) == [alice, renamed]
    assert list(selectors.message_history(sender=str(bob.sender_id))) == [bob]
    assert list(selectors.message_history(recipient=agent, kind=MessageKind.CHAT)) == [alice, bob, renamed, op]
    assert list(selectors.message_history(text="HURRY")) == [op]
    assert list(selectors.message_history(work_order=work_order, kind=MessageKind.QUESTION)) == [question]
    assert list(selectors.message_history(status=DeliveryStatus.QUEUED, task=task))[:1] == [alice]
    later = timezone.now() + timedelta(seconds=1)
    assert not selectors.message_history(since=later).exists()
    assert selectors.message_history(until=later).count() == 8


def test_prune_is_bounded_and_keeps_recent_events(db):
    from agentvine import events

    ids = [events.publish("x.old", {"n": n}, groups=[]) for n in range(30)]
    LiveEvent.objects.filter(id__in=ids[:25]).update(created_at=timezone.now() - timedelta(days=3))
    assert events.live_event_prune(older_than=timedelta(days=1), batch_size=10, max_batches=2) == 20
    assert events.live_event_prune(older_than=timedelta(days=1), batch_size=10, max_batches=2) == 5
    assert list(LiveEvent.objects.values_list("id", flat=True)) == ids[25:]


def test_agent_activity_follows_work_and_heartbeats(running, worker, other_worker):
    task, work_order, execution = running
    assert selectors.is_agent_active(worker=worker)
    assert selectors.is_agent_active(task=task)
    assert not selectors.is_agent_active(worker=other_worker)
    entries = {e["worker_id"]: e for e in selectors.agents_activity()}
    mine = entries[str(worker.pk)]
    assert mine["active"] and mine["task_title"] == "needs answers"
    assert mine["work_order_status"] == "running" and mine["since"] == work_order.started_at
    assert entries[str(other_worker.pk)]["doing"] == "idle"

    services.question_ask(work_order=work_order, execution=execution, text="?")
    mine = selectors.agent_activity(worker=worker)
    assert mine["waiting_for_human"] and mine["open_questions"] == 1

    # A slot whose heartbeat stopped is not active, whatever its rows say.
    worker.__class__.objects.filter(pk=worker.pk).update(last_heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert not selectors.is_agent_active(worker=worker)
    assert not selectors.agent_activity(worker=worker)["active"]


def test_agent_that_cannot_take_input_keeps_its_inbox_queued(running, operator):
    task, _, _ = running
    services.operator_message_send(user=operator, conversation_id=str(task.id), text="later please")
    recipient = services.agent_profile(task=task)
    assert services.inbox_deliver(recipient=recipient, deliver=lambda message: False) == []
    message = ChatMessage.objects.get(text="later please")
    assert message.status == DeliveryStatus.QUEUED and message.failure_reason == ""


def test_messages_to_a_finished_agent_queue_one_turn_and_wait_while_it_runs(
    running, operator, worker, django_capture_on_commit_callbacks
):
    from queue_app.models import WorkOrderKind

    task, work_order, execution = running

    def turns():
        return list(task.work_orders.filter(kind=WorkOrderKind.DELIVER_MESSAGE).values_list("status", flat=True))

    with django_capture_on_commit_callbacks(execute=True):
        services.operator_message_send(user=operator, conversation_id=str(task.id), text="while you work")
    assert turns() == []  # a running agent reads its inbox itself

    lifecycle.work_order_complete(work_order=work_order, worker=worker, execution=execution)
    with django_capture_on_commit_callbacks(execute=True):
        services.operator_message_send(user=operator, conversation_id=str(task.id), text="one more thing")
        services.operator_message_send(user=operator, conversation_id=str(task.id), text="and another")
    assert turns() == [WorkOrderStatus.QUEUED]
    task.refresh_from_db()
    assert task.status == "completed"  # a message turn does not reopen the task
    assert ChatMessage.objects.filter(task=task, status=DeliveryStatus.QUEUED).count() == 3


def test_messages_to_a_cancelled_task_wait_for_a_retry(operator, django_capture_on_commit_callbacks):
    from tasks_app.services import task_cancel

    task = task_create(title="stopped", created_by=operator)
    task_cancel(task=task)
    with django_capture_on_commit_callbacks(execute=True):
        services.operator_message_send(user=operator, conversation_id=str(task.id), text="are you there?")
    assert task.work_orders.count() == 1
    assert ChatMessage.objects.get(text="are you there?").status == DeliveryStatus.QUEUED
