"""``/metrics`` in the Prometheus text format.

Almost every number is read from PostgreSQL when Prometheus scrapes, not
counted in process memory: PostgreSQL is the truth, so every web process
answers the same, nothing is lost when a worker dies or restarts, and no
lifecycle code carries instrumentation. Counters are totals over the rows
(histograms of run duration, dispatch and answer latency, tokens, cost), so
they only grow while rows are kept; gauges are the state now.

The few events no row remembers (what a guardian found) are counted in one
Redis hash by the process that saw them (``count_guardian_findings``) and
read back at scrape time, with the number of live WebSocket clients (their
pub/sub channels on the channel layer's Redis). The web process adds its own
``process_*`` and ``python_*`` metrics.

Gauges are read from indexes on every scrape; the totals over the whole
history scan every execution and are recomputed at most every
AGENTVINE_METRICS_TOTALS_SECONDS (bench/metrics_scrape.py: ~60 ms a scrape on
a month of history, ~0.8 s when the totals are recomputed).
"""

import hmac
import logging
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.conf import settings
from django.db import connection
from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Min, Q, Sum
from django.http import HttpResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

logger = logging.getLogger(__name__)

# Seconds. Agent runs last from seconds to an hour; waits for a slot or a
# human from milliseconds (a free slot) to hours (a backlog, a night).
RUN_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
DISPATCH_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
ANSWER_LATENCY_BUCKETS = (10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600)

GUARDIAN_COUNTERS_KEY = "agentvine:metrics:guardian_findings"
OTHER_EXECUTOR = "other"

ERR_METRICS_CREDENTIALS = "metrics need the metrics token (Authorization: Bearer …) or a signed-in operator"
ERR_METRICS_FORBIDDEN = "metrics are for operators"


# Core imports no app: the models a scrape reads are looked up by label.
_MODEL_APPS = {
    "AgentSession": "workers_app",
    "ChatMessage": "chat_app",
    "ConcurrencyKeyPause": "queue_app",
    "ConcurrencyLimit": "queue_app",
    "Execution": "queue_app",
    "SpendDay": "queue_app",
    "LiveEvent": "agentvine",
    "WorkOrder": "queue_app",
    "Worker": "workers_app",
}


def _model(name):
    from django.apps import apps

    return apps.get_model(_MODEL_APPS[name], name)


def _seconds(value):
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        return value.total_seconds()
    # SQLite sums a duration as microseconds.
    return float(value) / 1_000_000


def _histogram_aggregates(start, end, buckets):
    """Aggregates of one histogram over the time from field ``start`` to field ``end``, cumulative."""
    aggregates = {
        f"le_{i}": Count("pk", filter=Q(**{f"{end}__lte": F(start) + timedelta(seconds=bound)}))
        for i, bound in enumerate(buckets)
    }
    return {
        **aggregates,
        "count": Count("pk"),
        "sum": Sum(ExpressionWrapper(F(end) - F(start), output_field=DurationField())),
    }


def _histogram_sample(row, buckets):
    pairs = [(str(float(b)), row[f"le_{i}"]) for i, b in enumerate(buckets)]
    return [*pairs, ("+Inf", row["count"])], _seconds(row["sum"])


def _executor_label(profile):
    # Task.executor is free text: only configured profiles become label values.
    profile = profile or settings.AGENTVINE_DEFAULT_EXECUTOR
    return profile if profile in settings.AGENTVINE_EXECUTORS else OTHER_EXECUTOR


