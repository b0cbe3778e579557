"""Access rules and small helpers shared by the operator pages."""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied

from chat_app.selectors import latest_live_event_id


def operator_required(view):
    """Every page needs a signed-in operator (a staff user)."""

    @login_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_staff:
            raise PermissionDenied("operators only")

        # Read before the page's own queries: the page script resumes from
        # here, so an event committed while the page renders is replayed, not
        # lost (duplicates are dropped by the script).
        request.live_event_id = latest_live_event_id()
        return view(request, *args, **kwargs)

    return wrapped


def is_live_refresh(request):
    """The page script re-fetches a page to refresh its live regions."""
    return request.headers.get("X-Live-Refresh") == "1"
