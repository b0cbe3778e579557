"""OpenTelemetry traces of a request's way to the worker that runs it; off unless configured.

On when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)
is set: spans go over OTLP/HTTP to that collector, configured by the standard
``OTEL_*`` variables (``OTEL_SERVICE_NAME``, ``OTEL_BSP_SCHEDULE_DELAY``, …).
One trace follows a work order from the request that created it:

- ``<METHOD> <route>`` (server) around each web request (``TraceMiddleware``;
  a ``traceparent`` header from a proxy or client continues its trace),
- ``dispatch <task>`` (producer) when a doorbell is sent, after commit, inside
  the request that committed; its context travels in the message's headers
  (W3C ``traceparent``), next to the work order id,
- ``run <task>`` (consumer) around the doorbell in the worker slot, a child of
  its dispatch, with children ``claim``, ``agent <profile>`` and ``complete``
  dated from the attempt's row after the run (``_run_steps``); spans opened
  with :func:`span` meanwhile nest under it too.

Off, nothing of OpenTelemetry is imported and every hook is one check.
"""

import contextlib
import os
import threading

_state = {"pid": None, "tracer": None}
_lock = threading.Lock()
_open = {}  # Celery task id → (span, context token), between prerun and postrun
# Publishing is synchronous: before_task_publish and after_task_publish of one
# message come in one thread, one after the other.
_publishing = threading.local()
UNTRACED_TASK_PREFIXES = ("workers_app.guard_", "chat_app.prune_live_events")
WORK_ORDER_TASKS = ("queue_app.execute_work_order",)


def _configured():
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def tracer():
    """This process's tracer, or ``None`` when tracing is off."""
    if _state["pid"] != os.getpid():
        with _lock:
            # Per process: a prefork child starts its own exporter thread
            # rather than inherit a parent's that fork did not copy.
            if _state["pid"] != os.getpid():
                _state["tracer"] = _make_tracer() if _configured() else None
                _state["pid"] = os.getpid()
    return _state["tracer"]


def _make_tracer():
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "agentvine")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider.get_tracer("agentvine")


@contextlib.contextmanager
def span(name, **attributes):
    """A child span of whatever is current (a request, a doorbell's run); nothing when off."""
    current = tracer()
    if current is None:
        yield None
        return
    with current.start_as_current_span(name, attributes=_clean(attributes)) as opened:
        yield opened


def _clean(attributes):
    return {key: str(value) for key, value in attributes.items() if value is not None}


