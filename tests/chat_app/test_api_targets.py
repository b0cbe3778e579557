"""Sending by target (task, agent session, worker name) and idempotent chat writes."""

import pytest

from chat_app.apis import ERR_ONE_DESTINATION
from chat_app.models import ChatMessage, MessageKind
from chat_app.selectors import ERR_TARGET_HAS_NO_TASK, ERR_UNKNOWN_TARGET
from tasks_app.services import task_create
from tests.chat_app.test_apis import api, running  # noqa: F401  (fixtures)
from workers_app.services import agent_session_create

pytestmark = pytest.mark.django_db


def _send(api, body, key=None):  # noqa: F811  (api is the fixture)
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return api.post("/api/v1/chat/messages/", body, format="json", **headers)


def test_a_message_reaches_the_task_of_a_session_or_a_worker(api, running, worker):  # noqa: F811
    task, _, _ = running
    session = agent_session_create(session_id="claude-7f3a", task=task, worker=worker)

    for target in [str(task.pk), str(session.pk), "claude-7f3a", worker.name]:
        response = _send(api, {"to": target, "text": f"via {target}"})
        assert response.status_code == 201, response.json()
        assert response.json()["conversation_id"] == str(task.pk)
    assert ChatMessage.objects.filter(task=task, kind=MessageKind.CHAT).count() == 4


def test_unknown_or_idle_targets_are_404_and_write_nothing(api, other_worker):  # noqa: F811
    missing = _send(api, {"to": "no-such-agent", "text": "hello"})
    idle = _send(api, {"to": other_worker.name, "text": "hello"})
    both = _send(api, {"to": "x", "conversation_id": "y", "text": "hello"})

    assert missing.status_code == 404
    assert missing.json()["detail"] == ERR_UNKNOWN_TARGET.format(target="no-such-agent")
    assert idle.status_code == 404
    assert idle.json()["detail"] == ERR_TARGET_HAS_NO_TASK.format(target=other_worker.name)
    assert both.status_code == 400
    assert both.json()["non_field_errors"] == [ERR_ONE_DESTINATION]
    assert not ChatMessage.objects.exists()


def test_a_batch_by_target_is_delivered_in_order_and_once_on_replay(api, operator):  # noqa: F811
    task = task_create(title="replays", created_by=operator)
    batch = {"to": str(task.pk), "texts": ["a", "b"]}

    sent = [api.post("/api/v1/chat/batches/", batch, format="json", HTTP_IDEMPOTENCY_KEY="batch-1") for _ in range(2)]

    assert [response.status_code for response in sent] == [201, 201]
    assert sent[1].headers["Idempotent-Replayed"] == "true"
    texts = ChatMessage.objects.filter(task=task).order_by("created_at").values_list("text", flat=True)
    assert list(texts) == ["a", "b"]
