"""Shared machinery of the REST API: idempotent writes, throttling, body limit.

Every API view derives from :class:`PlatformAPIView`. A write sent with an
``Idempotency-Key`` header is applied once: its response is stored in
Postgres in the same transaction as the write and replayed for a repeat of
the same request. Clients with flaky links (the terminal client's outbox,
remote workers) rely on it.
"""

import hashlib
import json

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import APIView

from agentvine.api_errors import body_too_large_message
from agentvine.api_policies import Pagination, paginated  # noqa: F401  (re-exported for views)
from workers_app.authentication import request_owner
from workers_app.models import IdempotencyKey

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_MAX_KEY_CHARS = 200
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")

ERR_IDEMPOTENCY_MISMATCH = "Idempotency-Key was already used with a different request"
ERR_IDEMPOTENCY_KEY_TOO_LONG = f"Idempotency-Key must be 1 to {IDEMPOTENCY_MAX_KEY_CHARS} printable ASCII characters"
REPLAYED_HEADER = "Idempotent-Replayed"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


class IdempotencyConflict(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = ERR_IDEMPOTENCY_MISMATCH
    default_code = "idempotency_mismatch"


class ApiBodyLimitMiddleware:
    """Refuse oversized API bodies with 413 before anything parses them.

    DRF's parsers read the request stream directly, bypassing Django's
    DATA_UPLOAD_MAX_MEMORY_SIZE check, so the limit is enforced here from
    Content-Length (and by the exception handler for RequestDataTooBig).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/api/"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
                return JsonResponse(
                    {"detail": body_too_large_message(), "code": "too_large"},
                    status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                )
        return self.get_response(request)


def _fingerprint(request):
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(b"\0")
    digest.update(request.path.encode())
    digest.update(b"\0")
    digest.update(request.body)
    return digest.hexdigest()


def _valid_key(key):
    return 0 < len(key) <= IDEMPOTENCY_MAX_KEY_CHARS and key.isascii() and key.isprintable()


REDACTED_SECRET = "(secret shown once; not replayed)"


class IdempotentWritesMixin:
    """Honours Idempotency-Key on writes; mix in before any DRF view class."""

    # Top-level response fields that are secrets (tokens): they are shown once
    # and never written to the idempotency store, so a replay carries a marker.
    idempotency_redacted_fields = ()

    def dispatch(self, request, *args, **kwargs):
        # Same steps as APIView.dispatch, with the idempotency record taken
        # after authentication (keys are per caller) and around the handler.
        self.args = args
        self.kwargs = kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            self.initial(request, *args, **kwargs)
            handler = getattr(self, request.method.lower(), None)
            if request.method.lower() not in self.http_method_names or handler is None:
                handler = self.http_method_not_allowed
            key = request.headers.get(IDEMPOTENCY_HEADER)
            if key is not None and request.method in WRITE_METHODS and handler != self.http_method_not_allowed:
                response = self._idempotent(request, key, handler, *args, **kwargs)
            else:
                response = handler(request, *args, **kwargs)
        except Exception as exc:
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return self.response

    def _idempotent(self, request, key, handler, *args, **kwargs):
        if not _valid_key(key):
            raise exceptions.ValidationError({IDEMPOTENCY_HEADER: [ERR_IDEMPOTENCY_KEY_TOO_LONG]})
        owner = request_owner(request)
        fingerprint = _fingerprint(request._request)
        with transaction.atomic():
            try:
                # A concurrent request with the same key blocks on the unique
                # index here until this transaction ends, then sees the row.
                with transaction.atomic():
                    record = IdempotencyKey.objects.create(owner=owner, key=key, fingerprint=fingerprint)
            except IntegrityError:
                stored = IdempotencyKey.objects.get(owner=owner, key=key)
                if stored.fingerprint != fingerprint:
                    raise IdempotencyConflict() from None
                response = Response(stored.response_body, status=stored.status_code)
                response[REPLAYED_HEADER] = "true"
                return response
            try:
                response = handler(request, *args, **kwargs)
            except Exception as exc:
                response = self.handle_exception(exc)
            if response.status_code >= 500:
                # Nothing is remembered for a server error: the client may retry.
                transaction.set_rollback(True)
                return response
            body = response.data
            if isinstance(body, dict) and self.idempotency_redacted_fields:
                body = {k: REDACTED_SECRET if k in self.idempotency_redacted_fields else v for k, v in body.items()}
            # Round-trip through JSON so the stored body equals what was sent.
            IdempotencyKey.objects.filter(pk=record.pk).update(
                status_code=response.status_code,
                response_body=json.loads(json.dumps(body, cls=_encoder())) if body is not None else None,
            )
        return response


class PlatformAPIView(IdempotentWritesMixin, APIView):
    """Base API view: explicit serializers in subclasses, idempotent writes here."""


def _encoder():
    from django.core.serializers.json import DjangoJSONEncoder

    return DjangoJSONEncoder


def query_params(serializer_class, request):
    """Validated query parameters: a bad filter is a 400 with field messages."""
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