class TraceMiddleware:
    """One server span per request, continuing a ``traceparent`` the request brings."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        current = tracer()
        if current is None:
            return self.get_response(request)
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind

        with current.start_as_current_span(
            f"{request.method} {request.path}",
            context=extract(request.headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "url.path": request.path},
        ) as opened:
            response = self.get_response(request)
            match = getattr(request, "resolver_match", None)
            if match is not None and match.route:
                # The route, not the path: ids in paths would make every span name unique.
                opened.update_name(f"{request.method} {match.route}")
                opened.set_attribute("http.route", match.route)
            opened.set_attribute("http.response.status_code", response.status_code)
            return response


# --- Celery (connected in agentvine/celery.py) ---------------------------------


def _work_order_id(task_name, args, kwargs):
    """The work order a doorbell rings for; ``None`` for any other task."""
    if task_name not in WORK_ORDER_TASKS:
        return None
    if isinstance(kwargs, dict) and kwargs.get("work_order_id"):
        return kwargs["work_order_id"]
    return args[0] if args else None


def _traced(task_name):
    # The guardians' ticks (every few seconds, from beat) would bury the
    # traces of work under thousands of one-span traces.
    return bool(task_name) and not task_name.startswith(UNTRACED_TASK_PREFIXES)


def doorbell_publishing(*, task_name, headers, body):
    """Before a task message is sent: open its dispatch span and put its context in the headers."""
    current = tracer()
    if current is None or headers is None or not _traced(task_name):
        return
    from opentelemetry.propagate import inject
    from opentelemetry.trace import SpanKind, set_span_in_context

    args, kwargs = (body[0], body[1]) if isinstance(body, (list, tuple)) and len(body) >= 2 else ((), {})
    opened = current.start_span(
        f"dispatch {task_name}",
        kind=SpanKind.PRODUCER,
        attributes=_clean(
            {"celery.task_name": task_name, "agentvine.work_order_id": _work_order_id(task_name, args, kwargs)}
        ),
    )
    # Celery hands every extra header of the message to the task as an
    # attribute of its request, where doorbell_received reads it back.
    inject(headers, context=set_span_in_context(opened))
    # A send that raised never reaches after_task_publish: its span ends when
    # this thread publishes next, instead of being kept forever.
    stale = getattr(_publishing, "span", None)
    if stale is not None:
        stale.set_attribute("agentvine.publish_failed", True)
        stale.end()
    _publishing.span = opened


def doorbell_published(*, headers):
    opened = getattr(_publishing, "span", None)
    if opened is not None:
        _publishing.span = None
        opened.end()


class _RequestGetter:
    # Reads W3C headers from a Celery task request (they are its attributes).
    def get(self, carrier, key):
        value = getattr(carrier, key, None)
        return [value] if isinstance(value, str) else None

    def keys(self, carrier):
        return []


def doorbell_received(*, task_id, task, args, kwargs):
    """A slot starts a task: open its run span as a child of the dispatch that rang it."""
    current = tracer()
    if current is None or task is None or not _traced(task.name):
        return
    from opentelemetry import context
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind, set_span_in_context

    parent = extract(task.request, getter=_RequestGetter())
    opened = current.start_span(
        f"run {task.name}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=_clean(
            {
                "celery.task_name": task.name,
                "celery.task_id": task_id,
                "agentvine.work_order_id": _work_order_id(task.name, args, kwargs),
            }
        ),
    )
    _open[task_id] = (opened, context.attach(set_span_in_context(opened)))


def doorbell_done(*, task_id, task, args, kwargs, state):
    entry = _open.pop(task_id, None)
    if entry is None:
        return
    from opentelemetry import context

    opened, token = entry
    if state:
        opened.set_attribute("celery.state", state)
    work_order_id = _work_order_id(getattr(task, "name", None), args, kwargs)
    if work_order_id:
        _run_steps(opened, work_order_id)
    opened.end()
    try:
        context.detach(token)
    except Exception:
        pass  # detached from another context; the span is ended either way


def _run_steps(run, work_order_id):
    """Children of a doorbell's run span for the steps the attempt's row dates:
    ``claim`` (doorbell → attempt started), ``agent <profile>`` (started →
    finished) and ``complete`` (finished → the doorbell's end).

    Read from the attempt's row after the run (one query, only when tracing
    is on) rather than recorded by the engine as it goes: the times are the
    ones the engine wrote, and the lifecycle code carries no tracing.
    """
    import time

    from django.apps import apps
    from django.conf import settings
    from django.db import DatabaseError
    from opentelemetry.trace import set_span_in_context

    started_ns = getattr(run, "start_time", None)
    if started_ns is None:
        return
    execution_model = apps.get_model("queue_app", "Execution")
    try:
        # This doorbell's attempt: opened after the doorbell started (a
        # duplicate doorbell that claimed nothing has none).
        attempt = (
            execution_model.objects.filter(work_order_id=work_order_id, started_at__gte=_datetime(started_ns - 10**9))
            .select_related("task")
            .order_by("-attempt")
            .first()
        )
    except (DatabaseError, ValueError, AttributeError):
        return
    if attempt is None:
        return
    parent = set_span_in_context(run)
    current = tracer()
    began = max(_nanoseconds(attempt.started_at), started_ns)
    ended = _nanoseconds(attempt.completed_at) if attempt.completed_at else time.time_ns()
    steps = [
        ("claim", started_ns, began, {}),
        (
            f"agent {attempt.task.executor or settings.AGENTVINE_DEFAULT_EXECUTOR}",
            began,
            ended,
            {
                "agentvine.execution_id": attempt.pk,
                "agentvine.attempt": attempt.attempt,
                "agentvine.execution_status": attempt.status,
                "agentvine.exit_code": attempt.exit_code,
            },
        ),
    ]
    if attempt.completed_at:
        steps.append(("complete", ended, max(time.time_ns(), ended), {}))
    for name, start, end, attributes in steps:
        step = current.start_span(name, context=parent, start_time=start, attributes=_clean(attributes))
        step.end(end_time=max(end, start))


def _nanoseconds(moment):
    return int(moment.timestamp() * 1_000_000_000)


def _datetime(nanoseconds):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(nanoseconds / 1_000_000_000, UTC)
