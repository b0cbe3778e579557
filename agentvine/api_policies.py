"""API policies loaded by DRF's settings: throttling and pagination.

Kept apart from agentvine.api because DRF imports these while it is still
building APIView itself.
"""

import logging
import uuid

import redis
from django.conf import settings
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.throttling import SimpleRateThrottle

from agentvine.redis_client import shared_redis
from workers_app.authentication import request_owner

logger = logging.getLogger(__name__)

THROTTLE_KEY_PREFIX = "agentvine:throttle:"

# A sliding log, as DRF's SimpleRateThrottle keeps, but in one atomic round
# trip instead of a read and a write of the whole pickled history: the
# client's requests of the last window are the members of a sorted set scored
# by Redis's own clock (the same for every web host). Answers nil when the
# request may go ahead (and records it), else the seconds until the oldest
# request leaves the window.
SLIDING_LOG = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('EXPIRE', KEYS[1], math.ceil(window))
  return false
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tostring(tonumber(oldest[2]) + window - now)
"""

_script = {}


def _sliding_log():
    client = shared_redis()
    if _script.get("client") is not client:
        _script.update(client=client, script=client.register_script(SLIDING_LOG))
    return _script["script"]


def client_request_wait(key, num_requests, duration):
    """Count one request of the client whose sliding log is ``key``: None if
    it may go ahead, else the seconds to wait. The web's fast paths
    (workers_app/pull_fast_path.py) count through :func:`client_requests_wait` too."""
    return client_requests_wait([key], num_requests, duration)[0]


def client_requests_wait(keys, num_requests, duration):
    """:func:`client_request_wait` for a request of each of ``keys`` (one
    round trip to Redis for them all)."""
    script = _sliding_log()
    try:
        if len(keys) == 1:
            waits = [script(keys=keys, args=[duration, num_requests, uuid.uuid4().hex])]
        else:
            pipe = shared_redis().pipeline(transaction=False)
            for key in keys:
                script(keys=[key], args=[duration, num_requests, uuid.uuid4().hex], client=pipe)
            waits = pipe.execute()
    except redis.RedisError:
        logger.warning("rate limit not checked: Redis unavailable", exc_info=True)
        return [None] * len(keys)
    return [None if wait is None else float(wait) for wait in waits]


class ClientRateThrottle(SimpleRateThrottle):
    """One request budget per operator or worker (per IP when anonymous).

    The rate is read from settings on every request so it can be tuned per
    deployment; the log lives in Redis, so every web process counts against
    the same budget. If Redis cannot be reached the request goes ahead: the
    API stays usable (Postgres is the truth) and the outage is logged.
    """

    scope = "client"

    def __init__(self):
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        self._wait = None

    def get_rate(self):
        return settings.AGENTVINE_API_RATE

    def get_cache_key(self, request, view):
        ident = request_owner(request) or f"ip:{self.get_ident(request)}"
        return f"{THROTTLE_KEY_PREFIX}{ident}"

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self._wait = client_request_wait(self.get_cache_key(request, view), self.num_requests, self.duration)
        return self._wait is None

    def wait(self):
        return self._wait


class Pagination(LimitOffsetPagination):
    """limit/offset paging; absurd offsets are clamped instead of reaching SQL."""

    default_limit = 50
    max_limit = 200
    max_offset = 10**9

    def get_offset(self, request):
        return min(super().get_offset(request), self.max_offset)


def paginated(serializer_class):
    """What a :class:`Pagination` page of ``serializer_class`` looks like, for
    the schema of a list written as an APIView (drf-spectacular documents
    pagination only for generic list views)."""
    name = serializer_class.__name__.removesuffix("Serializer")
    return inline_serializer(
        f"Paginated{name}List",
        {
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer_class(many=True),
        },
    )
