"""Probes, /metrics and structured logs (agentvine/health.py, metrics.py, logging.py)."""

import asyncio
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Sum
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect as ws_connect

from agentvine import logging as agentvine_logging
from agentvine import metrics
from queue_app import lifecycle, outputs
from tests.conftest import TestDatabaseProcess as DatabaseProcess
from tests.conftest import wait_for
from tests.faults.services import PostgresCluster, RedisServer, free_port

METRICS_TOKEN = "metrics-test-token-0123456789"


def parse(text):
    """{(sample name, frozenset(labels)): value} of an exposition."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture(autouse=True)
def fresh_totals(settings):
    # Every scrape recomputes the history totals (a web process caches them).
    settings.AGENTVINE_METRICS_TOTALS_SECONDS = 0


@pytest.fixture
def metrics_token(settings):
    settings.AGENTVINE_METRICS_TOKEN = METRICS_TOKEN
    return METRICS_TOKEN


def scrape(client):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return parse(response.content.decode())


# --- /healthz and /readyz -------------------------------------------------------


def test_healthz_answers_without_the_database_and_for_any_host(client):
    # No django_db mark: a query would fail the request.
    response = client.get("/healthz", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


@pytest.mark.django_db
def test_readyz_names_every_part_when_all_answer(client):
    response = client.get("/readyz", HTTP_HOST="10.1.2.3:8000")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "ready",
        "checks": {"postgresql": "ok", "redis": "ok", "channel_layer": "ok"},
    }


@pytest.mark.django_db
def test_readyz_is_503_naming_the_part_that_does_not_answer(client, settings):
    # A port nothing listens on: Redis (and the broker and channel layer on it) refuse.
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings.REDIS_URL = dead
    settings.CELERY_BROKER_URL = dead
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failing"] == ["redis"]
    assert body["checks"]["postgresql"] == "ok"
    # The class of the error only: no address, no message.
    assert body["checks"]["redis"] == "ConnectionError"
    assert "127.0.0.1" not in response.content.decode()


@pytest.mark.django_db
def test_readyz_answers_within_its_deadline_when_a_part_hangs(client, settings):
    # A listening socket that never answers: the probe must give up on time.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        settings.REDIS_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        settings.CELERY_BROKER_URL = settings.REDIS_URL
        settings.AGENTVINE_READY_TIMEOUT_SECONDS = 0.5
        started = time.monotonic()
        response = client.get("/readyz")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["failing"] == ["redis"]
    assert response.json()["checks"]["redis"] in ("timeout", "TimeoutError")
    assert elapsed < 2.0


def _get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _daphne(tmp_path, env):
    port = free_port()
    server = DatabaseProcess(
        ["daphne", "-b", "127.0.0.1", "-p", str(port), "agentvine.asgi:application"],
        log_path=tmp_path / "daphne.log",
        extra_env=env,
    )
    server.url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _listening(port) or server.process.poll() is not None, message="daphne")
    assert server.process.poll() is None, server.output()
    return server


def _listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _ready(server):
    status, body = _get(f"{server.url}/readyz")
    return status, json.loads(body)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_daphne_readyz_follows_its_redis_going_away_and_back(tmp_path):
    own_redis = RedisServer(tmp_path / "redis")
    server = _daphne(tmp_path, {"REDIS_URL": own_redis.url, "CELERY_BROKER_URL": own_redis.url})
    try:
        assert _ready(server) == (
            200,
            {"status": "ready", "checks": dict.fromkeys(["postgresql", "redis", "channel_layer"], "ok")},
        )
        own_redis.shutdown()
        status, body = _ready(server)
        assert status == 503
        assert body["failing"] == ["redis", "channel_layer"]
        assert body["checks"]["postgresql"] == "ok"
        assert _get(f"{server.url}/healthz")[0] == 200
        own_redis.start()
        wait_for(lambda: _ready(server)[0] == 200, timeout=15, message="ready again")
    finally:
        server.stop()
        own_redis.stop()


@pytest.mark.e2e
def test_daphne_readyz_follows_its_postgresql_going_away_and_back(tmp_path):
    cluster = PostgresCluster()
    server = _daphne(tmp_path, {"DATABASE_URL": cluster.url("postgres")})
    try:
        assert _ready(server)[0] == 200
        cluster.stop()
        status, body = _ready(server)
        assert status == 503
        assert body["failing"] == ["postgresql"]
        assert body["checks"]["redis"] == "ok"
        assert body["checks"]["channel_layer"] == "ok"
        assert _get(f"{server.url}/healthz")[0] == 200
        cluster.start()
        wait_for(lambda: _ready(server)[0] == 200, timeout=20, message="ready again")
    finally:
        server.stop()
        cluster.drop()


# --- /metrics: who may scrape -----------------------------------------------------


@pytest.mark.django_db
def test_metrics_refuses_a_scrape_without_credentials(client, metrics_token):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="agentvine-metrics"'
    assert b"agentvine_" not in response.content


@pytest.mark.django_db
def test_a_token_scrape_by_address_is_served_whatever_allowed_hosts_says(client, metrics_token):
    # Prometheus in Kubernetes scrapes a pod by its IP.
    by_ip = {"HTTP_HOST": "10.1.2.3:8000"}
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}", **by_ip).status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong", **by_ip).status_code == 401
    # Without a token it is an ordinary request, host validation included.
    assert client.get("/metrics", **by_ip).status_code == 400


@pytest.mark.django_db
def test_metrics_refuses_a_wrong_token(client, metrics_token):
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token")
    assert response.status_code == 401
    assert b"agentvine_" not in response.content


@pytest.mark.django_db
def test_metrics_refuses_any_token_when_none_is_configured(client, settings):
    settings.AGENTVINE_METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


@pytest.mark.django_db
def test_metrics_refuses_a_signed_in_non_operator(client, django_user_model, metrics_token):
    client.force_login(django_user_model.objects.create_user(username="visitor", password="visitor-pass-123"))
    assert client.get("/metrics").status_code == 403


@pytest.mark.django_db
def test_metrics_serves_a_signed_in_operator(client, operator):
    client.force_login(operator)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert ("agentvine_queue_depth", frozenset({("priority", "high")})) in parse(response.content.decode())


# --- /metrics: values -----------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_report_queue_work_orders_workers_questions_usage_from_the_database(
    client, metrics_token, worker, operator
):
    from chat_app.services import operator_profile, question_answer, question_ask
    from tasks_app.services import task_create

    before = scrape(client)
    high = task_create(title="urgent", priority="high", executor="codex-replay")
    for _ in range(2):
        task_create(title="later", priority="low")
    type(high).objects.filter(pk=high.pk).update(created_at=timezone.now() - timedelta(seconds=30))
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=high.work_orders.get().id)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    outputs.execution_record_usage(
        execution=execution, input_tokens=1200, output_tokens=300, cost_usd=Decimal("0.0125")
    )
    asked = question_ask(work_order=work_order, text="Which database?")
    question_ask(work_order=work_order, text="Which branch?")
    question_answer(question=asked, answer_text="PostgreSQL", answered_by=operator_profile(user=operator))

    samples = scrape(client)
    assert value(samples, "agentvine_queue_depth", priority="low") == 2
    assert value(samples, "agentvine_queue_depth", priority="high") == 0
    assert value(samples, "agentvine_queue_oldest_wait_seconds", priority="low") >= 0
    assert value(samples, "agentvine_queue_oldest_wait_seconds", priority="normal") == 0
    assert value(samples, "agentvine_work_orders", status="queued") == 2
    assert value(samples, "agentvine_work_orders", status="waiting") == 1
    assert value(samples, "agentvine_work_orders", status="dead") == 0
    assert value(samples, "agentvine_workers", status="waiting") == 1
    assert value(samples, "agentvine_worker_heartbeat_age_seconds", status="waiting") < 5
    assert value(samples, "agentvine_runs_active", executor="codex-replay") == 1
    assert value(samples, "agentvine_agent_tokens_total", executor="codex-replay", direction="input") == 1200
    assert value(samples, "agentvine_agent_tokens_total", executor="codex-replay", direction="output") == 300
    assert value(samples, "agentvine_agent_cost_usd_total", executor="codex-replay") == pytest.approx(0.0125)
    assert value(samples, "agentvine_questions_waiting") == 1
    assert value(samples, "agentvine_question_answer_latency_seconds_count") == 1
    assert value(samples, "agentvine_question_answer_latency_seconds_bucket", le="10.0") == 1
    # The task was created 30 s before its claim: one first run, in the (10, 60] s buckets.
    assert value(samples, "agentvine_dispatch_latency_seconds_count") == 1
    assert value(samples, "agentvine_dispatch_latency_seconds_bucket", le="10.0") == 0
    assert value(samples, "agentvine_dispatch_latency_seconds_bucket", le="60.0") == 1
    assert 30 <= value(samples, "agentvine_dispatch_latency_seconds_sum") < 40
    assert value(samples, "agentvine_live_events_total") > value(before, "agentvine_live_events_total")

    lifecycle.work_order_set_waiting(work_order=work_order, worker=worker, waiting=False)
    lifecycle.work_order_complete(work_order=work_order, worker=worker, execution=execution)
    samples = scrape(client)
    assert value(samples, "agentvine_run_duration_seconds_count", executor="codex-replay", outcome="completed") == 1
    assert (
        value(samples, "agentvine_run_duration_seconds_bucket", executor="codex-replay", outcome="completed", le="1.0")
        == 1
    )
    assert value(samples, "agentvine_runs_active", executor="codex-replay") == 0
    assert value(samples, "agentvine_work_orders", status="completed") == 1


def test_metrics_report_concurrency_keys_rate_limit_pauses_and_todays_spend(
    client, metrics_token, worker, operator, settings
):
    from queue_app import rate_limits
    from tasks_app.services import task_create

    settings.AGENTVINE_CONCURRENCY_LIMITS = {"ticker": 2}
    settings.AGENTVINE_DAILY_BUDGET_USD = 50.0
    task = task_create(title="ticking", executor="ticker", created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    _, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    outputs.execution_record_usage(execution=execution, input_tokens=10, output_tokens=5, cost_usd=Decimal("1.25"))
    rate_limits.key_pause(
        key="claude-replay", resets_at=(timezone.now() + timedelta(minutes=10)).timestamp(), reason="5h"
    )

    samples = scrape(client)
    assert value(samples, "agentvine_concurrency_key_running", key="ticker") == 1
    assert value(samples, "agentvine_concurrency_key_limit", key="ticker") == 2
    assert 590 < value(samples, "agentvine_concurrency_key_paused_seconds", key="claude-replay") <= 600
    assert value(samples, "agentvine_spend_today_usd") == pytest.approx(1.25)
    assert value(samples, "agentvine_daily_budget_usd") == 50.0


# Transactional: the slot's before-task connection check (workers_app/slots.py)
# closes connections, which a test transaction would not survive.
@pytest.mark.django_db(transaction=True)
def test_guardian_findings_are_counted_across_processes(client, metrics_token, worker, redis_client):
    from workers_app.tasks import guard_stalled_workers

    redis_client.delete(metrics.GUARDIAN_COUNTERS_KEY)
    type(worker).objects.filter(pk=worker.pk).update(last_heartbeat_at=timezone.now() - timedelta(hours=1))

    # Through Celery's signals, as in the guardians' worker process.
    guard_stalled_workers.apply()
    guard_stalled_workers.apply()  # finds nothing more: counts stay

    samples = scrape(client)
    assert value(samples, "agentvine_guardian_findings_total", guardian="stalled_workers", finding="offline") == 1
    assert (
        "agentvine_guardian_findings_total",
        frozenset({("guardian", "stalled_workers"), ("finding", "requeued")}),
    ) not in samples
    assert value(samples, "agentvine_workers", status="offline") == 1


@pytest.mark.django_db
def test_the_grafana_dashboard_queries_only_metrics_that_are_served(client, metrics_token):
    dashboard = json.loads((Path(__file__).parent.parent / "docs" / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", []) if "expr" in target]
    queried = {name for expr in exprs for name in re.findall(r"agentvine_[a-z_]+", expr)}
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    # Family names: a labelled family with no rows yet has no samples.
    suffixes = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",), "gauge": ("",)}
    served = {
        family.name + suffix
        for family in text_string_to_metric_families(response.content.decode())
        for suffix in suffixes.get(family.type, ("",))
    }
    assert len(queried) >= 15
    assert queried <= served, queried - served


# --- Structured logs -------------------------------------------------------------------


def _json_logger(name):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(agentvine_logging.JsonFormatter())
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    handler.previous_level = logger.level
    logger.setLevel(logging.INFO)
    return logger, handler, stream


def _release(logger, handler):
    logger.removeHandler(handler)
    logger.setLevel(handler.previous_level)


def _lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_bound_ids_extra_fields_and_exceptions():
    logger, handler, stream = _json_logger("tests.json")
    try:
        with agentvine_logging.bound(work_order_id="wo-1", task_id="t-1"):
            logger.info("claimed %s", "it", extra={"attempt": 2})
            try:
                raise RuntimeError("boom")
            except RuntimeError:
                logger.exception("run crashed")
        logger.info("outside")
    finally:
        _release(logger, handler)
    first, second, third = _lines(stream)
    assert first["message"] == "claimed it"
    assert first["level"] == "INFO"
    assert first["logger"] == "tests.json"
    assert first["work_order_id"] == "wo-1" and first["task_id"] == "t-1"
    assert first["attempt"] == 2
    assert first["ts"].endswith("+00:00")
    assert "RuntimeError: boom" in second["exc_info"]
    assert "work_order_id" not in third


@pytest.mark.django_db
def test_request_id_is_bound_to_the_request_lines_and_returned(client, metrics_token):
    logger, handler, stream = _json_logger("django.request")
    try:
        refused = client.get("/metrics", HTTP_X_REQUEST_ID="req-abc.123")
        generated = client.get("/metrics", HTTP_X_REQUEST_ID="bad id\nwith newline")
    finally:
        _release(logger, handler)
    assert refused["X-Request-ID"] == "req-abc.123"
    assert generated["X-Request-ID"] != "bad id\nwith newline" and len(generated["X-Request-ID"]) == 32
    lines = _lines(stream)
    # Django logs each 401 after the middleware chain: still inside the request.
    assert [line["request_id"] for line in lines] == ["req-abc.123", generated["X-Request-ID"]]
    assert agentvine_logging.log_context() == {}


@pytest.mark.django_db
def test_a_flood_of_refused_requests_writes_no_log_line_but_a_server_error_does(client):
    # The levels are the settings' LOGGING, as every process of ours configures them.
    seen = []
    probe = logging.Handler()
    probe.emit = seen.append
    logging.getLogger("django.request").addHandler(probe)
    try:
        for _ in range(20):
            assert client.get("/api/v1/queue/").status_code == 401
        assert seen == []
        logging.getLogger("django.request").error("Internal Server Error: /api/v1/queue/")
        assert [record.levelname for record in seen] == ["ERROR"]
    finally:
        logging.getLogger("django.request").removeHandler(probe)


@pytest.mark.django_db
def test_json_logs_have_an_access_line_per_request_with_its_id(client, settings, operator):
    settings.AGENTVINE_LOG_FORMAT = "json"
    client.force_login(operator)
    logger, handler, stream = _json_logger("agentvine.access")
    try:
        response = client.get("/metrics", HTTP_X_REQUEST_ID="req-access-1")
        client.get("/no-such-page/")
        settings.AGENTVINE_LOG_FORMAT = "text"
        client.get("/metrics")  # text logs: daphne's access log is the one
    finally:
        _release(logger, handler)
    assert response.status_code == 200
    first, second = _lines(stream)
    assert first["message"] == "GET /metrics 200"
    assert (first["method"], first["path"], first["status"]) == ("GET", "/metrics", 200)
    assert first["request_id"] == "req-access-1" and first["duration_ms"] >= 0
    assert (second["path"], second["status"]) == ("/no-such-page/", 404)


def _record(name, msg, args=(), **attributes):
    record = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(attributes)
    return record


def test_guardian_ticks_that_found_nothing_are_debug_and_findings_stay_info():
    routine = agentvine_logging.RoutineFilter()
    tick = {"name": "workers_app.guard_lost_dispatches", "id": "x", "return_value": "{'dispatched': 0}"}
    found = {**tick, "return_value": "{'dispatched': 3}"}
    agent = {"name": "queue_app.execute_work_order", "id": "y", "return_value": "None"}
    sent = _record(
        "celery.beat", "Scheduler: Sending due task %s (%s)", ("guard-lost", "workers_app.guard_lost_dispatches")
    )
    received = _record("celery.worker.strategy", "Task %(name)s[%(id)s] received", (tick,), data=tick)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        assert not routine.filter(sent)
        assert not routine.filter(received)
        assert not routine.filter(_record("celery.app.trace", "Task %(name)s[%(id)s] succeeded", (tick,), data=tick))
        assert routine.filter(_record("celery.app.trace", "Task %(name)s[%(id)s] succeeded", (found,), data=found))
        assert routine.filter(_record("celery.app.trace", "Task %(name)s[%(id)s] succeeded", (agent,), data=agent))
        root.setLevel(logging.DEBUG)
        shown = _record("celery.app.trace", "Task %(name)s[%(id)s] succeeded", (tick,), data=tick)
        assert routine.filter(shown) and shown.levelname == "DEBUG"
    finally:
        root.setLevel(level)


# --- Real processes: a run's JSON lines and metrics; the worker probe ------------------


async def _scrape_while_watching(server, cookie, auth):
    socket_url = server.url.replace("http://", "ws://") + "/ws/activity/"
    async with ws_connect(socket_url, additional_headers={"Cookie": cookie}, origin=server.url, open_timeout=5):
        status, text = await asyncio.to_thread(_get, f"{server.url}/metrics", auth)
    assert status == 200
    return parse(text)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_real_run_moves_the_metrics_daphne_serves_and_logs_json_with_its_ids(
    celery_worker_factory, tmp_path, client, operator
):
    from queue_app.models import Execution, WorkOrder
    from tasks_app.models import TaskStatus
    from tasks_app.services import task_create

    server = _daphne(tmp_path, {"AGENTVINE_METRICS_TOKEN": METRICS_TOKEN, "AGENTVINE_METRICS_TOTALS_SECONDS": "0"})
    try:
        auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        assert _get(f"{server.url}/metrics")[0] == 401
        status, text = _get(f"{server.url}/metrics", auth)
        assert status == 200
        before = parse(text)

        worker_port = free_port()
        worker = celery_worker_factory(
            concurrency=1,
            extra_env={
                "AGENTVINE_LOG_FORMAT": "json",
                "AGENTVINE_METRICS_TOKEN": METRICS_TOKEN,
                "AGENTVINE_METRICS_TOTALS_SECONDS": "0",
                "AGENTVINE_WORKER_METRICS_PORT": str(worker_port),
            },
        )
        done = task_create(title="usage please", executor="codex-replay")
        failed = task_create(title="break", executor="fail", max_retries=1)
        wait_for(
            lambda: (
                {t.status for t in type(done).objects.filter(pk__in=[done.pk, failed.pk])}
                == {TaskStatus.COMPLETED, TaskStatus.FAILED}
            ),
            timeout=60,
            message="both finished",
        )
        # The worker serves the same families itself, for the token only.
        worker_url = f"http://127.0.0.1:{worker_port}/metrics"
        assert _get(worker_url)[0] == 401
        status, text = _get(worker_url, auth)
        assert status == 200
        from_worker = parse(text)
        # An operator watching the activity feed is one WebSocket client.
        client.force_login(operator)
        name = django_settings.SESSION_COOKIE_NAME
        cookie = f"{name}={client.cookies[name].value}"
        after = asyncio.run(_scrape_while_watching(server, cookie, auth))
        # Its pub/sub channel goes when daphne has seen the socket close.
        wait_for(
            lambda: value(parse(_get(f"{server.url}/metrics", auth)[1]), "agentvine_websocket_clients") == 0,
            timeout=10,
            message="socket gone from the count",
        )
    finally:
        server.stop()

    def moved(name, **labels):
        return value(after, name, **labels) - before.get((name, frozenset(labels.items())), 0)

    assert moved("agentvine_run_duration_seconds_count", executor="codex-replay", outcome="completed") == 1
    assert moved("agentvine_run_duration_seconds_count", executor="fail", outcome="failed") == 2
    for name, labels in [
        ("agentvine_run_duration_seconds_count", {"executor": "codex-replay", "outcome": "completed"}),
        ("agentvine_run_duration_seconds_count", {"executor": "fail", "outcome": "failed"}),
        ("agentvine_work_orders", {"status": "completed"}),
    ]:
        assert value(from_worker, name, **labels) == value(after, name, **labels), name
    assert moved("agentvine_dispatch_latency_seconds_count") == 2
    assert moved("agentvine_work_orders", status="completed") == 1
    assert moved("agentvine_work_orders", status="dead") == 1
    usage = Execution.objects.filter(task=done).aggregate(
        i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost_usd")
    )
    assert usage["i"] > 0
    assert moved("agentvine_agent_tokens_total", executor="codex-replay", direction="input") == usage["i"]
    assert moved("agentvine_agent_tokens_total", executor="codex-replay", direction="output") == usage["o"]
    assert moved("agentvine_agent_cost_usd_total", executor="codex-replay") == pytest.approx(float(usage["c"]))
    assert value(after, "agentvine_workers", status="idle") == 1
    assert value(after, "agentvine_websocket_clients") == 1

    # The worker's lines are JSON, and those of the run carry its ids.
    lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    assert lines, worker.output()
    work_order = WorkOrder.objects.get(task=done)
    succeeded = [
        line
        for line in lines
        if line["logger"] == "celery.app.trace" and line.get("work_order_id") == str(work_order.pk)
    ]
    assert succeeded, lines
    assert succeeded[0]["task_id"] == str(done.pk)
    assert succeeded[0]["celery_task"] == "queue_app.execute_work_order"
    assert succeeded[0]["worker"] == work_order.worker.name


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_worker_ping_answers_for_a_live_node_and_fails_for_an_absent_one(celery_worker_factory):
    worker = celery_worker_factory(concurrency=1)
    node = f"{worker.name}@{socket.gethostname()}"
    out = io.StringIO()
    call_command("worker_ping", node=node, timeout=5, heartbeats=True, stdout=out)
    assert out.getvalue().strip() == f"{node}: pong"

    with pytest.raises(CommandError, match="did not answer a ping within 1s"):
        call_command("worker_ping", node=f"absent@{socket.gethostname()}", timeout=1)

    # The broker (REDIS_URL, unless CELERY_BROKER_URL names another) on a port nothing listens on.
    dead_broker = {key: value for key, value in os.environ.items() if key != "CELERY_BROKER_URL"}
    dead_broker["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    result = subprocess.run(
        [sys.executable, "manage.py", "worker_ping", "--node", node, "--timeout", "2"],
        capture_output=True,
        text=True,
        env={**dead_broker, "DJANGO_SETTINGS_MODULE": "agentvine.settings_test"},
        cwd=Path(__file__).parent.parent,
        timeout=30,
    )
    assert result.returncode == 1
    assert "the broker did not answer (OperationalError)" in result.stderr

    os.killpg(worker.process.pid, signal.SIGSTOP)  # hung: neither pings nor heartbeats
    try:
        with pytest.raises(CommandError, match="did not answer"):
            call_command("worker_ping", node=node, timeout=1)
    finally:
        os.killpg(worker.process.pid, signal.SIGCONT)


# --- Traces ---------------------------------------------------------------------------


class OtlpReceiver:
    """A collector of this test's own: OTLP/HTTP (protobuf) on a free port, keeping every span."""

    def __init__(self):
        import http.server
        import threading

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        spans = self.spans = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    service = next(
                        a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"
                    )
                    for scope_spans in resource_spans.scope_spans:
                        spans.extend((service, span) for span in scope_spans.spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def env(self, service):
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.url, "OTEL_SERVICE_NAME": service, "OTEL_BSP_SCHEDULE_DELAY": "100"}

    def named(self, name):
        return [(service, span) for service, span in self.spans if span.name == name]

    def stop(self):
        self.server.shutdown()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_one_trace_follows_a_task_from_the_api_request_to_the_slot_that_runs_it(
    celery_worker_factory, tmp_path, operator
):
    from queue_app.models import WorkOrder, WorkOrderStatus
    from workers_app.services import api_token_create

    receiver = OtlpReceiver()
    server = _daphne(tmp_path, receiver.env("agentvine-web"))
    try:
        celery_worker_factory(concurrency=1, extra_env=receiver.env("agentvine-worker"))
        key = api_token_create(user=operator, name="trace")[1]
        request = urllib.request.Request(
            f"{server.url}/api/v1/tasks/",
            data=json.dumps({"title": "traced", "executor": "noop"}).encode(),
            headers={"Authorization": f"Token {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201
            task_id = json.loads(response.read())["id"]
        work_order = wait_for(
            lambda: WorkOrder.objects.filter(task_id=task_id, status=WorkOrderStatus.COMPLETED).first(),
            message="completed",
        )
        run_name = "run queue_app.execute_work_order"
        wait_for(lambda: receiver.named(run_name), timeout=20, message="the run's span")
    finally:
        server.stop()
        receiver.stop()

    ((web, request_span),) = receiver.named("POST api/v1/tasks/")
    ((_, dispatch),) = receiver.named("dispatch queue_app.execute_work_order")
    ((worker, run),) = receiver.named(run_name)
    assert (web, worker) == ("agentvine-web", "agentvine-worker")
    # One trace, each span the child of the one before, in time order.
    assert request_span.trace_id == dispatch.trace_id == run.trace_id
    assert dispatch.parent_span_id == request_span.span_id
    assert run.parent_span_id == dispatch.span_id
    assert request_span.start_time_unix_nano <= dispatch.start_time_unix_nano <= run.start_time_unix_nano
    attributes = {a.key: a.value.string_value for a in run.attributes}
    assert attributes["agentvine.work_order_id"] == str(work_order.pk)
    assert attributes["celery.state"] == "SUCCESS"
    # Inside the run: the claim, the agent's run and the completion, one after the other.
    steps = [receiver.named(name) for name in ("claim", "agent noop", "complete")]
    assert all(len(found) == 1 for found in steps), [s.name for _, s in receiver.spans]
    claim, agent, complete = (found[0][1] for found in steps)
    assert {step.trace_id for step in (claim, agent, complete)} == {run.trace_id}
    assert {step.parent_span_id for step in (claim, agent, complete)} == {run.span_id}
    assert run.start_time_unix_nano <= claim.start_time_unix_nano <= claim.end_time_unix_nano
    assert claim.end_time_unix_nano <= agent.start_time_unix_nano <= agent.end_time_unix_nano
    assert agent.end_time_unix_nano <= complete.start_time_unix_nano <= complete.end_time_unix_nano
    assert complete.end_time_unix_nano <= run.end_time_unix_nano
    agent_attributes = {a.key: a.value.string_value for a in agent.attributes}
    assert agent_attributes["agentvine.execution_status"] == "completed"


def test_tracing_is_off_and_its_sdk_not_loaded_without_an_otlp_endpoint():
    # (redis-py imports OpenTelemetry's metrics API on its own when installed;
    # the tracing SDK and the exporter are ours to load, and only when on.)
    script = (
        "import sys, django; django.setup(); from django.test import Client; from agentvine import tracing;"
        "assert Client().get('/no-such-page/', HTTP_HOST='127.0.0.1').status_code == 404;"
        "assert tracing.tracer() is None;"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace', 'opentelemetry.exporter'))];"
        "assert not loaded, loaded; print('off')"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")} | {
        "DJANGO_SETTINGS_MODULE": "agentvine.settings_test"
    }
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent
    )
    assert result.stdout.strip() == "off", result.stderr[-2000:]


# --- Flower ------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_flower_sees_the_worker_and_a_completed_doorbell(celery_worker_factory, tmp_path):
    import base64

    from queue_app.models import WorkOrder, WorkOrderStatus
    from tasks_app.services import task_create

    port = free_port()
    flower = DatabaseProcess(
        [
            "celery",
            "-A",
            "agentvine",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
            "--basic-auth=ops:flower-pass",
        ],
        log_path=tmp_path / "flower.log",
    )
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Basic " + base64.b64encode(b"ops:flower-pass").decode()}
    try:
        wait_for(lambda: _listening(port) or flower.process.poll() is not None, message="flower")
        assert flower.process.poll() is None, flower.output()
        assert _get(f"{url}/api/workers")[0] == 401
        # Flower learns of a task from the worker's events: it listens before the work starts.
        worker = celery_worker_factory(concurrency=1)
        task = task_create(title="seen by flower", executor="noop")
        work_order = wait_for(
            lambda: WorkOrder.objects.filter(task=task, status=WorkOrderStatus.COMPLETED).first(), message="completed"
        )

        def seen_task():
            status, body = _get(f"{url}/api/tasks?taskname=queue_app.execute_work_order&state=SUCCESS", auth)
            return status == 200 and [t for t in json.loads(body).values() if str(work_order.pk) in t["args"]]

        (seen,) = wait_for(seen_task, timeout=20, message="the task in flower")
        status, body = _get(f"{url}/api/workers?refresh=1", auth)
    finally:
        flower.stop()
    assert seen["state"] == "SUCCESS" and seen["worker"].startswith(f"{worker.name}@")
    assert status == 200
    assert any(name.startswith(f"{worker.name}@") for name in json.loads(body)), body


# --- Beat's liveness -----------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_beat_ping_follows_beat_sending_and_stopping(clean_broker, tmp_path):
    from agentvine.health import BEAT_LAST_SENT_KEY
    from tests.workers_app.conftest import guardian_schedule_install

    clean_broker.delete(BEAT_LAST_SENT_KEY)
    with pytest.raises(CommandError, match="beat has sent nothing"):
        call_command("beat_ping")

    guardian_schedule_install(every_seconds=1)
    beat = DatabaseProcess(
        [
            "celery",
            "-A",
            "agentvine",
            "beat",
            "-l",
            "info",
            "--schedule",
            str(tmp_path / "schedule"),
            "--max-interval",
            "1",
        ],
        log_path=tmp_path / "beat.log",
    )
    try:
        out = io.StringIO()

        def alive():
            try:
                call_command("beat_ping", max_age=5, stdout=out)
            except CommandError:
                return False
            return True

        wait_for(alive, timeout=30, message="beat sending")
        assert out.getvalue().startswith("beat: last send ")
    finally:
        beat.stop()
    time.sleep(2.5)
    with pytest.raises(CommandError, match=r"beat sent nothing for \d+s \(more than 2s\)"):
        call_command("beat_ping", max_age=2)
