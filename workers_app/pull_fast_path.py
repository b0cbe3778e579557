"""A pull worker's heartbeat and idle claim poll, answered in front of Django.

A fleet of remote pull workers spends most of its requests on two calls: the
heartbeat (every 3 s per worker) and the claim poll of an idle worker, which
mostly finds an empty queue. Through Django's middleware chain and DRF each
cost ~8 ms of a web process's CPU (``bench/fleet.py`` profiled under
py-spy: the middleware chain, DRF's request set-up, token authentication,
throttling and four statements), so one process held about 100 workers.
Here they cost one Redis round trip (the throttle) and one SQL statement
(``queue_app.pull_polls``) that also checks the worker token, in a small pool
of threads of this process.

The same rules hold as on the Django path:

- Authentication: a worker token only. The statement itself checks that the
  token is not revoked, so a revoked token stops working on its next call;
  the process remembers only which worker a token belongs to (that never
  changes) to name the throttle's budget before the statement runs.
- Throttling: the same sliding log in Redis (``agentvine.api_policies``),
  counted once per request, and the same 429 with ``Retry-After``.
- Idempotency-Key: a request carrying one goes to Django, which stores and
  replays its answer (a heartbeat needs no key: it is safe to repeat).
- The answer's body (``HeartbeatOutput``; 204 for an empty claim) and the
  security headers are those of the Django path (tests/api/test_pull_fast_path.py).

Anything else (another caller, a body, a claim when some work order is
ready, an offline worker coming back, a database error) is handed to Django
untouched, which answers it as before. ``AGENTVINE_PULL_FAST_PATH=false``
sends everything to Django.
"""

import asyncio
import json
import logging
import queue
import re
import threading
import uuid

from django.conf import settings
from django.db import DatabaseError, connection
from rest_framework.exceptions import Throttled
from rest_framework.fields import DateTimeField

from agentvine.api import IDEMPOTENCY_HEADER
from agentvine.api_policies import THROTTLE_KEY_PREFIX, ClientRateThrottle, client_requests_wait
from agentvine.headers import CONTENT_SECURITY_POLICY, PERMISSIONS_POLICY
from queue_app import pull_polls
from workers_app.apis import heartbeat_body
from workers_app.services import WORKER_TOKEN_PREFIX, token_hash

HEARTBEAT_PATH = re.compile(r"/api/v1/workers/(?P<worker>[0-9a-f-]{36})/heartbeat/")
CLAIM_PATH = "/api/v1/queue/claim/"
# Calls answered together at most (one statement and one Redis round trip each kind).
BATCH_MOST = 500
# After this long without a call the batch thread gives its connection back.
IDLE_SECONDS = 1.0
# Tokens whose worker this process remembers (a token never changes worker).
KNOWN_TOKENS = 20_000
# A claim poll's body: none, or an empty JSON object (a claim of "any").
EMPTY_BODIES = (b"", b"{}")
_IDEMPOTENCY = IDEMPOTENCY_HEADER.lower().encode()
_DATETIME = DateTimeField()
logger = logging.getLogger(__name__)


