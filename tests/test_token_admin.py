"""Operators' and workers' tokens in the admin: listed without their secret, revocable."""

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from workers_app.models import ApiToken, WorkerToken
from workers_app.services import api_token_create, worker_register_with_token

pytestmark = pytest.mark.django_db


def _status(key, path):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client.get(path).status_code


def test_tokens_are_listed_by_prefix_and_revoked_from_the_admin(admin_client, operator):
    token, operator_key = api_token_create(user=operator, name="laptop")
    worker, worker_key = worker_register_with_token(name="gpu-box:0")
    assert _status(operator_key, "/api/v1/queue/") == 200
    assert _status(worker_key, f"/api/v1/workers/{worker.id}/") == 200

    pages = [
        admin_client.get(reverse("admin:workers_app_apitoken_changelist")).content.decode(),
        admin_client.get(reverse("admin:workers_app_workertoken_changelist")).content.decode(),
    ]
    assert token.prefix in pages[0] and "laptop" in pages[0]
    assert WorkerToken.objects.get().prefix in pages[1]
    for key in (operator_key, worker_key):
        assert key not in "".join(pages)
    assert token.key_hash not in pages[0]

    for model, pk in (("apitoken", token.pk), ("workertoken", WorkerToken.objects.get().pk)):
        admin_client.post(
            reverse(f"admin:workers_app_{model}_changelist"), {"action": "revoke_tokens", "_selected_action": [pk]}
        )

    assert ApiToken.objects.get().revoked_at is not None
    assert WorkerToken.objects.get().revoked_at is not None
    assert _status(operator_key, "/api/v1/queue/") == 401
    assert _status(worker_key, f"/api/v1/workers/{worker.id}/") == 401
