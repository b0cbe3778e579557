"""Errors that help: field messages, 404, 409, 413, 429 — and never a 500."""

import pytest
from django.conf import settings
from django.test import override_settings

from agentvine.api_errors import ERR_BODY_TOO_LARGE
from queue_app import lifecycle, outputs
from tasks_app import services as task_services
from tasks_app.models import Task
from workers_app.authentication import ERR_BAD_TOKEN
from workers_app.models import ApiToken, WorkerToken
from workers_app.services import api_token_create, token_hash, worker_token_issue

from .conftest import token_client

pytestmark = pytest.mark.django_db


def test_missing_title_is_a_400_with_a_field_message(operator_client):
    response = operator_client.post("/api/v1/tasks/", {"description": "no title"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"title": ["This field is required."]}
    assert not Task.objects.exists()


def test_unknown_executor_is_a_field_error_from_the_service(operator_client):
    response = operator_client.post("/api/v1/tasks/", {"title": "x", "executor": "nope"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"executor": [task_services.ERR_UNKNOWN_EXECUTOR]}


@pytest.mark.parametrize(
    "body",
    [
        {"title": {"nested": True}},
        {"title": ["a"]},
        {"title": "ok", "max_retries": 10**40},
        {"title": "ok", "max_retries": -1},
        {"title": "ok", "priority": "urgent"},
        {"title": "nul \x00 byte"},
        {"title": "x" * 201},
        [1, 2, 3],
        "just a string",
    ],
)
def test_wrong_types_and_sizes_are_400_and_create_nothing(operator_client, body):
    response = operator_client.post("/api/v1/tasks/", body, format="json")

    assert response.status_code == 400
    assert not Task.objects.exists()


def test_lone_surrogate_and_invalid_json_are_400(operator_client):
    surrogate = operator_client.post("/api/v1/tasks/", b'{"title": "\\ud800"}', content_type="application/json")
    broken = operator_client.post("/api/v1/tasks/", b'{"title": ', content_type="application/json")

    assert surrogate.status_code == 400
    assert broken.status_code == 400
    assert not Task.objects.exists()


def test_unicode_titles_round_trip(operator_client):
    response = operator_client.post("/api/v1/tasks/", {"title": "Ünïcødé ✓ 漢字 🚀"}, format="json")

    assert response.status_code == 201
    assert operator_client.get(f"/api/v1/tasks/{response.json()['id']}/").json()["title"] == "Ünïcødé ✓ 漢字 🚀"


@pytest.mark.parametrize(
    "query",
    ["status=bogus", "priority=%00", "search=%00", "limit=99999999999999999999999", "offset=-1", "type=%F0%9F"],
)
def test_bad_list_filters_are_400(operator_client, query):
    assert operator_client.get(f"/api/v1/tasks/?{query}").status_code == 400


@pytest.mark.parametrize("path", ["/api/v1/tasks/not-a-uuid/", "/api/v1/tasks/00000000-0000-0000-0000-000000000000/"])
def test_malformed_or_unknown_ids_are_404(operator_client, path):
    assert operator_client.get(path).status_code == 404


def test_list_filters_search_and_paginates(operator_client, operator):
    for index in range(5):
        task_services.task_create(title=f"Fix bug {index}", task_type="bugfix", priority="high", created_by=operator)
    task_services.task_create(title="Write docs", task_type="docs", created_by=operator)

    page = operator_client.get("/api/v1/tasks/?type=bugfix&priority=high&search=bug&limit=2&offset=1").json()

    assert page["count"] == 5
    assert [t["title"] for t in page["results"]] == ["Fix bug 3", "Fix bug 2"]
    assert operator_client.get("/api/v1/tasks/?search=docs").json()["count"] == 1


def test_completing_twice_is_a_409_with_the_state_machine_message(operator, worker, worker_client):
    task = task_services.task_create(title="Once", created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker)
    lifecycle.work_order_start(work_order=work_order, worker=worker)
    url = f"/api/v1/queue/work-orders/{work_order.pk}/complete/"

    first = worker_client.post(url, {"exit_code": 0}, format="json")
    second = worker_client.post(url, {"exit_code": 0}, format="json")

    assert first.status_code == 200
    assert second.status_code == 409
    assert second.json() == {"detail": lifecycle.ERR_CANNOT_COMPLETE, "code": "illegal_transition"}
    task.refresh_from_db()
    assert task.status == "completed"


def test_output_batches_must_arrive_in_order(operator, worker, worker_client):
    task_services.task_create(title="Chatty", created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker)
    _, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    url = f"/api/v1/queue/work-orders/{work_order.pk}/output/"

    ok = worker_client.post(url, {"seq": 0, "text": "line 1\n"}, format="json")
    gap = worker_client.post(url, {"seq": 5, "text": "line 6\n"}, format="json")
    repeat = worker_client.post(url, {"seq": 0, "text": "line 1\n"}, format="json")

    assert ok.json() == {"next_seq": 1, "work_order_status": "running"}
    assert gap.status_code == repeat.status_code == 409
    assert gap.json()["detail"] == outputs.ERR_OUTPUT_OUT_OF_ORDER.format(expected=1)
    execution.refresh_from_db()
    assert execution.output_tail == "line 1\n"


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=10_000)
def test_oversized_body_is_413_and_creates_nothing(operator_client):
    response = operator_client.post("/api/v1/tasks/", {"title": "big", "description": "x" * 20_000}, format="json")

    assert response.status_code == 413
    assert response.json()["detail"] == ERR_BODY_TOO_LARGE.format(limit=10_000)
    assert not Task.objects.exists()


@override_settings(AGENTVINE_API_RATE="3/min")
def test_a_flooding_client_gets_429_with_retry_after(operator_client, worker_client, redis_client):
    redis_client.flushdb()
    statuses = [operator_client.get("/api/v1/tasks/").status_code for _ in range(5)]

    assert statuses == [200, 200, 200, 429, 429]
    limited = operator_client.get("/api/v1/tasks/")
    assert int(limited["Retry-After"]) > 0
    # The budget is per client: a worker is not throttled by the operator's flood.
    assert worker_client.get("/api/v1/sessions/").status_code == 200
    redis_client.flushdb()


def test_tokens_are_stored_hashed_and_revoked_tokens_are_refused(operator, worker):
    token, key = api_token_create(user=operator, name="laptop")
    old_worker_key = worker_token_issue(worker=worker)
    new_worker_key = worker_token_issue(worker=worker)

    stored = ApiToken.objects.get(pk=token.pk)
    assert key not in (stored.key_hash, stored.prefix) and stored.key_hash == token_hash(key)
    assert not WorkerToken.objects.filter(key_hash__in=[old_worker_key, new_worker_key]).exists()
    refused = token_client(old_worker_key).get(f"/api/v1/workers/{worker.pk}/")
    assert refused.status_code == 401
    assert refused.json() == {"detail": ERR_BAD_TOKEN}
    assert token_client(new_worker_key).get(f"/api/v1/workers/{worker.pk}/").status_code == 200
    assert token_client(key).get("/api/v1/tasks/", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200


def test_deregistered_worker_token_stops_working(worker, worker_client, operator_client):
    assert operator_client.delete(f"/api/v1/workers/{worker.pk}/").json()["status"] == "offline"

    assert worker_client.post(f"/api/v1/workers/{worker.pk}/heartbeat/").status_code == 401


def test_register_returns_a_token_that_works_once_shown(operator_client):
    response = operator_client.post("/api/v1/workers/", {"name": "gpu-box:0", "hostname": "gpu-box"}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["token"].startswith("avw_")
    assert token_client(body["token"]).post(f"/api/v1/workers/{body['id']}/heartbeat/").json() == {
        "ok": True,
        "status": "idle",
        "leases": {},
        "fence_seconds": settings.AGENTVINE_FENCE_SECONDS,
    }
    assert "token" not in operator_client.get(f"/api/v1/workers/{body['id']}/").json()


def test_session_is_required_for_operators_without_token(client, operator):
    client.force_login(operator)

    assert client.get("/api/v1/queue/").status_code == 200
    client.logout()
    assert client.get("/api/v1/queue/").status_code == 401
