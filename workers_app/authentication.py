"""Who is calling the REST API: an operator or a worker.

Operators authenticate with their browser session or a personal API token;
workers with the token they got when they registered. Both token kinds travel
as ``Authorization: Token <key>`` (or ``Bearer <key>``) and are looked up by
their sha256, so a leaked database does not leak usable keys.
"""

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from agentvine import db
from workers_app.models import ApiToken, WorkerToken
from workers_app.services import API_TOKEN_PREFIX, WORKER_TOKEN_PREFIX, token_hash

ERR_BAD_TOKEN = "invalid or revoked token"
ERR_BAD_HEADER = "malformed Authorization header: use 'Token <key>' or 'Bearer <key>'"
ERR_OPERATORS_ONLY = "this endpoint is for operators; workers cannot use it"
ERR_WORKERS_ONLY = "this endpoint is for workers (authenticate with a worker token)"

AUTH_KEYWORDS = ("token", "bearer")
# Operators' last_used_at is informative only: write it at most this often.
LAST_USED_RESOLUTION_SECONDS = 60


class WorkerPrincipal:
    """``request.user`` for a request made with a worker token.

    It is authenticated but is not a Django user: it has no staff or admin
    rights, so operator-only permission checks refuse it.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, worker):
        self.worker = worker
        self.pk = None

    @property
    def username(self):
        return f"worker:{self.worker.name}"

    def __str__(self):
        return self.username


class TokenAuthentication(authentication.BaseAuthentication):
    """Operator API tokens and worker tokens in the Authorization header."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower().decode(errors="replace") not in AUTH_KEYWORDS:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(ERR_BAD_HEADER)
        try:
            key = header[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed(ERR_BAD_HEADER) from exc
        digest = token_hash(key)
        if key.startswith(WORKER_TOKEN_PREFIX):
            token = _live_token(WorkerToken, "worker", digest)
            if token is None:
                raise exceptions.AuthenticationFailed(ERR_BAD_TOKEN)
            return WorkerPrincipal(token.worker), token
        if key.startswith(API_TOKEN_PREFIX):
            token = _live_token(ApiToken, "user", digest)
            if token is None or not token.user.is_active:
                raise exceptions.AuthenticationFailed(ERR_BAD_TOKEN)
            now = timezone.now()
            if token.last_used_at is None or (now - token.last_used_at).total_seconds() > LAST_USED_RESOLUTION_SECONDS:
                ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            return token.user, token
        raise exceptions.AuthenticationFailed(ERR_BAD_TOKEN)

    def authenticate_header(self, request):
        # Having a challenge makes DRF answer unauthenticated requests with
        # 401 instead of 403.
        return 'Token realm="api"'


def _live_token(model, owner, digest):
    """The unrevoked ``model`` token with hash ``digest`` and its ``owner``
    (worker or user) loaded, or None: one hand-built read on every API call."""
    tokens, connection = db.table(model)
    owners, _ = db.table(model._meta.get_field(owner).related_model)
    where, params = tokens.where({"key_hash": digest, "revoked_at__isnull": True}, connection, alias="t")
    sql = (
        f"SELECT {tokens.select_list('t')}, {owners.select_list('o')} FROM {tokens.name} t"
        f" JOIN {owners.name} o ON o.{owners.columns['pk']} = t.{tokens.columns[owner + '_id']} WHERE {where}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    width = len(tokens.attnames)
    token = tokens.from_row(row[:width], connection)
    setattr(token, owner, owners.from_row(row[width:], connection))
    return token


def request_worker(request):
    """The Worker behind a worker-token request, else None."""
    user = getattr(request, "user", None)
    return user.worker if isinstance(user, WorkerPrincipal) else None


def request_owner(request):
    """A stable identity string for idempotency keys and throttling."""
    worker = request_worker(request)
    if worker is not None:
        return f"worker:{worker.pk}"
    if request.user and request.user.is_authenticated:
        return f"user:{request.user.pk}"
    return None


class IsOperator(permissions.BasePermission):
    """A signed-in staff user (session or personal API token), never a worker."""

    message = ERR_OPERATORS_ONLY

    def has_permission(self, request, view):
        user = request.user
        return bool(
            user
            and user.is_authenticated
            and not isinstance(user, WorkerPrincipal)
            and user.is_active
            and user.is_staff
        )


class IsWorker(permissions.BasePermission):
    message = ERR_WORKERS_ONLY

    def has_permission(self, request, view):
        return request_worker(request) is not None


class IsOperatorOrWorker(permissions.BasePermission):
    message = ERR_OPERATORS_ONLY

    def has_permission(self, request, view):
        return IsOperator().has_permission(request, view) or IsWorker().has_permission(request, view)


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes the token header in the OpenAPI schema."""

    target_class = "workers_app.authentication.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <key>` or `Bearer <key>`: an operator API token (avo_…) or a worker token (avw_…).",
        }
