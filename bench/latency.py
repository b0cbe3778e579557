"""Latency of the paths a person waits on, with idle slots (p50/p99/max of N samples each):

- start:   task created (service call) → the agent's process runs (it prints
           the time as its first act; `sh -c 'date +%s.%N'`);
- message: an operator's message (service call) → the line on a running
           claude-protocol agent's stdin (bench/latency_agent.py listen);
- answer:  an operator's answer (service call) → the agent's ask client has
           it (its API long poll; bench/latency_agent.py ask);
- event:   a published event (a system notice, service call) → a WebSocket
           client of ``ws/tasks/<id>/`` receives it.

Real daphne, real Celery worker (2 slots), the scratch database of
bench/harness.py (its own: agentvine_bench_latency) and BENCH_REDIS_URL.
Samples are taken one after the other, never overlapping.

    .venv/bin/python bench/latency.py [--samples 200] [--only start,message,answer,event]
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/agentvine_bench_latency")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import ROOT, setup_django, start_web, start_worker, stop_worker, wait_until  # noqa: E402

AGENT = str(ROOT / "bench" / "latency_agent.py")
KINDS = ("start", "message", "answer", "event")


def profiles(samples):
    return {
        "stamp": {"type": "command", "command": ["sh", "-c", "date +%s.%N"]},
        "listener": {"type": "claude", "binary": [sys.executable, AGENT, "listen"]},
        "asker": {"type": "command", "command": [sys.executable, AGENT, "ask", str(samples)]},
    }


def summary(name, samples_ms):
    samples_ms = sorted(samples_ms)
    p50 = samples_ms[len(samples_ms) // 2]
    p99 = samples_ms[min(len(samples_ms) - 1, int(len(samples_ms) * 0.99))]
    worst = samples_ms[-1]
    print(f"{name:8} n={len(samples_ms)}  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  max {worst:7.1f} ms", flush=True)


def stamps_of(path):
    found = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, at = line.rpartition(" ")
            found[key] = float(at)
    return found


def measure_start(samples, operator):
    from queue_app.models import Execution, ExecutionStatus
    from tasks_app.services import task_create

    out = []
    for n in range(samples):
        created = time.time()
        task = task_create(title=f"start {n}", executor="stamp", created_by=operator)
        execution = wait_until(
            lambda task=task: Execution.objects.filter(task=task, status=ExecutionStatus.COMPLETED).first(),
            30,
            "the stamp",
            interval=0.005,
        )
        out.append((float(execution.output_tail.split()[0]) - created) * 1000)
    return out


def measure_message(samples, operator, scratch):
    from chat_app import services
    from tasks_app.services import task_create

    path = scratch / "message.stamps"
    task = task_create(title="listen", description=str(path), executor="listener", created_by=operator)
    wait_until(lambda: "ready" in stamps_of(path), 30, "the listener")
    conversation_id = services.conversation_for_task(task=task).id
    out = []
    for n in range(samples):
        sent = time.time()
        services.operator_message_send(user=operator, conversation_id=conversation_id, text=f"m{n}")
        arrived = wait_until(lambda n=n: stamps_of(path).get(f"m{n}"), 30, "the message", interval=0.002)
        out.append((arrived - sent) * 1000)
    services.operator_message_send(user=operator, conversation_id=conversation_id, text="stop")
    return out


def measure_answer(samples, operator, scratch):
    from chat_app import selectors, services
    from tasks_app.services import task_create

    path = scratch / "answer.stamps"
    task = task_create(title="ask", description=str(path), executor="asker", created_by=operator)
    me = services.operator_profile(user=operator)
    out = []
    for n in range(samples):
        question = wait_until(
            lambda: selectors.pending_questions().filter(task=task).first(), 30, "the question", interval=0.002
        )
        answered = time.time()
        services.question_answer(question=question, answer_text=f"a{n}", answered_by=me)
        arrived = wait_until(lambda n=n: stamps_of(path).get(f"a{n}"), 30, "the answer", interval=0.002)
        out.append((arrived - answered) * 1000)
    return out


def measure_event(samples, operator, origin, cookie):
    from chat_app import services
    from tasks_app.services import task_create

    task = task_create(title="events", executor="stamp", created_by=operator)
    received = {}
    connected = threading.Event()
    done = threading.Event()

    async def watch():
        from websockets.asyncio.client import connect

        url = f"ws{origin.removeprefix('http')}/ws/tasks/{task.id}/"
        async with connect(url, additional_headers={"Cookie": cookie}, origin=origin) as ws:
            connected.set()
            while not done.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                now = time.time()
                frame = json.loads(raw)
                for event in frame["events"] if frame["type"] == "batch" else [frame]:
                    if event["type"] == "chat.message":
                        received[event["payload"]["text"]] = now

    watcher = threading.Thread(target=lambda: asyncio.run(watch()), daemon=True)
    watcher.start()
    connected.wait(30)
    time.sleep(1.0)  # the stamp run's own events go by first
    out = []
    for n in range(samples):
        sent = time.time()
        services.system_notice(task=task, text=f"e{n}")
        arrived = wait_until(lambda n=n: received.get(f"e{n}"), 30, "the event", interval=0.002)
        out.append((arrived - sent) * 1000)
    done.set()
    watcher.join(5)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--only", default=",".join(KINDS))
    args = parser.parse_args()
    only = [kind for kind in args.only.split(",") if kind]
    setup_django({"AGENTVINE_EXECUTORS_JSON": json.dumps(profiles(args.samples))})
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    operator = get_user_model().objects.create_user(username="bench", password="bench-pass-123", is_staff=True)
    client = Client()
    client.force_login(operator)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    connection.close()
    web, origin = start_web("agentvine.asgi:application", "latency")
    worker = start_worker(2, "latency", extra_env={"AGENTVINE_API_URL": origin})
    scratch = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    try:
        from workers_app.models import Worker, WorkerStatus

        wait_until(lambda: Worker.objects.filter(status=WorkerStatus.IDLE).count() >= 2, 60, "two idle slots")
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} before", flush=True)
        if "start" in only:
            summary("start", measure_start(args.samples, operator))
        if "message" in only:
            summary("message", measure_message(args.samples, operator, scratch))
        if "answer" in only:
            summary("answer", measure_answer(args.samples, operator, scratch))
        if "event" in only:
            summary("event", measure_event(args.samples, operator, origin, cookie))
        print(f"load average {os.getloadavg()[0]:.1f} after", flush=True)
    finally:
        stop_worker(worker)
        stop_worker(web)


if __name__ == "__main__":
    main()