class DatabaseCollector:
    """Gauges and totals computed from the database at scrape time.

    Totals over the whole history (histograms, tokens, cost, preemptions)
    cost a scan of every execution: they are recomputed at most every
    ``AGENTVINE_METRICS_TOTALS_SECONDS`` per process (a total a little old is
    still a total: rates over minutes do not notice). Gauges are read on
    every scrape, from indexes.
    """

    def __init__(self):
        self._totals = None
        self._totals_at = 0.0
        self._totals_lock = threading.Lock()

    def collect(self):
        now = timezone.now()
        yield from self._queue(now)
        yield from self._work_orders()
        yield from self._runs_active()
        yield from self._workers(now)
        yield from self._questions_waiting(now)
        yield from self._live_events()
        yield from self._limits(now)
        yield from self._history_totals()

    def _history_totals(self):
        with self._totals_lock:
            fresh_for = settings.AGENTVINE_METRICS_TOTALS_SECONDS
            if self._totals is None or time.monotonic() - self._totals_at >= fresh_for:
                self._totals = [
                    *self._preemptions(),
                    *self._runs(),
                    *self._dispatch_latency(),
                    *self._answer_latency(),
                ]
                self._totals_at = time.monotonic()
            return list(self._totals)

    def _queue(self, now):
        WorkOrder = _model("WorkOrder")
        depth = GaugeMetricFamily(
            "agentvine_queue_depth", "Work orders queued (waiting for a slot), per priority.", labels=["priority"]
        )
        oldest = GaugeMetricFamily(
            "agentvine_queue_oldest_wait_seconds",
            "Age of the oldest queued work order, per priority (0 when none waits).",
            labels=["priority"],
        )
        rows = {
            row["priority"]: row
            for row in WorkOrder.objects.filter(status="queued")
            .order_by()
            .values("priority")
            .annotate(depth=Count("pk"), oldest=Min("enqueued_at"))
        }
        for priority in ("high", "normal", "low"):
            row = rows.get(priority)
            depth.add_metric([priority], row["depth"] if row else 0)
            oldest.add_metric([priority], max((now - row["oldest"]).total_seconds(), 0.0) if row else 0.0)
        yield depth
        yield oldest

    def _limits(self, now):
        """Concurrency keys (seats taken, limit, rate-limit pause) and
        today's spend against the daily budget (queue_app.budgets)."""
        running = GaugeMetricFamily(
            "agentvine_concurrency_key_running", "Active runs of a limited concurrency key.", labels=["key"]
        )
        limit = GaugeMetricFamily("agentvine_concurrency_key_limit", "A concurrency key's limit.", labels=["key"])
        for row in _model("ConcurrencyLimit").objects.values("key", "running", "max_running"):
            running.add_metric([row["key"]], row["running"])
            limit.add_metric([row["key"]], row["max_running"])
        paused = GaugeMetricFamily(
            "agentvine_concurrency_key_paused_seconds",
            "Seconds until a key paused by a provider's rate limit may run again.",
            labels=["key"],
        )
        for key, until in (
            _model("ConcurrencyKeyPause").objects.filter(paused_until__gt=now).values_list("key", "paused_until")
        ):
            paused.add_metric([key], (until - now).total_seconds())
        today = _model("SpendDay").objects.filter(day=timezone.localdate(now)).aggregate(usd=Sum("cost_usd"))["usd"]
        spend = GaugeMetricFamily("agentvine_spend_today_usd", "What runs that started today spent, in USD.")
        spend.add_metric([], float(today or 0))
        budget = GaugeMetricFamily(
            "agentvine_daily_budget_usd", "AGENTVINE_DAILY_BUDGET_USD (absent when there is none)."
        )
        if settings.AGENTVINE_DAILY_BUDGET_USD is not None:
            budget.add_metric([], settings.AGENTVINE_DAILY_BUDGET_USD)
        yield from (running, limit, paused, spend, budget)

    def _work_orders(self):
        WorkOrder = _model("WorkOrder")
        statuses = [choice for choice, _ in WorkOrder._meta.get_field("status").choices]
        by_status = GaugeMetricFamily("agentvine_work_orders", "Work orders, per state.", labels=["status"])
        counts = dict(WorkOrder.objects.order_by().values_list("status").annotate(Count("pk")))
        for status in statuses:
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status

    def _preemptions(self):
        totals = _model("WorkOrder").objects.aggregate(preempted=Sum("preempt_count"))
        yield CounterMetricFamily(
            "agentvine_preemptions",
            "Times running work gave way to higher-priority work (it was requeued without spending a retry).",
            value=totals["preempted"] or 0,
        )

    def _runs_active(self):
        running = GaugeMetricFamily(
            "agentvine_runs_active", "Agent runs in progress, per executor profile.", labels=["executor"]
        )
        # Every configured profile, idle ones at 0: a series that vanishes
        # when its last run ends reads as "no data", not as zero.
        active = dict.fromkeys(settings.AGENTVINE_EXECUTORS, 0)
        for profile, count in (
            _model("Execution")
            .objects.filter(status="running")
            .order_by()
            .values_list("task__executor")
            .annotate(Count("pk"))
        ):
            label = _executor_label(profile)
            active[label] = active.get(label, 0) + count
        for executor in sorted(active):
            running.add_metric([executor], active[executor])
        yield running

    def _runs(self):
        duration = HistogramMetricFamily(
            "agentvine_run_duration_seconds",
            "Duration of finished agent runs (executions), per executor profile and outcome "
            "(completed, failed: retried or dead, interrupted: cancelled, preempted or requeued).",
            labels=["executor", "outcome"],
        )
        tokens = CounterMetricFamily(
            "agentvine_agent_tokens", "Tokens agents reported, per executor profile.", labels=["executor", "direction"]
        )
        cost = CounterMetricFamily("agentvine_agent_cost_usd", "Cost agents reported, in USD.", labels=["executor"])
        # One pass over every execution: the histogram counts finished ones
        # (an unfinished one's completed_at is NULL and matches no bucket).
        histogram = _histogram_aggregates("started_at", "completed_at", RUN_DURATION_BUCKETS)
        histogram["count"] = Count("pk", filter=Q(completed_at__isnull=False))
        rows = (
            _model("Execution")
            .objects.order_by()
            .values("task__executor", "status")
            .annotate(**histogram, input=Sum("input_tokens"), output=Sum("output_tokens"), usd=Sum("cost_usd"))
        )
        finished, usage = {}, {}
        for row in rows:
            executor = _executor_label(row["task__executor"])
            totals = usage.setdefault(executor, [0, 0, 0.0])
            totals[0] += row["input"] or 0
            totals[1] += row["output"] or 0
            totals[2] += float(row["usd"] or 0)
            if not row["count"]:
                continue
            merged = finished.setdefault((executor, row["status"]), {"sum": timedelta(0), "count": 0})
            for name, value in row.items():
                if name.startswith("le_") or name == "count":
                    merged[name] = merged.get(name, 0) + value
            merged["sum"] += timedelta(seconds=_seconds(row["sum"]))
        for (executor, outcome), row in sorted(finished.items()):
            buckets, total = _histogram_sample(row, RUN_DURATION_BUCKETS)
            duration.add_metric([executor, outcome], buckets, total)
        for executor, (input_tokens, output_tokens, usd) in sorted(usage.items()):
            tokens.add_metric([executor, "input"], input_tokens)
            tokens.add_metric([executor, "output"], output_tokens)
            cost.add_metric([executor], usd)
        yield duration
        yield tokens
        yield cost

    def _dispatch_latency(self):
        Execution = _model("Execution")
        # From a task's creation to the start of its first run: the wait in
        # the queue, the doorbell and the claim. Measured on rows that never
        # change afterwards (a retry or requeue moves the work order's
        # enqueued_at, which would take runs out of a total that must only grow).
        aggregates = _histogram_aggregates("task__created_at", "started_at", DISPATCH_LATENCY_BUCKETS)
        row = Execution.objects.filter(attempt=1, work_order__kind="run_task").aggregate(**aggregates)
        latency = HistogramMetricFamily(
            "agentvine_dispatch_latency_seconds",
            "Wait from a task's creation (its first work order's enqueue) to the claim that started its first run.",
        )
        buckets, total = _histogram_sample(row, DISPATCH_LATENCY_BUCKETS)
        latency.add_metric([], buckets, total)
        yield latency

    def _workers(self, now):
        Worker = _model("Worker")
        statuses = [choice for choice, _ in Worker._meta.get_field("status").choices]
        slots = GaugeMetricFamily("agentvine_workers", "Worker slots, per status.", labels=["status"])
        heartbeat = GaugeMetricFamily(
            "agentvine_worker_heartbeat_age_seconds",
            "Age of the oldest heartbeat among slots in this status (0 when there are none).",
            labels=["status"],
        )
        rows = {
            row["status"]: row
            for row in Worker.objects.order_by()
            .values("status")
            .annotate(count=Count("pk"), oldest=Min("last_heartbeat_at"))
        }
        for status in statuses:
            row = rows.get(status)
            slots.add_metric([status], row["count"] if row else 0)
            if status != "offline":
                age = (now - row["oldest"]).total_seconds() if row and row["oldest"] else 0.0
                heartbeat.add_metric([status], max(age, 0.0))
        yield slots
        yield heartbeat

        Session = _model("AgentSession")
        sessions = GaugeMetricFamily("agentvine_agent_sessions", "Agent sessions, per status.", labels=["status"])
        counts = dict(Session.objects.order_by().values_list("status").annotate(Count("pk")))
        for status, _ in Session._meta.get_field("status").choices:
            sessions.add_metric([status], counts.get(status, 0))
        yield sessions

    def _questions_waiting(self, now):
        waiting = (
            _model("ChatMessage")
            .objects.filter(kind="question", answered_at__isnull=True)
            .aggregate(count=Count("pk"), oldest=Min("created_at"))
        )
        yield GaugeMetricFamily(
            "agentvine_questions_waiting",
            "Questions agents asked that no human has answered yet.",
            value=waiting["count"],
        )
        oldest = (now - waiting["oldest"]).total_seconds() if waiting["oldest"] else 0.0
        yield GaugeMetricFamily(
            "agentvine_questions_oldest_wait_seconds", "Age of the oldest unanswered question.", value=max(oldest, 0.0)
        )

    def _answer_latency(self):
        aggregates = _histogram_aggregates("created_at", "answered_at", ANSWER_LATENCY_BUCKETS)
        row = _model("ChatMessage").objects.filter(kind="question", answered_at__isnull=False).aggregate(**aggregates)
        latency = HistogramMetricFamily(
            "agentvine_question_answer_latency_seconds", "Wait from an agent's question to its answer."
        )
        buckets, total = _histogram_sample(row, ANSWER_LATENCY_BUCKETS)
        latency.add_metric([], buckets, total)
        yield latency

    def _live_events(self):
        # Event ids come from one sequence and the log is pruned from the
        # oldest end, so the newest id counts every event ever published.
        newest = _model("LiveEvent").objects.aggregate(newest=Max("id"))["newest"]
        yield CounterMetricFamily(
            "agentvine_live_events",
            "Live events published (state changes, messages, output batches).",
            value=newest or 0,
        )


