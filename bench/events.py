"""Live-event fan-out: agents emit output, 50 operators watch the activity feed.

A real daphne serves ``ws/activity/``; ``--clients`` real WebSocket clients
(one asyncio process) stay connected while ``--publishers`` processes call the
real output service (``execution_output_append``: chunk row, counters, event
row in one statement, group_send after commit) at a paced total rate.
Reported: events/s published, events and WebSocket frames delivered (several
events share a batch frame), events lost or duplicated, and latency from the
service call to receipt by each client (p50/p99/max). Target: p99 < 250 ms at >= 1,000
events/s with 50 clients and nothing lost.

    .venv/bin/python bench/events.py [--rate 1000] [--seconds 10] [--clients 50] [--publishers 2]

Uses its own scratch database (BENCH_DATABASE_URL, default
agentvine_bench_events) and BENCH_REDIS_URL.
"""

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import socket
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/agentvine_bench_events")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import setup_django, start_web, stop_worker, wait_until  # noqa: E402


def _listening(origin):
    host, port = origin.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.2):
            return True
    except OSError:
        return False


def publisher(execution_ids, rate, seconds, start_at, results):
    """One process of agents: call the output service at ``rate`` events/s."""
    import django

    django.setup()
    from agentvine import events
    from queue_app.models import Execution
    from queue_app.outputs import execution_output_append

    executions = list(Execution.objects.filter(pk__in=execution_ids))
    sent = {}
    interval = 1.0 / rate
    while time.time() < start_at:
        time.sleep(0.001)
    begin = time.monotonic()
    total = int(rate * seconds)
    for n in range(total):
        due = begin + n * interval
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        execution = executions[n % len(executions)]
        seq = n // len(executions)
        called = time.time()
        execution_output_append(execution=execution, seq=seq, text=f"line {n}\n", tail="")
        sent[f"{execution.pk}:{seq}"] = called
    events.flush(30)
    results.put((sent, time.monotonic() - begin))


async def watch(url, cookie, origin, received, frames, ready, stop_event):
    from websockets.asyncio.client import connect

    async with connect(url, additional_headers={"Cookie": cookie}, origin=origin, max_queue=None) as ws:
        ready()

        async def close_on_stop():
            await stop_event.wait()
            await ws.close()

        # Closing the socket ends the loop below: no timer per frame, so the
        # clients take as little as possible of the CPU the server runs on.
        closer = asyncio.create_task(close_on_stop())
        async for raw in ws:
            now = time.time()
            frames.append(1)
            frame = json.loads(raw)
            for event in frame["events"] if frame["type"] == "batch" else [frame]:
                if event["type"] == "execution.output":
                    payload = event["payload"]
                    received.append((f"{payload['execution_id']}:{payload['seq']}", now))
        await closer


async def run_clients(args, url, cookie, origin, start_at, done_at, frames):
    stop_event = asyncio.Event()
    connected = []
    per_client = [[] for _ in range(args.clients)]
    tasks = [
        asyncio.create_task(watch(url, cookie, origin, per_client[i], frames, lambda: connected.append(1), stop_event))
        for i in range(args.clients)
    ]
    while len(connected) < args.clients:
        await asyncio.sleep(0.05)
        for task in tasks:
            if task.done() and task.exception():
                raise task.exception()
    print(f"{args.clients} clients connected; publishing starts in {start_at - time.time():.1f}s", flush=True)
    while time.time() < done_at():
        await asyncio.sleep(0.1)
    # Drain: stop once nothing new has arrived for a second.
    last = -1
    while True:
        total = sum(len(r) for r in per_client)
        if total == last:
            break
        last = total
        await asyncio.sleep(1.0)
    stop_event.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return per_client


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second, all publishers together")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--agents", type=int, default=20)
    args = parser.parse_args()
    setup_django()
    from django.contrib.auth import get_user_model
    from django.test import Client

    from queue_app.models import Execution, WorkOrder
    from tasks_app.services import task_create

    user = get_user_model().objects.create_user(username="bench-operator", password="bench-pass-123", is_staff=True)
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    execution_ids = []
    for n in range(args.agents):
        task = task_create(title=f"agent {n}")
        work_order = WorkOrder.objects.get(task=task)
        execution_ids.append(str(Execution.objects.create(task=task, work_order=work_order, attempt=1).pk))
    from django.db import connection

    connection.close()

    daphne, origin = start_web("agentvine.asgi:application", "events")
    wait_until(lambda: _listening(origin), 30, "daphne")
    results = multiprocessing.get_context("fork").Queue()
    start_at = time.time() + 3 + args.clients * 0.05
    publishers = []
    finished = {"at": float("inf")}
    try:
        per_rate = args.rate / args.publishers
        for p in range(args.publishers):
            mine = execution_ids[p :: args.publishers]
            proc = multiprocessing.get_context("fork").Process(
                target=publisher, args=(mine, per_rate, args.seconds, start_at, results)
            )
            proc.start()
            publishers.append(proc)

        def done_at():
            if all(not p.is_alive() for p in publishers) or time.time() > start_at + args.seconds * 3 + 30:
                finished["at"] = min(finished["at"], time.time())
            return finished["at"]

        # Collect the publishers' results while they run (a full queue would block them).
        sent = {}
        publish_seconds = []
        frames = []

        async def everything():
            async def collect():
                while len(publish_seconds) < args.publishers:
                    try:
                        part, elapsed = await asyncio.to_thread(results.get, True, 1.0)
                    except Exception:
                        continue
                    sent.update(part)
                    publish_seconds.append(elapsed)

            collector = asyncio.create_task(collect())
            per_client = await run_clients(
                args,
                f"ws{origin.removeprefix('http')}/ws/activity/",
                cookie,
                origin,
                start_at,
                done_at,
                frames,
            )
            await collector
            return per_client

        # The clients share this process with Django: without this, each full
        # garbage collection walks all of it and stalls every client ~100 ms,
        # which would be measured as delivery latency.
        gc.freeze()
        per_client = asyncio.run(everything())
    finally:
        for proc in publishers:
            proc.join(5)
        stop_worker(daphne)

    latencies = []
    lost = 0
    duplicates = 0
    for received in per_client:
        keys = [key for key, _ in received]
        duplicates += len(keys) - len(set(keys))
        seen = dict(received)
        lost += sum(1 for key in sent if key not in seen)
        latencies.extend((seen[key] - sent[key]) * 1000 for key in sent if key in seen)
    latencies.sort()
    elapsed = max(publish_seconds)
    published_rate = len(sent) / elapsed
    delivered = sum(len(r) for r in per_client)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"published: {len(sent)} events in {elapsed:.2f}s = {published_rate:.0f} events/s (target {args.rate:.0f})")
    print(
        f"delivered: {delivered} events in {len(frames)} frames to {args.clients} clients"
        f" = {delivered / elapsed:.0f} events/s, {len(frames) / elapsed:.0f} frames/s"
    )
    print(f"lost: {lost}  duplicates: {duplicates}")
    if latencies:
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"latency service call -> client: p50 {p50:.1f} ms  p99 {p99:.1f} ms  max {latencies[-1]:.1f} ms")
        ok = p99 < 250 and published_rate >= 1000 * 0.98 and lost == 0
        print("target (p99 < 250 ms at >= 1,000 events/s, nothing lost):", "MET" if ok else "NOT MET")


if __name__ == "__main__":
    main()
