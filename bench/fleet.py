"""A fleet of remote pull workers against the REST API: can the web side hold it?

Registers ``--workers`` remote workers (default 1,000) and simulates them in
this one process (asyncio, aiohttp): each heartbeats every ``--heartbeat``
seconds (3), polls ``queue/claim/`` when idle, and runs what it claims as a
remote worker does (start → two output batches → complete) without an agent.
Meanwhile short work is created at ``--rate`` tasks/s and the stalled-worker
guardian runs every second, as beat would run it, with the production
threshold (3 × heartbeat): any worker it marks offline was wrongly marked.

    .venv/bin/python bench/fleet.py [--workers 1000] [--seconds 60] [--web 1] [--rate 20]

Prints heartbeats/s held, heartbeat and claim p50/p99, runs completed, workers
wrongly marked offline, PostgreSQL connections (most seen at once) and the web
processes' CPU per worker-second.
"""

import argparse
import asyncio
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import cpu_seconds, process_tree, setup_django, start_web, stop_worker, wait_until  # noqa: E402


def _percentile(values, fraction):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Fleet:
    def __init__(self, bases, workers, heartbeat_seconds, stop_at):
        self.bases = bases
        self.workers = workers  # [(worker id, token)]
        self.heartbeat_seconds = heartbeat_seconds
        self.stop_at = stop_at
        self.heartbeats, self.claims, self.errors = [], [], []
        self.completed = 0

    async def _post(self, client, base, token, path, body=None):
        import aiohttp

        try:
            async with client.post(
                f"{base}/api/v1/{path}", json=body, headers={"Authorization": f"Token {token}"}
            ) as response:
                text = await response.text()
        except (TimeoutError, aiohttp.ClientError) as exc:
            self.errors.append(f"{path.split('/')[0]} {type(exc).__name__}")
            return None
        if response.status >= 400:
            self.errors.append(f"{path.split('/')[0]} {response.status}")
            return None
        return json.loads(text) if text else None

    async def _heartbeats(self, client, base, worker_id, token):
        await asyncio.sleep(random.uniform(0, self.heartbeat_seconds))
        while time.monotonic() < self.stop_at:
            started = time.monotonic()
            await self._post(client, base, token, f"workers/{worker_id}/heartbeat/")
            self.heartbeats.append(time.monotonic() - started)
            await asyncio.sleep(max(0.0, self.heartbeat_seconds - (time.monotonic() - started)))

    async def _work(self, client, base, token):
        await asyncio.sleep(random.uniform(0, self.heartbeat_seconds))
        while time.monotonic() < self.stop_at:
            started = time.monotonic()
            claimed = await self._post(client, base, token, "queue/claim/", {})
            self.claims.append(time.monotonic() - started)
            if not claimed:
                # The remote worker's idle poll: its poll interval, jittered.
                await asyncio.sleep(self.heartbeat_seconds * random.uniform(0.5, 1.0))
                continue
            order = f"queue/work-orders/{claimed['work_order']['id']}"
            await self._post(client, base, token, f"{order}/start/")
            for seq in range(2):
                await self._post(client, base, token, f"{order}/output/", {"seq": seq, "text": f"line {seq}\n"})
            if await self._post(client, base, token, f"{order}/complete/", {"exit_code": 0}) is not None:
                self.completed += 1

    async def run(self):
        import aiohttp

        # Two connections a worker, as a remote worker's heartbeat thread and run loop have.
        connector = aiohttp.TCPConnector(limit=len(self.workers) * 2)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as client:
            jobs = []
            for n, (worker_id, token) in enumerate(self.workers):
                base = self.bases[n % len(self.bases)]
                jobs.append(self._heartbeats(client, base, worker_id, token))
                jobs.append(self._work(client, base, token))
            await asyncio.gather(*jobs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--heartbeat", type=float, default=3.0)
    parser.add_argument("--web", type=int, default=1, help="daphne processes, workers spread over them")
    parser.add_argument("--rate", type=float, default=20.0, help="tasks created per second")
    args = parser.parse_args()

    env = {"AGENTVINE_HEARTBEAT_SECONDS": str(args.heartbeat)}
    setup_django(env)
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection

    from tasks_app.services import tasks_create
    from workers_app import guardians
    from workers_app.models import Worker, WorkerStatus
    from workers_app.services import api_token_create

    user = get_user_model().objects.create_user(username="bench-fleet", password="bench-pass-123", is_staff=True)
    operator_key = api_token_create(user=user, name="bench")[1]
    webs = [start_web("agentvine.asgi:application", f"fleet{n}", env) for n in range(args.web)]
    bases = [base for _, base in webs]
    import requests

    for _, base in webs:
        wait_until(lambda b=base: _answers(requests, b), 30, "daphne")

    print(f"registering {args.workers} remote workers …", flush=True)
    workers = []
    with requests.Session() as client:
        client.headers["Authorization"] = f"Token {operator_key}"
        for n in range(args.workers):
            reply = client.post(
                f"{bases[n % len(bases)]}/api/v1/workers/", json={"name": f"fleet-{n}", "hostname": "bench"}, timeout=30
            ).json()
            workers.append((reply["id"], reply["token"]))

    stop_at = time.monotonic() + args.seconds
    wrongly_offline, most_connections = set(), 0

    def watch():
        # As beat runs the guardians; plus what PostgreSQL sees.
        nonlocal most_connections
        created = 0
        began = time.monotonic()
        while time.monotonic() < stop_at:
            due = int((time.monotonic() - began) * args.rate) - created
            if due > 0:
                tasks_create(
                    specs=[{"title": f"fleet {created + n}", "executor": "noop"} for n in range(due)], created_by=user
                )
                created += due
            guardians.guard_stalled_workers()
            wrongly_offline.update(
                Worker.objects.filter(status=WorkerStatus.OFFLINE, name__startswith="fleet-").values_list(
                    "name", flat=True
                )
            )
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
                most_connections = max(most_connections, cursor.fetchone()[0])
            time.sleep(1.0)
        connection.close()

    watcher = threading.Thread(target=watch)
    web_pids = [pid for proc, _ in webs for pid in process_tree(proc.pid)]
    cpu_before = cpu_seconds(web_pids)
    watcher.start()
    fleet = Fleet(bases, workers, args.heartbeat, stop_at)
    asyncio.run(fleet.run())
    watcher.join()
    cpu = cpu_seconds(web_pids) - cpu_before
    for proc, _ in webs:
        stop_worker(proc)

    print(f"workers {args.workers}, {args.seconds:.0f} s, heartbeat every {args.heartbeat:g} s, {args.web} web")
    expected = args.workers / args.heartbeat
    print(f"heartbeats/s held     {len(fleet.heartbeats) / args.seconds:.0f} (expected {expected:.0f})")
    beat_p50, beat_p99 = _percentile(fleet.heartbeats, 0.5) * 1000, _percentile(fleet.heartbeats, 0.99) * 1000
    print(f"heartbeat p50 / p99   {beat_p50:.0f} / {beat_p99:.0f} ms")
    claim_p50, claim_p99 = _percentile(fleet.claims, 0.5) * 1000, _percentile(fleet.claims, 0.99) * 1000
    print(f"claim p50 / p99       {claim_p50:.0f} / {claim_p99:.0f} ms")
    print(f"runs completed        {fleet.completed}")
    print(
        f"wrongly offline       {len(wrongly_offline)} (stalled after {settings.AGENTVINE_STALLED_WORKER_SECONDS:g} s)"
    )
    print(f"PostgreSQL connections at most {most_connections}")
    print(f"web CPU per worker-s  {cpu / (args.workers * args.seconds) * 1000:.2f} ms")
    if fleet.errors:
        print(f"errors                {len(fleet.errors)}, most often: {statistics.multimode(fleet.errors)[:3]}")


def _answers(requests, base):
    try:
        return requests.get(f"{base}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


if __name__ == "__main__":
    main()