class RedisCollector:
    """What Redis knows across every process: guardian findings, live WebSocket clients."""

    def collect(self):
        from agentvine.redis_client import shared_redis

        findings = CounterMetricFamily(
            "agentvine_guardian_findings",
            "What the guardians found and acted on (stalled slots offlined, work requeued, "
            "lost doorbells re-rung, sessions terminated, runs preempted).",
            labels=["guardian", "finding"],
        )
        clients = GaugeMetricFamily(
            "agentvine_websocket_clients", "WebSocket clients connected to the live layer, across all web processes."
        )
        try:
            client = shared_redis()
            counts = client.hgetall(GUARDIAN_COUNTERS_KEY)
            # Every consumer of a socket holds one pub/sub channel of its own
            # on the layer's Redis (channels_redis' RedisPubSubChannelLayer:
            # "<prefix>specific.<id>"), dropped when the socket closes or its
            # process dies: their number is the number of sockets.
            connected = len(client.pubsub_channels(f"{_channel_layer_prefix()}specific.*"))
        except Exception:
            logger.warning("Redis did not answer a scrape", exc_info=True)
            return
        for field, value in sorted(counts.items()):
            guardian, _, finding = field.decode().partition("|")
            findings.add_metric([guardian, finding], int(value))
        yield findings
        clients.add_metric([], connected)
        yield clients


