"""Fixtures for the live layer: WebSocket clients on our routes, a real daphne."""

import asyncio
import json
import socket
import time
from collections import deque

import pytest
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings

from agentvine import events
from chat_app.routing import websocket_urlpatterns
from tests.conftest import TestDatabaseProcess


def run(coroutine):
    """Run one async test body on a fresh loop (no asyncio test plugin needed)."""
    return asyncio.run(coroutine)


def frame_events(frame):
    """The events one frame carries, in order: a batch frame's, or the frame itself."""
    return frame["events"] if frame["type"] == "batch" else [frame]


class LiveCommunicator(WebsocketCommunicator):
    """A WebSocket client that reads events one by one, unpacking batch frames."""

    def __init__(self, application, path):
        super().__init__(application, path)
        self.frames = []
        self.frame_sizes = []
        self._events = deque()

    async def receive_event(self, timeout=3):
        while not self._events:
            text = await self.receive_from(timeout=timeout)
            frame = json.loads(text)
            self.frames.append(frame)
            self.frame_sizes.append(len(text))
            self._events.extend(frame_events(frame))
        return self._events.popleft()

    async def receive_events(self, count, timeout=3):
        return [await self.receive_event(timeout) for _ in range(count)]

    async def receive_nothing(self, timeout=0.1, interval=0.01):
        return not self._events and await super().receive_nothing(timeout, interval)


def communicator(path, user):
    """A WebSocket client on our routes with ``user`` already authenticated.

    Events published before this point are flushed to the layer first, so
    they cannot arrive at the new socket late and be mistaken for new ones.
    """
    events.flush()
    client = LiveCommunicator(URLRouter(websocket_urlpatterns), path)
    client.scope["user"] = user
    return client


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DaphneServer(TestDatabaseProcess):
    """A real ``daphne agentvine.asgi:application`` on the test database."""

    def __init__(self, log_path, port=None, extra_env=None):
        # A given port restarts a stopped server where its clients expect it.
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        super().__init__(
            ["daphne", "-b", "127.0.0.1", "-p", str(self.port), "agentvine.asgi:application"],
            log_path=log_path,
            extra_env=extra_env,
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
