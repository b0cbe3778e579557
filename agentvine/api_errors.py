from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from agentvine.errors import DomainError

ERR_BODY_TOO_LARGE = "request body is larger than {limit} bytes"


def body_too_large_message():
    return ERR_BODY_TOO_LARGE.format(limit=settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


def exception_handler(exc, context):
    """Map domain errors to HTTP: 400 with field messages, 404, 409, 403; 413 for big bodies."""
    if isinstance(exc, DomainError):
        if exc.field:
            body = {exc.field: [exc.message]}
        else:
            body = {"detail": exc.message, "code": exc.code}
        return Response(body, status=exc.http_status)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"detail": body_too_large_message(), "code": "too_large"},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if response.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        response.data = {"detail": str(exc)}
    return response
