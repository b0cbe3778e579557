"""Clients for the REST API: anonymous, operator (API token), workers (worker tokens)."""

import pytest
from rest_framework.test import APIClient


def token_client(key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def anon_client():
    return APIClient()


@pytest.fixture
def operator_key(operator):
    from workers_app.services import api_token_create

    return api_token_create(user=operator, name="tests")[1]


@pytest.fixture
def operator_client(operator_key):
    return token_client(operator_key)


@pytest.fixture
def worker_client(worker):
    from workers_app.services import worker_token_issue

    return token_client(worker_token_issue(worker=worker))


@pytest.fixture
def other_worker_client(other_worker):
    from workers_app.services import worker_token_issue

    return token_client(worker_token_issue(worker=other_worker))