class PullFastPath:
    """ASGI app: answers what it can of the two pull calls, else calls ``app``."""

    def __init__(self, app):
        self.app = app
        self.enabled = settings.AGENTVINE_PULL_FAST_PATH
        self.static_headers = _static_headers()
        self.token_workers = {}
        self.waiting = queue.SimpleQueue()
        self.thread = None
        # Claims handed to Django that have not answered yet (read by the batch thread).
        self.claims_in_django = 0

    async def __call__(self, scope, receive, send):
        if not self.enabled or scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = HEARTBEAT_PATH.fullmatch(path)
        if route is not None:
            worker_id = route["worker"]
        elif path == CLAIM_PATH:
            worker_id = None
        else:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        key = _worker_key(headers.get(b"authorization", b""))
        if key is None or _IDEMPOTENCY in headers:
            return await self.app(scope, receive, send)
        body, receive = await _read_small_body(receive)
        if body not in EMPTY_BODIES:
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        answered = loop.create_future()
        self.waiting.put(Call(key=key, heartbeat_worker=worker_id, loop=loop, answered=answered))
        if self.thread is None:
            self.thread = threading.Thread(target=self._answer_forever, name="agentvine-pull", daemon=True)
            self.thread.start()
        answer = await answered
        if answer is None:
            if worker_id is not None:
                return await self.app(scope, receive, send)
            self.claims_in_django += 1
            try:
                return await self.app(scope, receive, send)
            finally:
                self.claims_in_django -= 1
        status, payload, extra = answer
        request_id = headers.get(b"x-request-id", b"")
        if not (0 < len(request_id) <= 64 and request_id.replace(b"-", b"").isalnum()):
            request_id = uuid.uuid4().hex.encode()
        response_headers = [*self.static_headers, *extra, (b"x-request-id", request_id)]
        if payload is not None:
            response_headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload or b""})

    def _answer_forever(self):
        # One thread and one connection: what arrived while a batch ran is
        # the next batch, so the round trips per call fall as the load grows.
        while True:
            try:
                calls = [self.waiting.get(timeout=IDLE_SECONDS)]
            except queue.Empty:
                # Quiet: the connection goes back to the web's pool.
                connection.close()
                continue
            while len(calls) < BATCH_MOST:
                try:
                    calls.append(self.waiting.get_nowait())
                except queue.Empty:
                    break
            try:
                answers = self.answer(calls)
            except Exception:
                logger.exception("pull fast path: handing %d calls to Django", len(calls))
                answers = [None] * len(calls)
            by_loop = {}
            for call, answer in zip(calls, answers, strict=True):
                by_loop.setdefault(call.loop, []).append((call.answered, answer))
            for loop, results in by_loop.items():
                loop.call_soon_threadsafe(_resolve, results)

    def answer(self, calls):
        """(status, body, headers) of each call answered here, or None for Django to answer it."""
        for call in calls:
            call.digest = token_hash(call.key)
        try:
            unknown = {c.digest for c in calls if c.digest not in self.token_workers}
            if unknown:
                if len(self.token_workers) + len(unknown) > KNOWN_TOKENS:
                    self.token_workers.clear()
                self.token_workers.update(pull_polls.worker_token_owners(unknown))
            answers = [None] * len(calls)
            counted = []
            for n, call in enumerate(calls):
                call.worker_id = self.token_workers.get(call.digest)
                # Unknown token (Django: 401) or another worker's heartbeat (403): Django answers.
                if call.worker_id is not None and call.heartbeat_worker in (None, call.worker_id):
                    counted.append(n)
            waits = _throttle_waits([calls[n].worker_id for n in counted])
            beats, polls = [], []
            for n, wait in zip(counted, waits, strict=True):
                if wait is not None:
                    body = json.dumps({"detail": str(Throttled(wait).detail)}).encode()
                    answers[n] = (429, body, [(b"retry-after", b"%d" % wait)])
                elif calls[n].heartbeat_worker is not None:
                    beats.append(n)
                else:
                    polls.append(n)
            if beats:
                found = pull_polls.worker_heartbeats_record([(calls[n].worker_id, calls[n].digest) for n in beats])
                for n, beat in zip(beats, found, strict=True):
                    answers[n] = self._heartbeat_answer(calls[n], beat)
            if polls:
                live, ready = pull_polls.work_orders_claim_possible(
                    [(calls[n].worker_id, calls[n].digest) for n in polls]
                )
                # As many polls go on to claim as there are ready orders not
                # already being claimed through Django here; the others are
                # answered as a claim that lost the race for them would be.
                admitted = ready - self.claims_in_django
                for n, authorised in zip(polls, live, strict=True):
                    if not authorised:
                        self.token_workers.pop(calls[n].digest, None)
                    elif admitted > 0:
                        admitted -= 1
                    else:
                        answers[n] = (204, None, [])
            return answers
        except DatabaseError:
            # Django's path meets the same error and answers it (503); this
            # thread's connection is dropped and the next batch opens one.
            connection.close()
            return [None] * len(calls)

    def _heartbeat_answer(self, call, beat):
        if not beat.authorised or beat.status is None:
            # Revoked since (Django: 401), or offline coming back (Django revives it).
            self.token_workers.pop(call.digest, None)
            return None
        body = heartbeat_body(beat)
        body["leases"] = {pk: _DATETIME.to_representation(until) for pk, until in body["leases"].items()}
        return 200, json.dumps(body, separators=(",", ":")).encode(), []


class Call:
    """One request waiting for the batch thread."""

    __slots__ = ("key", "heartbeat_worker", "loop", "answered", "digest", "worker_id")

    def __init__(self, *, key, heartbeat_worker, loop, answered):
        self.key, self.heartbeat_worker, self.loop, self.answered = key, heartbeat_worker, loop, answered


def _resolve(results):
    for answered, answer in results:
        if not answered.done():
            answered.set_result(answer)


def _worker_key(authorization):
    parts = authorization.split()
    if len(parts) != 2 or parts[0].lower() not in (b"token", b"bearer"):
        return None
    try:
        key = parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    return key if key.startswith(WORKER_TOKEN_PREFIX) else None


def _throttle_waits(worker_ids):
    throttle = ClientRateThrottle()
    if throttle.rate is None or not worker_ids:
        return [None] * len(worker_ids)
    keys = [f"{THROTTLE_KEY_PREFIX}worker:{w}" for w in worker_ids]
    return client_requests_wait(keys, throttle.num_requests, throttle.duration)


async def _read_small_body(receive):
    """The request's body (None if it is not short), and a ``receive`` that replays what was read."""
    messages, size = [], 0
    while True:
        message = await receive()
        messages.append(message)
        size += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body") or size > 64:
            break
    last = messages[-1]
    complete = last["type"] == "http.request" and not last.get("more_body")
    body = b"".join(m.get("body", b"") for m in messages) if complete else None

    async def replay():
        if messages:
            return messages.pop(0)
        return await receive()

    return body, replay


def _static_headers():
    """The headers Django's chain puts on a worker's API answer (security middleware, DRF's renderer)."""
    policy = settings.AGENTVINE_CONTENT_SECURITY_POLICY or CONTENT_SECURITY_POLICY
    headers = [
        (b"content-type", b"application/json"),
        (b"vary", b"Accept"),
        (b"allow", b"POST, OPTIONS"),
        (b"x-frame-options", settings.X_FRAME_OPTIONS.encode()),
        (b"content-security-policy", policy.encode()),
        (b"permissions-policy", PERMISSIONS_POLICY.encode()),
    ]
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append((b"x-content-type-options", b"nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        headers.append((b"referrer-policy", settings.SECURE_REFERRER_POLICY.encode()))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append((b"cross-origin-opener-policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode()))
    return headers
