import datetime

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.html import format_html

from tasks_app.repositories import repository_url_redacted

register = template.Library()


@register.filter
def get_item(mapping, key):
    return mapping.get(key) if mapping else None


@register.filter
def duration(seconds):
    """Compact human duration: 42s, 3m 05s, 2h 10m."""
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


@register.filter
def quiet_for(seconds):
    """ "quiet for 12 min": how long an agent has printed nothing."""
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"quiet for {minutes} min"
    return f"quiet for {minutes // 60} h {minutes % 60:02d} min"


@register.filter
def last_line(text):
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1][-200:] if lines else ""


@register.filter
def redacted(url):
    """A repository URL without credentials (tasks_app/repositories.py)."""
    return repository_url_redacted(url or "")


@register.filter
def when(value):
    """A moment as <time>: relative text ("3 minutes ago") that static/agentvine/clock.js
    keeps ticking, with the absolute time in the operator's time zone on hover
    (UTC until the script has run)."""
    if not value:
        return ""
    absolute = timezone.localtime(value, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return format_html('<time datetime="{}" title="{}">{}</time>', value.isoformat(), absolute, naturaltime(value))
