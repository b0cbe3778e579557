"""Server time of the operator pages and admin changelists on a big database.

Seeds (once; reused on later runs) 100,000 tasks, 300,000 work orders (a
month of history: almost all finished, ~2,000 queued, a few hundred active),
1,000,000 messages, 1,000 workers and a task of 50 attempts (the attempts
browser) with set-based SQL, then times each page
through Django's test client (view + template + every query), in-process.

    .venv/bin/python bench/pages.py [--requests 20] [--reseed]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TASKS, WORK_ORDERS_PER_TASK, MESSAGES, WORKERS = 100_000, 3, 1_000_000, 1_000


def seed():
    from django.db import connection

    from chat_app.models import ChatMessage, Conversation, SenderProfile
    from queue_app.models import WorkOrder
    from tasks_app.models import Task, TaskSearchText
    from workers_app.models import Worker

    t = {
        m: m._meta.db_table for m in (Task, TaskSearchText, WorkOrder, Worker, ChatMessage, Conversation, SenderProfile)
    }
    with connection.cursor() as cur:
        for table in (ChatMessage, Conversation, SenderProfile, WorkOrder, Task, Worker):
            cur.execute(f"TRUNCATE {t[table]} CASCADE")
        cur.execute(
            f"""INSERT INTO {t[Worker]} (id, name, hostname, status, last_heartbeat_at, created_at, updated_at)
            SELECT gen_random_uuid(), 'bench@host' || g || ':0', 'host' || (g % 50),
                   (ARRAY['idle','busy','waiting','offline'])[1 + g % 4], now() - (g % 60) * interval '1 second',
                   now(), now()
            FROM generate_series(1, {WORKERS}) g"""
        )
        cur.execute(
            f"""INSERT INTO {t[Task]} (id, title, description, task_type, status, priority, repository_url,
                   branch_name, executor, created_at, updated_at)
            SELECT gen_random_uuid(), 'Bench task ' || g, 'Seeded description number ' || g,
                   (ARRAY['feature','bugfix','test','docs'])[1 + g % 4],
                   (ARRAY['queued','in_progress','completed','failed','cancelled'])[1 + g % 5],
                   (ARRAY['high','normal','low'])[1 + g % 3], 'file:///srv/repo' || (g % 100), 'branch-' || g, '',
                   now() - g * interval '10 seconds', now()
            FROM generate_series(1, {TASKS}) g"""
        )
        cur.execute(
            f"""INSERT INTO {t[TaskSearchText]} (task_id, title, description, repository_url)
            SELECT id, title, description, repository_url FROM {t[Task]}"""
        )
        cur.execute(
            f"""INSERT INTO {t[WorkOrder]} (id, task_id, kind, status, priority, priority_rank, enqueued_at,
                   retry_count, max_retries, preempt_count, lost_count, last_error, updated_at, completed_at)
            SELECT gen_random_uuid(), task.id, 'run_task',
                   -- A long-lived fleet: almost everything finished, a backlog of
                   -- about 2,000 queued and a few hundred running or waiting.
                   CASE WHEN (n * 3 + k) % 1000 < 7 THEN 'queued'
                        WHEN (n * 3 + k) % 1000 < 9 THEN (ARRAY['running','waiting','claimed'])[1 + n % 3]
                        ELSE (ARRAY['completed','completed','completed','cancelled','dead','failed'])[1 + (n + k) % 6]
                   END,
                   task.priority, CASE task.priority WHEN 'high' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END,
                   task.created_at + k * interval '1 second', 0, 3, 0, 0, '', now() - (n * 26) * interval '1 second',
                   now() - (n * 26) * interval '1 second'
            FROM (SELECT id, priority, created_at, row_number() OVER () AS n FROM {t[Task]}) task,
                 generate_series(1, {WORK_ORDERS_PER_TASK}) k"""
        )
        cur.execute(
            f"""INSERT INTO {t[SenderProfile]} (key, kind, display_name, discord_username, discord_user_id,
                   inbox_next_position, created_at, updated_at)
            SELECT 'discord:' || g, 'discord', 'discord user ' || g, 'discord user ' || g, g::text, 1, now(), now()
            FROM generate_series(1, 200) g"""
        )
        cur.execute(
            f"""INSERT INTO {t[Conversation]} (id, task_id, title, unread_count, last_message_at, created_at)
            SELECT id::text, id, title, 0, now(), now() FROM {t[Task]}"""
        )
        cur.execute(
            f"""INSERT INTO {t[ChatMessage]} (id, conversation_id, kind, sender_id, text, task_id, status,
                   failure_reason, created_at, answer_text)
            SELECT gen_random_uuid(), conv.id, (ARRAY['chat','chat','notice','progress'])[1 + g % 4],
                   (SELECT min(id) FROM {t[SenderProfile]}) + g % 200, 'Seeded message ' || g || ' about the work',
                   conv.task_id, (ARRAY['delivered','queued','failed'])[1 + g % 3], '',
                   now() - g * interval '1 second', ''
            FROM generate_series(1, {MESSAGES}) g
            JOIN (SELECT id, task_id, row_number() OVER () AS n FROM {t[Conversation]}) conv
              ON conv.n = 1 + g % {TASKS}"""
        )
        # As autovacuum leaves a long-lived database: visibility map set, statistics fresh.
        cur.execute("VACUUM ANALYZE")


ATTEMPTS_TASK = "Bench task with 50 attempts"


def seed_attempts():
    """A task whose run was preempted and retried, then given message turns:
    50 attempts over several work orders, each with some output (once)."""
    from datetime import timedelta

    from django.utils import timezone

    from queue_app.models import Execution, ExecutionOutputChunk, WorkOrder
    from tasks_app.models import Task
    from workers_app.models import Worker

    task = Task.objects.filter(title=ATTEMPTS_TASK).first()
    if task is not None:
        return task
    now = timezone.now()
    task = Task.objects.create(title=ATTEMPTS_TASK, description="Attempts browser benchmark", status="completed")
    worker = Worker.objects.order_by("name").first()
    orders = [WorkOrder.objects.create(task=task, status="completed", kind="run_task", completed_at=now)]
    orders += [
        WorkOrder.objects.create(task=task, status="completed", kind="deliver_message", completed_at=now)
        for _ in range(9)
    ]
    executions = []
    for n in range(50):
        order = orders[n // 5]
        executions.append(
            Execution(
                task=task,
                work_order=order,
                worker=worker,
                attempt=n % 5 + 1,
                status="completed" if n % 5 == 4 else ("interrupted" if n % 2 else "failed"),
                error="" if n % 5 == 4 else ("preempted by higher-priority work" if n % 2 else "exit code 1"),
                completed_at=now - timedelta(minutes=50 - n) + timedelta(seconds=40),
                output_tail=f"attempt {n} done\n",
                output_chars=2000,
                output_chunks=20,
                input_tokens=1000 + n,
                output_tokens=500 + n,
            )
        )
    Execution.objects.bulk_create(executions)
    Execution.objects.filter(task=task).update(started_at=now - timedelta(minutes=60))
    ExecutionOutputChunk.objects.bulk_create(
        ExecutionOutputChunk(execution=e, seq=seq, text=f"line {seq} of attempt {e.attempt}\n" * 10)
        for e in executions
        for seq in range(20)
    )
    return task


def timed(client, url, requests):
    client.get(url)  # warm caches and connections
    samples = []
    for _ in range(requests):
        start = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    samples.sort()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.95) - 1)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--reseed", action="store_true")
    args = parser.parse_args()
    import os

    os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/agentvine_bench_pages")
    from bench.harness import DATABASE_URL, REDIS_URL

    os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"] or DATABASE_URL
    os.environ["REDIS_URL"] = REDIS_URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentvine.settings_test")
    import psycopg

    admin_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    name = os.environ["DATABASE_URL"].rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    import django

    django.setup()
    from django.conf import settings
    from django.contrib import admin
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from tasks_app.models import Task

    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0)
    if args.reseed or Task.objects.count() < TASKS:
        start = time.perf_counter()
        seed()
        print(f"seeded in {time.perf_counter() - start:.0f}s")
    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    task = Task.objects.exclude(title=ATTEMPTS_TASK).order_by("-created_at").first()
    attempts_task = seed_attempts()
    pages = {
        "Overview": "/",
        "Tasks": "/tasks/",
        "Tasks filtered+searched": "/tasks/?status=failed&task_type=bugfix&q=Bench+task+99",
        "Tasks searched, no match": "/tasks/?q=no+such+words",
        "Tasks in queue order": "/tasks/?sort=queue",
        "Tasks queued, queue order": "/tasks/?status=queued&sort=queue",
        "Task detail": f"/tasks/{task.id}/",
        "Task with 50 attempts": f"/tasks/{attempts_task.id}/",
        "Task with 50 attempts, #1": f"/tasks/{attempts_task.id}/?attempt=1",
        "Workers": "/workers/",
        "Sessions": "/sessions/",
        "Messages": "/messages/",
        "Messages filtered": "/messages/?text=message+12345&status=queued",
        "Messages text, common": "/messages/?text=message",
        "Messages text, rare": "/messages/?text=message+987654+about",
        "Messages text, no match": "/messages/?text=no+such+words",
        "Messages by sender": "/messages/?sender=discord+user+7",
        "Messages of a task": f"/messages/?task={task.id}",
    }
    searches = {
        "admin Task searched": "/admin/tasks_app/task/?q=Bench+task+4242",
        "admin ChatMessage searched": "/admin/chat_app/chatmessage/?q=message+987654",
        "admin WorkOrder filtered": "/admin/queue_app/workorder/?status__exact=queued",
    }
    # Every changelist of the admin, then searches and filters on the big ones.
    for model in sorted(admin.site._registry, key=lambda m: m._meta.label):
        pages[f"admin {model.__name__} changelist"] = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
    pages.update(searches)
    print(f"{'page':32} {'p50 ms':>8} {'p95 ms':>8}")
    for label, url in pages.items():
        p50, p95 = timed(client, url, args.requests)
        flag = "" if p95 < 150 else "  over 150 ms target"
        print(f"{label:32} {p50:8.1f} {p95:8.1f}{flag}")


if __name__ == "__main__":
    main()
