"""Access rules and small helpers shared by the operator pages."""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied


def operator_required(view):
    """Every page needs a signed-in operator (a staff user)."""

    @login_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_staff:
            raise PermissionDenied("operators only")
        return view(request, *args, **kwargs)

    return wrapped


def is_live_refresh(request):
    """The page script re-fetches a page to refresh its live regions."""
    return request.headers.get("X-Live-Refresh") == "1"
