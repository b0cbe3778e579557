"""Log lines an operator's tools can read, carrying the ids of the work they are about.

``AGENTVINE_LOG_FORMAT=json`` makes every line of every process one JSON
object (``JsonFormatter``); the default stays plain text. Ids are bound to the
running context (a ``ContextVar``), so every line logged inside a request or a
Celery task carries them without being passed around:

- a web request gets a ``request_id`` (the client's ``X-Request-ID`` when it
  is a sane one, a new one otherwise; echoed in the response),
- a Celery task its ``celery_task_id``, ``celery_task`` and the slot
  (``worker``, named like its ``Worker`` row); a work-order doorbell also its
  ``work_order_id`` and the work order's ``task_id`` (agentvine/celery.py).

``RoutineFilter`` keeps the guardians' every-few-seconds ticks (beat sending
them, the worker receiving them, a run that found nothing) at DEBUG, so INFO
shows what happened, not that nothing did.
"""

import contextlib
import contextvars
import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime

from django.core.signals import request_finished

_context = contextvars.ContextVar("agentvine_log_context", default=None)

# A request id we echo back and write into logs: short and inert.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
GUARDIAN_TASK_PREFIX = "workers_app.guard_"

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def log_context():
    """The ids bound to the running context (a copy)."""
    return dict(_context.get() or {})


def bind(**ids):
    """Bind ``ids`` (``None`` values skipped) on top of the current ones; returns a token for ``unbind``."""
    merged = {**(_context.get() or {}), **{key: str(value) for key, value in ids.items() if value is not None}}
    return _context.set(merged)


def unbind(token):
    _context.reset(token)


