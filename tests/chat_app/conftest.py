"""Fixtures for the live layer: real Redis channel layer, real Postgres."""

import asyncio
import socket
import time

import pytest
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers, get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings

from agentvine import events
from chat_app.routing import websocket_urlpatterns
from tests.conftest import TestDatabaseProcess


def run(coroutine):
    """Run one async test body on a fresh loop (no asyncio test plugin needed)."""
    return asyncio.run(coroutine)


@pytest.fixture
def channel_layer(redis_client):
    """The real channels-redis layer on an empty Redis DB (ours alone).

    Flushed with a plain client: the layer's own flush() would also close the
    connections of the event publisher's loop.
    """
    redis_client.flushdb()
    # A fresh layer object per test: its receive lock and buffers belong to
    # the event loop of one test, and every test runs its own loop.
    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    yield get_channel_layer()
    redis_client.flushdb()


def communicator(path, user):
    """A WebSocket client on our routes with ``user`` already authenticated.

    Events published before this point are flushed to the layer first, so
    they cannot arrive at the new socket late and be mistaken for new ones.
    """
    events.flush()
    client = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
    client.scope["user"] = user
    return client


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DaphneServer(TestDatabaseProcess):
    """A real ``daphne agentvine.asgi:application`` on the test database."""

    def __init__(self, log_path, port=None):
        # A given port restarts a stopped server where its clients expect it.
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        super().__init__(
            ["daphne", "-b", "127.0.0.1", "-p", str(self.port), "agentvine.asgi:application"], log_path=log_path
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited early:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"daphne did not listen:\n{self.output()}")


@pytest.fixture
def daphne_server(transactional_db, tmp_path):
    server = DaphneServer(tmp_path / "daphne.log")
    yield server
    server.stop()


@pytest.fixture
def session_cookie(client):
    """Log ``user`` in through Django's session machinery; returns the Cookie header."""

    def login(user):
        client.force_login(user)
        return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"

    return login
