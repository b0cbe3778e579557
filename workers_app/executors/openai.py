"""Any OpenAI-compatible chat-completions endpoint, streamed over SSE.

A local vLLM, llama.cpp or Ollama server, or a hosted one. The conversation
lives in this executor: each request streams ``data:`` chunks (text deltas,
tool-call deltas, and with ``stream_options.include_usage`` a last chunk with
the usage). The model gets one tool, ``ask_human``; a call to it becomes a
``question`` event and the conversation continues when
:meth:`OpenAIExecutor.provide_answer` hands in the person's answer as the
tool's result.

The HTTP stream is read on a thread so the runner keeps getting ticks (to
flush output and notice a cancel) while the model thinks or a human does.
"""

import email.utils
import json
import os
import queue
import threading
import time
import urllib.error
import urllib.request

from django.conf import settings

from workers_app.executors.base import TICK, Executor, ExecutorConfigError, ExecutorEvent, usage_event
from workers_app.executors.environment import secret_read

ASK_HUMAN = "ask_human"
ASK_HUMAN_TOOL = {
    "type": "function",
    "function": {
        "name": ASK_HUMAN,
        "description": (
            "Ask a human operator a question and wait for the answer. Use it when a decision "
            "or a piece of information can only come from a person."
        ),
        "parameters": {
            "type": "object",
            "properties": {"question": {"type": "string", "description": "The question, self-contained."}},
            "required": ["question"],
        },
    },
}
SYSTEM_PROMPT = (
    "You are a software engineering agent working in the repository at {workspace}. "
    "When you need a decision or information only a person can give, call the ask_human tool."
)

ERR_NO_ENDPOINT = "openai executor needs a base_url and a model (profile or AGENTVINE_OPENAI_* settings)"
ERR_UNREACHABLE = "OpenAI-compatible endpoint {url} is unreachable: {reason}"
ERR_REJECTED = "OpenAI-compatible endpoint {url} rejected the request with HTTP {status}: {detail}"
ERR_HTTP = "model request failed with HTTP {status}: {detail}"
ERR_STREAM = "model stream failed: {detail}"
ERR_TURN_LIMIT = "the model used all {turns} turns without finishing"
ERR_INTERRUPTED = "interrupted"
# Statuses that retrying cannot fix: bad key, no such model or path.
CONFIG_STATUSES = {400, 401, 403, 404}


