"""API policies loaded by DRF's settings: throttling and pagination.

Kept apart from agentvine.api because DRF imports these while it is still
building APIView itself.
"""

from django.conf import settings
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.throttling import SimpleRateThrottle

from workers_app.authentication import request_owner


class ClientRateThrottle(SimpleRateThrottle):
    """One request budget per operator or worker (per IP when anonymous).

    The rate is read from settings on every request so it can be tuned per
    deployment; counters live in the shared cache, so every web process
    counts against the same budget.
    """

    scope = "client"
    cache_alias = "api"

    def __init__(self):
        from django.core.cache import caches

        self.cache = caches[self.cache_alias]
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)

    def get_rate(self):
        return settings.AGENTVINE_API_RATE

    def get_cache_key(self, request, view):
        ident = request_owner(request) or f"ip:{self.get_ident(request)}"
        return f"throttle:{self.scope}:{ident}"


class Pagination(LimitOffsetPagination):
    """limit/offset paging; absurd offsets are clamped instead of reaching SQL."""

    default_limit = 50
    max_limit = 200
    max_offset = 10**9

    def get_offset(self, request):
        return min(super().get_offset(request), self.max_offset)
