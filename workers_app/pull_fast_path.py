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
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import DatabaseError, connection
from rest_framework.exceptions import Throttled
from rest_framework.fields import DateTimeField

from agentvine.api import IDEMPOTENCY_HEADER
from agentvine.api_policies import THROTTLE_KEY_PREFIX, ClientRateThrottle, client_request_wait
from agentvine.headers import CONTENT_SECURITY_POLICY, PERMISSIONS_POLICY
from queue_app import pull_polls
from workers_app.apis import heartbeat_body
from workers_app.services import WORKER_TOKEN_PREFIX, token_hash

HEARTBEAT_PATH = re.compile(r"/api/v1/workers/(?P<worker>[0-9a-f-]{36})/heartbeat/")
CLAIM_PATH = "/api/v1/queue/claim/"
# Threads answering fast requests: each holds a pooled connection only while
# it runs one statement.
THREADS = 4
# Tokens whose worker this process remembers (a token never changes worker).
KNOWN_TOKENS = 20_000
# A claim poll's body: none, or an empty JSON object (a claim of "any").
EMPTY_BODIES = (b"", b"{}")
_IDEMPOTENCY = IDEMPOTENCY_HEADER.lower().encode()
_DATETIME = DateTimeField()


class PullFastPath:
    """ASGI app: answers what it can of the two pull calls, else calls ``app``."""

    def __init__(self, app):
        self.app = app
        self.enabled = settings.AGENTVINE_PULL_FAST_PATH
        self.threads = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="agentvine-pull")
        self.token_workers = {}
        self.static_headers = _static_headers()

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
        answer = await asyncio.get_running_loop().run_in_executor(self.threads, self._answer, key, worker_id)
        if answer is None:
            return await self.app(scope, receive, send)
        status, payload, extra = answer
        request_id = headers.get(b"x-request-id", b"")
        if not (0 < len(request_id) <= 64 and request_id.replace(b"-", b"").isalnum()):
            request_id = uuid.uuid4().hex.encode()
        response_headers = [*self.static_headers, *extra, (b"x-request-id", request_id)]
        if payload is not None:
            response_headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload or b""})

    def _answer(self, key, heartbeat_worker):
        """(status, body, headers) answered here, or None for Django to answer."""
        digest = token_hash(key)
        try:
            worker_id = self.token_workers.get(digest)
            if worker_id is None:
                worker_id = pull_polls.worker_token_owner(key_hash=digest)
                if worker_id is None:
                    return None  # Django answers 401.
                if len(self.token_workers) >= KNOWN_TOKENS:
                    self.token_workers.clear()
                worker_id = self.token_workers[digest] = str(worker_id)
            if heartbeat_worker is not None and heartbeat_worker != worker_id:
                return None  # Django answers 403.
            wait = _throttle_wait(worker_id)
            if wait is not None:
                throttled = Throttled(wait)
                body = json.dumps({"detail": str(throttled.detail)}).encode()
                return 429, body, [(b"retry-after", b"%d" % wait)]
            if heartbeat_worker is not None:
                beat = pull_polls.worker_heartbeat_record(worker_id=worker_id, key_hash=digest)
                if not beat.authorised or beat.status is None:
                    # Revoked since (Django: 401), or offline coming back (Django revives it).
                    self.token_workers.pop(digest, None)
                    return None
                body = heartbeat_body(beat)
                body["leases"] = {pk: _DATETIME.to_representation(until) for pk, until in body["leases"].items()}
                return 200, json.dumps(body, separators=(",", ":")).encode(), []
            authorised, possible = pull_polls.work_order_claim_possible(worker_id=worker_id, key_hash=digest)
            if not authorised:
                self.token_workers.pop(digest, None)
                return None
            return None if possible else (204, None, [])
        except DatabaseError:
            # Django's path meets the same error and answers it (503).
            return None
        finally:
            # Back to the web's pool (DATABASE_POOL), as Django does after each request.
            connection.close()


def _worker_key(authorization):
    parts = authorization.split()
    if len(parts) != 2 or parts[0].lower() not in (b"token", b"bearer"):
        return None
    try:
        key = parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    return key if key.startswith(WORKER_TOKEN_PREFIX) else None


def _throttle_wait(worker_id):
    throttle = ClientRateThrottle()
    if throttle.rate is None:
        return None
    return client_request_wait(f"{THROTTLE_KEY_PREFIX}worker:{worker_id}", throttle.num_requests, throttle.duration)


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
