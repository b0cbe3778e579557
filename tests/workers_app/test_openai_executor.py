"""The openai executor against a local server speaking the streaming chat-completions SSE protocol."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from workers_app.executors import ExecutorConfigError
from workers_app.executors.openai import ASK_HUMAN, ERR_INTERRUPTED

API_KEY = "sk-test-123"


def sse(chunk):
    return f"data: {json.dumps(chunk)}\n\n".encode()


def delta_chunk(delta, finish=None):
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "local-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class ChatServer:
    """Answers like vLLM/llama.cpp: a question to a human first when the
    prompt says "ask", then a final answer once the tool result is in."""

    def __init__(self):
        self.requests = []
        # (Retry-After header or None) to refuse with HTTP 429, as a rate-limited API does.
        self.refuse = False
        self.retry_after = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                    self.send_response(401)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "invalid api key"}}')
                    return
                if server.refuse:
                    self.send_response(429)
                    self.send_header("Content-Type", "application/json")
                    if server.retry_after is not None:
                        self.send_header("Retry-After", server.retry_after)
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "Rate limit reached for requests"}}')
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for piece in server.reply(body["messages"]):
                    self.wfile.write(piece)
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def reply(self, messages):
        last = messages[-1]
        yield sse(delta_chunk({"role": "assistant", "content": ""}))
        if last["role"] == "user" and "ask" in last["content"]:
            yield sse(delta_chunk({"content": "I need a decision. "}))
            yield sse(
                delta_chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_abc",
                                "type": "function",
                                "function": {"name": ASK_HUMAN, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for part in ['{"quest', 'ion": "Which database', ' should I use?"}']:
                yield sse(delta_chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}))
            yield sse(delta_chunk({}, finish="tool_calls"))
            usage = {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52}
        else:
            answer = last["content"] if last["role"] == "tool" else "nothing to ask"
            for word in ["Using ", answer, "."]:
                yield sse(delta_chunk({"content": word}))
            yield sse(delta_chunk({}, finish="stop"))
            usage = {"prompt_tokens": 70, "completion_tokens": 5, "total_tokens": 75}
        yield b": keep-alive comment\n\n"
        yield sse({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": usage})

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def chat_server():
    server = ChatServer()
    yield server
    server.close()


def profile(base_url, **extra):
    return {"type": "openai", "base_url": base_url, "model": "local-model", "api_key": API_KEY, **extra}


def test_streams_text_and_usage_to_completion(run_agent, chat_server):
    run = run_agent(profile(chat_server.base_url), "Say which database we use")

    assert run.outcome.kind == "completed"
    assert run.output == "Using nothing to ask.\n"
    assert [u.data for u in run.of("usage")] == [{"input_tokens": 70, "output_tokens": 5, "cost_usd": 0}]
    [request] = chat_server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["stream"] is True
    assert request["body"]["tools"][0]["function"]["name"] == ASK_HUMAN


def test_ask_human_tool_call_becomes_a_question_and_the_answer_the_tool_result(run_agent, chat_server):
    def answer(run, event):
        if event.kind == "usage" and not run.of("question"):
            assert run.executor.provide_answer("too early") is False
        if event.kind == "question":
            threading.Timer(0.3, run.executor.provide_answer, args=["PostgreSQL"]).start()

    run = run_agent(
        profile(chat_server.base_url, usd_per_million_input=2.0, usd_per_million_output=8.0),
        "Please ask before choosing",
        on_event=answer,
    )

    [question] = run.of("question")
    assert question.text == "Which database should I use?"
    assert question.data == {"tool_call_id": "call_abc"}
    assert run.outcome.kind == "completed"
    assert run.output.endswith("[human] PostgreSQL\nUsing PostgreSQL.\n")
    follow_up = chat_server.requests[1]["body"]["messages"]
    assert follow_up[-2]["tool_calls"][0]["function"] == {
        "name": ASK_HUMAN,
        "arguments": '{"question": "Which database should I use?"}',
    }
    assert follow_up[-1] == {"role": "tool", "tool_call_id": "call_abc", "content": "PostgreSQL"}
    assert [u.data["input_tokens"] for u in run.of("usage")] == [40, 70]
    assert run.of("usage")[0].data["cost_usd"] == pytest.approx((40 * 2.0 + 12 * 8.0) / 1e6)


def test_interrupt_while_waiting_for_an_answer(run_agent, chat_server):
    def stop(run, event):
        if event.kind == "question":
            run.executor.interrupt()

    started = time.monotonic()
    run = run_agent(profile(chat_server.base_url), "ask first", on_event=stop)

    assert run.outcome.kind == "error" and run.outcome.text == ERR_INTERRUPTED
    assert time.monotonic() - started < 3


def test_unreachable_endpoint_is_a_configuration_error(run_agent):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(
        ExecutorConfigError,
        match=rf"^OpenAI-compatible endpoint http://127.0.0.1:{port}/v1/chat/completions is unreachable: ",
    ):
        run_agent(profile(f"http://127.0.0.1:{port}/v1"), "hello")


@pytest.mark.parametrize("retry_after", ["30", "DATE", None])
def test_http_429_is_a_rate_limit_with_its_retry_after(run_agent, chat_server, retry_after):
    # The local server speaks the chat-completions API (no real provider is reachable here).
    from email.utils import formatdate

    chat_server.refuse = True
    chat_server.retry_after = formatdate(time.time() + 30, usegmt=True) if retry_after == "DATE" else retry_after
    before = time.time()
    run = run_agent(profile(chat_server.base_url), "hello")

    [limited] = run.of("rate_limited")
    assert "Rate limit reached" in limited.data["reason"]
    if retry_after is None:
        assert limited.data["resets_at"] is None  # the key falls back to its backoff
    else:
        assert before + 28 <= limited.data["resets_at"] <= time.time() + 31
    assert run.outcome.kind == "error"


def test_rejected_key_is_a_configuration_error(run_agent, chat_server):
    with pytest.raises(ExecutorConfigError, match="rejected the request with HTTP 401: .*invalid api key"):
        run_agent(profile(chat_server.base_url, api_key="wrong"), "hello")


def test_a_message_sent_while_the_model_works_reaches_it_on_its_next_turn(run_agent, chat_server):
    accepted = []

    def on_event(run, event):
        if event.kind == "question":
            accepted.append(run.executor.send_message("Also write a changelog entry"))
            threading.Timer(0.3, run.executor.provide_answer, args=["PostgreSQL"]).start()

    run = run_agent(profile(chat_server.base_url), "Please ask before choosing", on_event=on_event)

    assert accepted == [True]
    assert run.outcome.kind == "completed"
    follow_up = chat_server.requests[1]["body"]["messages"]
    assert [m["role"] for m in follow_up[-2:]] == ["tool", "user"]
    assert follow_up[-1]["content"] == "Also write a changelog entry"
    assert "[human] PostgreSQL\n[message] Also write a changelog entry\n" in run.output
    # The conversation is over: a later message is refused and stays queued.
    assert run.executor.send_message("too late") is False
