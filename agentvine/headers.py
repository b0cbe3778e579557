"""Security headers on every response, the Content-Security-Policy first.

The console's pages carry no inline script or style (scripts and styles are
static files; the throughput chart is SVG geometry), so the policy allows
only this origin: an agent's output or a task title rendered into a page can
never run as script even if escaping were missed somewhere. A view that needs
another policy (the API docs load Swagger UI from its CDN) sets its own
header, which this middleware leaves alone.
"""

from django.conf import settings

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        # The live pages' WebSocket: 'self' covers ws(s):// of this origin.
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
# Swagger UI (drf-spectacular's split view: its own script is served from here).
SWAGGER_UI_CDN = "https://cdn.jsdelivr.net"
API_DOCS_CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        f"script-src 'self' {SWAGGER_UI_CDN}",
        f"style-src 'self' {SWAGGER_UI_CDN}",
        f"img-src 'self' data: {SWAGGER_UI_CDN}",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "frame-ancestors 'none'",
    ]
)
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"


class SecurityHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = settings.AGENTVINE_CONTENT_SECURITY_POLICY or CONTENT_SECURITY_POLICY
        response.headers.setdefault("Content-Security-Policy", policy)
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        return response


def with_content_security_policy(policy):
    """Decorate a view whose responses need ``policy`` instead of the console's."""

    def decorate(view):
        def wrapped(request, *args, **kwargs):
            response = view(request, *args, **kwargs)
            response.headers["Content-Security-Policy"] = policy
            return response

        wrapped.__name__ = getattr(view, "__name__", "view")
        wrapped.csrf_exempt = getattr(view, "csrf_exempt", False)
        return wrapped

    return decorate