def _channel_layer_prefix():
    config = settings.CHANNEL_LAYERS.get("default", {}).get("CONFIG", {})
    return config.get("prefix", "asgi")


def count_guardian_findings(*, task_name, result):
    """Add a guardian's counts (``{"requeued": 2, …}``) to the shared counters; zeros cost nothing."""
    if not isinstance(result, dict):
        return
    guardian = task_name.rsplit(".", 1)[-1].removeprefix("guard_")
    found = {f"{guardian}|{name}": count for name, count in result.items() if isinstance(count, int) and count > 0}
    if not found:
        return
    from agentvine.redis_client import shared_redis

    try:
        with shared_redis().pipeline(transaction=False) as pipe:
            for field, count in found.items():
                pipe.hincrby(GUARDIAN_COUNTERS_KEY, field, count)
            pipe.execute()
    except Exception:
        logger.warning("could not count what %s found", task_name, exc_info=True)


registry = CollectorRegistry(auto_describe=False)
for _collector in (DatabaseCollector(), RedisCollector()):
    registry.register(_collector)
ProcessCollector(registry=registry)
PlatformCollector(registry=registry)
GCCollector(registry=registry)


def _token_matches(header):
    scheme, _, credentials = header.partition(" ")
    expected = settings.AGENTVINE_METRICS_TOKEN
    return (
        scheme.lower() == "bearer"
        and bool(expected)
        and hmac.compare_digest(credentials.strip().encode(), expected.encode())
    )


