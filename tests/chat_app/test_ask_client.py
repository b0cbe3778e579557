"""The agent's ask client against a stand-in server: it keeps waiting through
503s (honouring Retry-After) and gives up only at its own timeout."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chat_app.ask_client import AgentVineClient, AskError


class _Server:
    """Answers the ask endpoints from a script: one (status, headers, body) per request."""

    def __init__(self, wait_answers):
        self.wait_answers = list(wait_answers)
        self.requests = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status, headers, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                server.requests.append(("POST", self.path, time.monotonic()))
                self.rfile.read(int(self.headers["Content-Length"]))
                self._reply(201, {}, {"question_id": "q1", "status": "pending"})

            def do_GET(self):
                server.requests.append(("GET", self.path, time.monotonic()))
                answer = server.wait_answers.pop(0) if len(server.wait_answers) > 1 else server.wait_answers[0]
                self._reply(*answer)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self):
        self.http.shutdown()
        self.http.server_close()


STOPPING = (503, {"Retry-After": "1"}, {"status": "pending", "detail": "the server is restarting: ask again"})


@pytest.fixture
def stand_in():
    servers = []

    def start(wait_answers):
        servers.append(_Server(wait_answers))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_ask_waits_through_503_for_the_answer(stand_in):
    server = stand_in([STOPPING, STOPPING, (200, {}, {"status": "answered", "answer": "teal"})])
    assert AgentVineClient(server.url, "token").ask("Which colour?") == "teal"
    polls = [at for method, _, at in server.requests if method == "GET"]
    assert len(polls) == 3
    # Retry-After: 1 is honoured between polls, not hammered.
    assert all(later - earlier >= 0.9 for earlier, later in zip(polls, polls[1:], strict=False))


def test_ask_gives_up_at_its_timeout_while_the_server_stays_unavailable(stand_in):
    server = stand_in([STOPPING])
    started = time.monotonic()
    with pytest.raises(AskError, match=r"unavailable \(503\)"):
        AgentVineClient(server.url, "token").ask("Anyone?", timeout=1.5)
    assert time.monotonic() - started < 5