class OpenAIExecutor(Executor):
    def __init__(self, context):
        super().__init__(context)
        profile = context.profile
        self.base_url = (profile.get("base_url") or settings.AGENTVINE_OPENAI_BASE_URL).rstrip("/")
        self.model = profile.get("model") or settings.AGENTVINE_OPENAI_MODEL
        # The key stays in this process (the model never sees it); like a
        # profile secret it may come from a file (NAME_FILE).
        key_name = profile.get("api_key_env", "OPENAI_API_KEY")
        self.api_key = profile.get("api_key") or os.environ.get(key_name, "")
        if not self.api_key and os.environ.get(f"{key_name}_FILE"):
            self.api_key = secret_read(key_name)
        self.max_turns = int(profile.get("max_turns", 30))
        self.read_timeout = float(profile.get("read_timeout", 300))
        self._stop = threading.Event()
        self._answers = queue.Queue(maxsize=1)
        self._pending_question = None
        self._requests = 0
        # Operator messages wait here for the model's next turn.
        self._inbox_lock = threading.Lock()
        self._inbox = []
        self._inbox_closed = False

    @property
    def url(self):
        return f"{self.base_url}/chat/completions"

    # --- the conversation ---------------------------------------------------------
    def events(self):
        try:
            yield from self._conversation()
        finally:
            with self._inbox_lock:
                self._inbox_closed = True

    def _conversation(self):
        if not self.base_url or not self.model:
            raise ExecutorConfigError(ERR_NO_ENDPOINT)
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT.format(workspace=self.context.workspace)},
            {"role": "user", "content": self.context.prompt},
        ]
        for _ in range(self.max_turns):
            for text in self._take_inbox():
                yield ExecutorEvent("output", f"[message] {text}\n")
                messages.append({"role": "user", "content": text})
            reply = {"text": [], "tool_calls": {}, "failed": None}
            yield from self._stream_reply(messages, reply)
            if self._stop.is_set():
                yield ExecutorEvent("error", ERR_INTERRUPTED)
                return
            if reply["failed"]:
                yield ExecutorEvent("error", reply["failed"])
                return
            text = "".join(reply["text"])
            if text and not text.endswith("\n"):
                yield ExecutorEvent("output", "\n")
            calls = [reply["tool_calls"][index] for index in sorted(reply["tool_calls"])]
            for number, call in enumerate(calls):
                # Some local servers leave the id out; the reply must name one.
                call["id"] = call["id"] or f"call_{self._requests}_{number}"
            assistant = {"role": "assistant", "content": text or None}
            if calls:
                assistant["tool_calls"] = calls
            messages.append(assistant)
            if not calls:
                if self._close_inbox():
                    yield ExecutorEvent("completed", data={"exit_code": 0})
                    return
                continue  # messages came in during this turn: the model reads them next

            for call in calls:
                answer = yield from self._run_tool(call)
                if answer is None:
                    yield ExecutorEvent("error", ERR_INTERRUPTED)
                    return
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": answer})
        yield ExecutorEvent("error", ERR_TURN_LIMIT.format(turns=self.max_turns))

    def _run_tool(self, call):
        """Yields events; returns the tool's result text (None when stopped)."""
        name = call["function"]["name"]
        try:
            arguments = json.loads(call["function"]["arguments"] or "{}")
        except ValueError:
            arguments = {}
        if name != ASK_HUMAN:
            yield ExecutorEvent("output", f"[openai] the model called an unknown tool: {name}\n")
            return f"error: there is no tool called {name}; the only tool is {ASK_HUMAN}"
        question = str(arguments.get("question") or call["function"]["arguments"])
        yield ExecutorEvent("tool_use", f"[tool] {ASK_HUMAN}: {question}\n", data={"name": name, "input": arguments})
        self._pending_question = call["id"]
        yield ExecutorEvent("question", question, data={"tool_call_id": call["id"]})
        while not self._stop.is_set():
            try:
                answer = self._answers.get(timeout=0.25)
            except queue.Empty:
                yield TICK
                continue
            self._pending_question = None
            yield ExecutorEvent("output", f"[human] {answer}\n")
            return answer
        return None

    def _stream_reply(self, messages, reply):
        chunks = queue.Queue(maxsize=1000)
        body = {
            "model": self.model,
            "messages": messages,
            "tools": [ASK_HUMAN_TOOL],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        first_request = self._requests == 0
        self._requests += 1
        threading.Thread(target=self._read_stream, args=(body, chunks), name="openai-stream", daemon=True).start()
        while True:
            try:
                kind, payload = chunks.get(timeout=0.25)
            except queue.Empty:
                if self._stop.is_set():
                    return
                yield TICK
                continue
            if kind == "end":
                return
            if kind == "chunk":
                yield from self._apply_chunk(payload, reply)
            elif kind == "unreachable":
                if first_request:
                    raise ExecutorConfigError(ERR_UNREACHABLE.format(url=self.url, reason=payload))
                reply["failed"] = ERR_STREAM.format(detail=payload)
            elif kind == "rate_limited":
                # 429: the run stops and the key waits (queue_app.rate_limits).
                retry_after, detail = payload
                resets_at = time.time() + retry_after if retry_after is not None else None
                yield ExecutorEvent(
                    "rate_limited", data={"resets_at": resets_at, "reason": f"openai 429: {detail}"[:200]}
                )
                reply["failed"] = ERR_HTTP.format(status=429, detail=detail)
            elif kind == "http_error":
                status, detail = payload
                if first_request and status in CONFIG_STATUSES:
                    raise ExecutorConfigError(ERR_REJECTED.format(url=self.url, status=status, detail=detail))
                reply["failed"] = ERR_HTTP.format(status=status, detail=detail)

    def _read_stream(self, body, chunks):
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.read_timeout) as response:
                for raw in response:
                    if self._stop.is_set():
                        break
                    line = raw.decode("utf-8", errors="replace").strip()
                    # SSE: only "data:" lines carry chunks; comments and
                    # "event:" lines are keep-alives here.
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunks.put(("chunk", data))
        except urllib.error.HTTPError as exc:
            detail = exc.read(500).decode("utf-8", errors="replace").strip() or exc.reason
            if exc.code == 429:
                chunks.put(("rate_limited", (_retry_after_seconds(exc.headers.get("Retry-After")), detail)))
            else:
                chunks.put(("http_error", (exc.code, detail)))
        except (urllib.error.URLError, OSError) as exc:
            chunks.put(("unreachable", str(getattr(exc, "reason", exc))))
        finally:
            chunks.put(("end", None))

    def _apply_chunk(self, data, reply):
        try:
            chunk = json.loads(data)
        except ValueError:
            yield ExecutorEvent("output", f"[openai] unparsed stream data: {data[:300]}\n")
            return
        if chunk.get("error"):
            error = chunk["error"]
            reply["failed"] = ERR_STREAM.format(detail=error.get("message") if isinstance(error, dict) else error)
            return
        usage = chunk.get("usage")
        if usage:
            yield usage_event(
                self.context.profile,
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
            )
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                reply["text"].append(delta["content"])
                yield ExecutorEvent("output", delta["content"])
            for call_delta in delta.get("tool_calls") or []:
                # Tool calls arrive in pieces keyed by index: the id and name
                # first, the JSON arguments spread over later chunks.
                call = reply["tool_calls"].setdefault(
                    call_delta.get("index", 0),
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                call["id"] = call_delta.get("id") or call["id"]
                function = call_delta.get("function") or {}
                call["function"]["name"] += function.get("name") or ""
                call["function"]["arguments"] += function.get("arguments") or ""

    def _take_inbox(self):
        with self._inbox_lock:
            taken, self._inbox = self._inbox, []
        return taken

    def _close_inbox(self):
        """Stop taking messages; False when some arrived and need another turn."""
        with self._inbox_lock:
            if self._inbox:
                return False
            self._inbox_closed = True
            return True

    # --- control from other threads ---------------------------------------------
    def send_message(self, text):
        """Queue an operator message for the model's next turn (its next request)."""
        with self._inbox_lock:
            if self._inbox_closed or self._stop.is_set():
                return False
            self._inbox.append(text)
        return True

    def provide_answer(self, text):
        if self._pending_question is None:
            return False
        try:
            self._answers.put_nowait(text)
        except queue.Full:
            return False
        return True

    def interrupt(self):
        self._stop.set()

    def kill(self):
        self._stop.set()


def _retry_after_seconds(value):
    """Seconds from now a ``Retry-After`` header names (a number or an HTTP
    date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)
