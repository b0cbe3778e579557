"""Authentication of a running agent by its per-work-order token.

The agent sends ``Authorization: Agent <token>``. Only the token's hash is
stored, and it works only while its work order is active, so a token that
leaks from a finished run is worthless.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from queue_app.credentials import agent_token_resolve

SCHEME = "Agent"
ERR_BAD_AGENT_TOKEN = "invalid or expired agent token"


class AgentPrincipal:
    """``request.user`` for an agent: which work order (and attempt) it runs."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, token_row):
        self.token = token_row
        self.work_order = token_row.work_order
        self.execution = token_row.execution
        # Throttling and idempotency keys identify callers by ``user.pk``.
        self.pk = f"agent:{token_row.work_order_id}"

    def __str__(self):
        return f"agent of work order {self.work_order.pk}"


def agent_from_header(header):
    """The AgentPrincipal for an ``Authorization`` header value, or None."""
    scheme, _, token = (header or "").partition(" ")
    if scheme != SCHEME or not token.strip():
        return None
    row = agent_token_resolve(token=token.strip())
    return AgentPrincipal(row) if row else None


class AgentTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = request.headers.get("Authorization", "")
        if not header.startswith(f"{SCHEME} "):
            return None
        principal = agent_from_header(header)
        if principal is None:
            raise exceptions.AuthenticationFailed(ERR_BAD_AGENT_TOKEN)
        return principal, principal.token

    def authenticate_header(self, request):
        return SCHEME


class IsAgent(permissions.BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.user, AgentPrincipal)


class AgentTokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "chat_app.authentication.AgentTokenAuthentication"
    name = "agentToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization", "description": "Agent <token>"}
