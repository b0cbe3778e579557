"""The server side of Idempotency-Key: a write is applied exactly once."""

import threading

import pytest
from django.db import connection

from agentvine.api import ERR_IDEMPOTENCY_MISMATCH, REPLAYED_HEADER
from queue_app.models import WorkOrder
from tasks_app.models import Task

from .conftest import token_client


@pytest.mark.django_db
def test_same_key_and_body_replays_the_stored_response(operator_client):
    body = {"title": "Exactly once", "priority": "high"}

    first = operator_client.post("/api/v1/tasks/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = operator_client.post("/api/v1/tasks/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again[REPLAYED_HEADER] == "true"
    assert Task.objects.count() == 1 and WorkOrder.objects.count() == 1


@pytest.mark.django_db
def test_same_key_with_a_different_body_is_rejected(operator_client):
    operator_client.post("/api/v1/tasks/", {"title": "A"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")

    other = operator_client.post("/api/v1/tasks/", {"title": "B"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")

    assert other.status_code == 422
    assert other.json()["detail"] == ERR_IDEMPOTENCY_MISMATCH
    assert list(Task.objects.values_list("title", flat=True)) == ["A"]


@pytest.mark.django_db
def test_keys_are_private_to_each_caller(operator_client, operator, django_user_model):
    from workers_app.services import api_token_create

    colleague = django_user_model.objects.create_user(username="colleague", password="x" * 12, is_staff=True)
    colleague_client = token_client(api_token_create(user=colleague, name="t")[1])

    operator_client.post("/api/v1/tasks/", {"title": "Mine"}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    theirs = colleague_client.post("/api/v1/tasks/", {"title": "Mine"}, format="json", HTTP_IDEMPOTENCY_KEY="shared")

    assert theirs.status_code == 201
    assert Task.objects.count() == 2


@pytest.mark.django_db
def test_a_rejected_request_is_replayed_as_rejected(operator_client, operator):
    from tasks_app.services import task_create

    task = task_create(title="Nothing failed", created_by=operator)
    url = f"/api/v1/tasks/{task.pk}/retry/"

    first = operator_client.post(url, HTTP_IDEMPOTENCY_KEY="r-1")
    again = operator_client.post(url, HTTP_IDEMPOTENCY_KEY="r-1")

    assert first.status_code == again.status_code == 409
    assert again.json() == first.json()


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 201, "ключ"])
def test_malformed_keys_are_400(operator_client, key):
    response = operator_client.post("/api/v1/tasks/", {"title": "A"}, format="json", HTTP_IDEMPOTENCY_KEY=key)

    assert response.status_code == 400
    assert not Task.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_replays_of_one_key_create_one_task(operator_key):
    barrier = threading.Barrier(8)
    results = []

    def send():
        client = token_client(operator_key)
        barrier.wait()
        try:
            response = client.post("/api/v1/tasks/", {"title": "Raced"}, format="json", HTTP_IDEMPOTENCY_KEY="race-1")
            results.append((response.status_code, response.json()["id"]))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 8
    assert {status for status, _ in results} == {201}
    assert len({task_id for _, task_id in results}) == 1
    assert Task.objects.count() == 1
    assert WorkOrder.objects.count() == 1


@pytest.mark.django_db
def test_chat_messages_honour_the_key_too(operator_client, operator):
    from chat_app.models import ChatMessage
    from tasks_app.services import task_create

    task = task_create(title="Chatty", created_by=operator)
    body = {"conversation_id": str(task.pk), "text": "exactly once, please"}

    first = operator_client.post("/api/v1/chat/messages/", body, format="json", HTTP_IDEMPOTENCY_KEY="m-1")
    again = operator_client.post("/api/v1/chat/messages/", body, format="json", HTTP_IDEMPOTENCY_KEY="m-1")

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert ChatMessage.objects.filter(text="exactly once, please").count() == 1


@pytest.mark.django_db
def test_tokens_in_responses_are_never_stored_for_replay(operator_client):
    from agentvine.api import REDACTED_SECRET
    from workers_app.models import IdempotencyKey

    first = operator_client.post("/api/v1/workers/", {"name": "remote-x"}, format="json", HTTP_IDEMPOTENCY_KEY="w-1")
    again = operator_client.post("/api/v1/workers/", {"name": "remote-x"}, format="json", HTTP_IDEMPOTENCY_KEY="w-1")

    token = first.json()["token"]
    assert token.startswith("avw_")
    assert again.json()["token"] == REDACTED_SECRET
    assert again.json()["id"] == first.json()["id"]
    assert token not in str(IdempotencyKey.objects.values_list("response_body", flat=True))