@contextlib.contextmanager
def bound(**ids):
    token = bind(**ids)
    try:
        yield
    finally:
        unbind(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the bound ids and any ``extra``."""

    def format(self, record):
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "process_name": record.processName,
        }
        entry.update(_context.get() or {})
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        # default=str: an ``extra`` value JSON cannot hold (a UUID, a datetime)
        # is written as its text rather than losing the line.
        return json.dumps(entry, default=str, ensure_ascii=False)


def _found_nothing(return_value):
    # Guardians return their counts ({'offline': 0, 'requeued': 0}), as Celery's repr.
    counts = re.findall(r":\s*(-?\d+)", str(return_value))
    return bool(counts) and all(int(count) == 0 for count in counts)


def is_routine(record):
    """A guardian tick that did nothing: beat sending it, a worker receiving it, or it finding nothing."""
    if record.levelno != logging.INFO:
        return False
    if record.name == "celery.beat":
        args = record.args if isinstance(record.args, tuple) else ()
        return record.msg.startswith("Scheduler: Sending due task") and any(
            str(arg).startswith(GUARDIAN_TASK_PREFIX) for arg in args
        )
    if record.name in ("celery.worker.strategy", "celery.app.trace"):
        data = getattr(record, "data", None) or (record.args if isinstance(record.args, dict) else {})
        if not str(data.get("name", "")).startswith(GUARDIAN_TASK_PREFIX):
            return False
        if record.name == "celery.worker.strategy":
            return True
        return "return_value" in data and _found_nothing(data["return_value"])
    return False


class RoutineFilter(logging.Filter):
    """Demotes routine guardian ticks to DEBUG: shown only when the root logger is at DEBUG."""

    def filter(self, record):
        if not is_routine(record):
            return True
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


access_logger = logging.getLogger("agentvine.access")


class RequestIdMiddleware:
    """Binds a request id to the log lines of one request and returns it in ``X-Request-ID``.

    With JSON logs it also writes the request's access line (method, path,
    status, duration) as JSON, where daphne's own access log is plain text
    (``daphne --access-log /dev/null`` drops that one).
    """

    def __init__(self, get_response):
        from django.conf import settings

        self.get_response = get_response
        self.settings = settings

    def __call__(self, request):
        started = time.perf_counter()
        request_id = request.META.get("HTTP_X_REQUEST_ID", "")
        if not _REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex
        request.request_id = request_id
        # A fresh context, not merged, and left bound when the chain returns:
        # Django logs a 4xx/5xx response after the last middleware, and that
        # line belongs to the request too. request_finished unbinds it
        # (_request_finished below); under ASGI each request's context is
        # its own anyway.
        _context.set({"request_id": request_id})
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        if self.settings.AGENTVINE_LOG_FORMAT == "json":
            duration_ms = round((time.perf_counter() - started) * 1000, 1)
            access_logger.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": duration_ms,
                },
            )
        return response


def _request_finished(**kwargs):
    _context.set(None)


request_finished.connect(_request_finished, dispatch_uid="agentvine.logging.request_finished")


def configure_handlers(handlers, *, json_format):
    """Give handlers (Celery's, after it set them up) our filter and, if asked, the JSON format."""
    for handler in handlers:
        if not any(isinstance(existing, RoutineFilter) for existing in handler.filters):
            handler.addFilter(RoutineFilter())
        if json_format:
            handler.setFormatter(JsonFormatter())


# --- Celery tasks (connected in agentvine/celery.py) --------------------------
_task_tokens = {}
WORK_ORDER_TASKS = ("queue_app.execute_work_order",)


def _slot_name(hostname):
    # The slot's Worker row is named "<node name>:<pool index>" (workers_app/slots.py).
    from billiard.process import current_process

    index = getattr(current_process(), "index", None)
    return f"{hostname}:{index}" if hostname and index is not None else hostname


def _work_order_task_id(work_order_id):
    from django.apps import apps
    from django.core.exceptions import ValidationError
    from django.db import DatabaseError, connection

    try:
        meta = apps.get_model("queue_app", "WorkOrder")._meta
        quote = connection.ops.quote_name
        # One statement per run on an agent slot: built here, it costs 0.13 ms
        # of CPU against 0.43 ms through the ORM's compiler (measured on the
        # bench database); see agentvine/db.py for why that matters on a slot.
        sql = (
            f"SELECT {quote(meta.get_field('task').column)} FROM {quote(meta.db_table)} "
            f"WHERE {quote(meta.pk.column)} = %s"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [meta.pk.get_db_prep_value(work_order_id, connection)])
            row = cursor.fetchone()
        return meta.get_field("task").target_field.to_python(row[0]) if row else None
    except DatabaseError:
        # A connection PostgreSQL dropped between tasks: the slot's own check
        # reconnects; the lines of this run go without the task id.
        connection.close()
        return None
    except (ValueError, ValidationError):
        return None  # not a work order id: nothing to look up


def task_context_enter(*, task_id, task, args, kwargs):
    from django.conf import settings

    ids = {"celery_task_id": task_id, "celery_task": getattr(task, "name", None)}
    request = getattr(task, "request", None)
    ids["worker"] = _slot_name(getattr(request, "hostname", None))
    if ids["celery_task"] in WORK_ORDER_TASKS:
        work_order_id = kwargs.get("work_order_id") or (args[0] if args else None)
        ids["work_order_id"] = work_order_id
        # One lookup by key per run, and only where the lines are structured
        # (text lines do not show the ids).
        if work_order_id and settings.AGENTVINE_LOG_FORMAT == "json":
            ids["task_id"] = _work_order_task_id(work_order_id)
    # Fresh, not merged: a task whose postrun never came (its process was
    # killed mid-task is replaced, but a pool thread is not) must not lend
    # its ids to the next one.
    _task_tokens[task_id] = _context.set({key: str(value) for key, value in ids.items() if value is not None})


def task_context_leave(*, task_id):
    token = _task_tokens.pop(task_id, None)
    if token is None:
        return
    try:
        unbind(token)
    except ValueError:
        # Reset from another context (a pool that ran postrun elsewhere):
        # start the next task from nothing instead.
        _context.set(None)
