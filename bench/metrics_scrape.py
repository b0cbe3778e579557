"""Server time of one /metrics scrape on a month of history.

Seeds (once; reused on later runs) bench/pages.py's database (100,000 tasks,
300,000 work orders, 1,000,000 messages, 1,000 workers) plus one execution per
started work order, with durations, tokens and cost, and 20,000 questions (a
few hundred unanswered); then times the scrape through Django's test client
(view + every query + exposition), in-process: with the history totals cached
(most scrapes) and recomputed (one per AGENTVINE_METRICS_TOTALS_SECONDS).

    .venv/bin/python bench/metrics_scrape.py [--requests 20] [--reseed]
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUESTIONS = 20_000


def _model(name):
    # Execution moves from tasks_app to queue_app with the engine's split.
    from agentvine.metrics import _model

    return _model(name)


def seed_runs():
    from django.db import connection

    from chat_app.models import ChatMessage
    from queue_app.models import WorkOrder
    from tasks_app.models import Task

    Execution = _model("Execution")

    execution, work_order, task, message = (m._meta.db_table for m in (Execution, WorkOrder, Task, ChatMessage))
    with connection.cursor() as cur:
        cur.execute(f"TRUNCATE {execution} CASCADE")
        cur.execute(
            f"""INSERT INTO {execution} (id, task_id, work_order_id, attempt, status, started_at, completed_at,
                   output_tail, output_chars, output_chunks, error, input_tokens, output_tokens, cost_usd)
            SELECT gen_random_uuid(), wo.task_id, wo.id, 1,
                   CASE wo.status WHEN 'completed' THEN 'completed' WHEN 'running' THEN 'running'
                        WHEN 'waiting' THEN 'running' WHEN 'cancelled' THEN 'interrupted' ELSE 'failed' END,
                   wo.enqueued_at + interval '2 seconds',
                   CASE WHEN wo.status IN ('running', 'waiting') THEN NULL
                        ELSE wo.enqueued_at + (2 + (hashtext(wo.id::text) & 4095)) * interval '1 second' END,
                   '', 0, 0, '', hashtext(wo.id::text) & 65535, hashtext(wo.id::text) & 8191, 0.0125
            FROM {work_order} wo WHERE wo.status NOT IN ('queued', 'claimed')"""
        )
        cur.execute(f"UPDATE {task} SET executor = (ARRAY['', 'claude', 'codex'])[1 + (hashtext(id::text) & 1)]")
        cur.execute(
            f"""UPDATE {message} SET kind = 'question',
                   answered_at = CASE WHEN n % 50 = 0 THEN NULL ELSE created_at + (n % 3600) * interval '1 second' END
            FROM (SELECT id AS mid, row_number() OVER () AS n FROM {message} LIMIT {QUESTIONS}) picked
            WHERE id = picked.mid"""
        )
        cur.execute("VACUUM ANALYZE")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--reseed", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/agentvine_bench_pages")
    from bench.harness import DATABASE_URL, REDIS_URL

    os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"] or DATABASE_URL
    os.environ["REDIS_URL"] = REDIS_URL
    os.environ["AGENTVINE_METRICS_TOKEN"] = "bench-metrics-token"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentvine.settings_test")
    import psycopg

    admin_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    name = os.environ["DATABASE_URL"].rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    from bench import pages
    from tasks_app.models import Task

    Execution = _model("Execution")

    call_command("migrate", verbosity=0)
    if args.reseed or Task.objects.count() != pages.TASKS:
        started = time.perf_counter()
        pages.seed()
        print(f"seeded pages' data in {time.perf_counter() - started:.0f} s")
    if args.reseed or not Execution.objects.exists():
        started = time.perf_counter()
        seed_runs()
        print(f"seeded runs and questions in {time.perf_counter() - started:.0f} s")

    from django.conf import settings

    client = Client()
    headers = {"HTTP_AUTHORIZATION": "Bearer bench-metrics-token", "HTTP_HOST": "127.0.0.1"}
    print(f"{Execution.objects.count():,} executions")
    # A scrape within AGENTVINE_METRICS_TOTALS_SECONDS of the last one reads
    # only the gauges; one after it recomputes every total too.
    for label, totals_seconds in (("gauges, totals cached", 3600.0), ("gauges and every total", 0.0)):
        settings.AGENTVINE_METRICS_TOTALS_SECONDS = totals_seconds
        response = client.get("/metrics", **headers)  # warm caches and connections
        assert response.status_code == 200, response.status_code
        samples = []
        for _ in range(args.requests):
            started = time.perf_counter()
            response = client.get("/metrics", **headers)
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        samples.sort()
        print(
            f"{label}: {len(response.content):,} bytes, scrape median {statistics.median(samples):.0f} ms, "
            f"p95 {samples[max(0, int(len(samples) * 0.95) - 1)]:.0f} ms, max {samples[-1]:.0f} ms"
        )


if __name__ == "__main__":
    main()
