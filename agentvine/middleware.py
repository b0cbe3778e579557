"""Answers honestly while PostgreSQL is away (a restart, a failover)."""

from django.db import InterfaceError, OperationalError
from django.http import JsonResponse

ERR_DATABASE_UNAVAILABLE = "the database is unavailable for a moment: try again"
# Seconds a client should wait before trying again; a PostgreSQL restart takes a few.
RETRY_AFTER_SECONDS = 3


class DatabaseUnavailableMiddleware:
    """A view that lost its database connection answers 503 with Retry-After,
    not 500: nothing was written (its transaction rolled back), and the same
    request will work once the database is back. Django drops the broken
    connection at the end of the request and opens a new one for the next."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        response = JsonResponse({"detail": ERR_DATABASE_UNAVAILABLE, "code": "unavailable"}, status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