def _authorized(request):
    """``None`` when the scrape may proceed, else the refusal."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header:
        if _token_matches(header):
            return None
    elif request.user.is_authenticated:
        return None if request.user.is_staff else HttpResponse(ERR_METRICS_FORBIDDEN, status=403)
    response = HttpResponse(ERR_METRICS_CREDENTIALS, status=401, content_type="text/plain")
    response["WWW-Authenticate"] = 'Bearer realm="agentvine-metrics"'
    return response


def metrics(request):
    refusal = _authorized(request)
    if refusal is not None:
        return refusal
    # The Prometheus text format, or OpenMetrics when the scraper asks for it.
    encoder, content_type = choose_encoder(request.META.get("HTTP_ACCEPT", ""))
    return HttpResponse(encoder(registry), content_type=content_type)


# --- a Celery worker's own /metrics ---------------------------------------------


class _WorkerMetricsHandler(BaseHTTPRequestHandler):
    """``GET /metrics`` of a Celery worker: the same families as the web's,
    for the metrics token only (there is no operator session here)."""

    def do_GET(self):
        if self.path.split("?", 1)[0] != "/metrics":
            self._answer(404, b"not found", "text/plain")
        elif not _token_matches(self.headers.get("Authorization", "")):
            self._answer(401, ERR_METRICS_CREDENTIALS.encode(), "text/plain")
        else:
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            try:
                self._answer(200, encoder(registry), content_type)
            finally:
                # This thread's connection; the next scrape makes its own.
                connection.close()

    def _answer(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="agentvine-metrics"')
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        logger.debug("worker metrics: " + format, *args)


def worker_metrics_serve():
    """Serve ``/metrics`` from this Celery worker on AGENTVINE_WORKER_METRICS_PORT
    (off when 0), from a daemon thread of the worker's main process, started
    once its pool is up (``agentvine.celery``). Returns the server or None."""
    port = settings.AGENTVINE_WORKER_METRICS_PORT
    if not port:
        return None
    server = ThreadingHTTPServer((settings.AGENTVINE_WORKER_METRICS_ADDR, port), _WorkerMetricsHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="agentvine-worker-metrics", daemon=True).start()
    logger.info("worker metrics on http://%s:%s/metrics", settings.AGENTVINE_WORKER_METRICS_ADDR, port)
    return server
