"""Probes for load balancers, docker compose and Kubernetes.

``/healthz`` answers while the process serves requests and touches nothing
else, so a database outage never gets healthy web processes restarted.
``/readyz`` asks every part a request needs (PostgreSQL, Redis, the Celery
broker when it is not that Redis, the channel layer) in parallel, each within
``AGENTVINE_READY_TIMEOUT_SECONDS``, and answers 503 naming the parts that did
not answer. Both are unauthenticated: they say only which part is failing and
the class of its error, never an address, a message or a count.
"""

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from django.conf import settings
from django.http import JsonResponse

HEALTH_PATHS = ("/healthz", "/readyz")
METRICS_PATH = "/metrics"
CHANNEL_LAYER_PROBE_GROUP = "agentvine.readiness"

# Probes run in these threads so one that hangs (a black-holed address) costs
# its deadline, not the request's thread. A probe that overruns keeps its
# thread until its own socket timeouts end it; the pool's size bounds how many
# such stragglers a process can accumulate.
_probe_threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="agentvine-readiness")


def _check_database(timeout):
    from django.db import connections, transaction

    connection = connections["default"]
    try:
        # In a transaction, so SET LOCAL ends with it: the web process's
        # connections go back to its pool, and the next request must not
        # inherit the probe's statement timeout.
        with transaction.atomic(using="default"), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # A server that accepts the connection but hangs in a query
                # (a lock on the catalog, a full disk) must fail the probe too.
                cursor.execute(f"SET LOCAL statement_timeout = {int(timeout * 1000)}")
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        # The probe thread's connection goes back (to the web process's pool,
        # or closed), never kept by a thread that may not run again.
        connection.close()


def _check_redis(timeout, url=None):
    import redis

    client = redis.Redis.from_url(url or settings.REDIS_URL, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()


def _check_broker(timeout):
    from kombu import Connection

    with Connection(settings.CELERY_BROKER_URL, connect_timeout=timeout) as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)


def _check_channel_layer(timeout):
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    # A publish on the layer's own connection (nobody listens to this group):
    # the path every live event takes.
    async_to_sync(layer.group_send)(CHANNEL_LAYER_PROBE_GROUP, {"type": "readiness.probe"})


def readiness_checks():
    """Name → probe for every part this deployment's requests depend on."""
    from django.db import connections

    # Named by vendor: "postgresql" in production, "sqlite" on the embedded default.
    checks = {connections["default"].vendor: _check_database, "redis": _check_redis}
    if settings.CELERY_BROKER_URL != settings.REDIS_URL:
        checks["broker"] = _check_broker
    checks["channel_layer"] = _check_channel_layer
    return checks


def readiness(timeout=None):
    """``(ready, {part: "ok" | "timeout" | error class})``, within ``timeout`` seconds."""
    timeout = timeout if timeout is not None else settings.AGENTVINE_READY_TIMEOUT_SECONDS
    futures = {name: _probe_threads.submit(check, timeout) for name, check in readiness_checks().items()}
    results = {}
    for name, future in futures.items():
        try:
            # The probes run in parallel: waiting for each in turn still ends
            # within about one deadline overall.
            future.result(timeout=timeout)
            results[name] = "ok"
        except FutureTimeout:
            results[name] = "timeout"
        except Exception as exc:
            results[name] = type(exc).__name__
    return all(value == "ok" for value in results.values()), results


def healthz(request):
    return JsonResponse({"status": "alive"})


def readyz(request):
    ready, results = readiness()
    if ready:
        return JsonResponse({"status": "ready", "checks": results})
    failing = [name for name, value in results.items() if value != "ok"]
    return JsonResponse({"status": "unavailable", "failing": failing, "checks": results}, status=503)


class HealthProbeMiddleware:
    """Answers the probes, and Prometheus' token scrapes, before any other middleware.

    Probes and scrapers reach a process by its address (a pod IP, a container
    name), which ``ALLOWED_HOSTS`` rightly refuses for everything else; these
    answers build no links and read no session, so the host does not matter
    to them. A scrape without a bearer token (a signed-in operator's) takes
    the usual way, through sessions and host validation.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method in ("GET", "HEAD"):
            if request.path in HEALTH_PATHS:
                return healthz(request) if request.path == "/healthz" else readyz(request)
            if request.path == METRICS_PATH and request.META.get("HTTP_AUTHORIZATION", "").startswith("Bearer "):
                from agentvine.metrics import metrics

                return metrics(request)
        return self.get_response(request)


# --- Celery beat ------------------------------------------------------------------
# Beat answers no pings (it has no remote control); what shows it alive is that
# it keeps sending the guardians' ticks. Each send is noted in Redis, where
# ``manage.py beat_ping`` reads how long ago the last one was.
BEAT_LAST_SENT_KEY = "agentvine:beat:last_sent"
_beat = {"running": False}


def beat_started():
    _beat["running"] = True


def beat_sent():
    """Called for every message this process publishes; notes it when the process is beat."""
    if not _beat["running"]:
        return
    import time

    from agentvine.redis_client import shared_redis

    try:
        # Expires on its own: a beat stopped for a day leaves no stale "alive".
        shared_redis().set(BEAT_LAST_SENT_KEY, repr(time.time()), ex=86400)
    except Exception:
        pass  # a Redis outage already fails the send itself; the probe will say so


def beat_last_sent_age():
    """Seconds since beat last sent a task, or ``None`` when it never did (or not for a day)."""
    import time

    from agentvine.redis_client import shared_redis

    value = shared_redis().get(BEAT_LAST_SENT_KEY)
    return None if value is None else max(time.time() - float(value), 0.0)
