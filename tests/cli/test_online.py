"""Online: reads show the server's state; send and answer reach the agent's conversation."""

import pytest

from chat_app import services as chat_services
from chat_app.models import ChatMessage
from queue_app import lifecycle
from tasks_app.services import task_create
from workers_app.services import agent_session_create

pytestmark = pytest.mark.e2e


def test_reads_send_and_answer_against_a_running_server(logged_in, server, operator, worker):
    cli = logged_in
    task = task_create(title="Agent at work", created_by=operator, priority="high")
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    session = agent_session_create(session_id="claude-5e1", task=task, worker=worker)
    question = chat_services.question_ask(
        work_order=work_order, execution=execution, text="Which branch?", source="command"
    )

    workers = cli("workers")
    sessions = cli("sessions")
    status = cli("status")
    shown = cli("tasks", "show", str(task.pk))
    to_session = cli("send", "claude-5e1", "look at the failing test")
    to_worker = cli("send", worker.name, "then push")
    answered = cli("answer", str(question.pk), "main")

    assert worker.name in workers.out and "waiting" in workers.out and str(work_order.pk) in workers.out
    assert "claude-5e1" in sessions.out and str(session.pk) in sessions.out
    assert "high" in status.out and "running" in status.out
    assert "Agent at work" in shown.out and "in_progress" in shown.out
    assert to_session.out.strip() == f"sent to {task.pk} (queued)"
    assert to_worker.code == 0, to_worker.err
    assert answered.out.strip() == f"answered {question.pk}"
    question.refresh_from_db()
    assert question.answer_text == "main"
    texts = ChatMessage.objects.filter(task=task, kind="chat").order_by("created_at").values_list("text", flat=True)
    assert list(texts) == ["look at the failing test", "then push"]
    assert cli("queue").out.strip() == "outbox is empty"
