"""A fleet of remote pull workers against the REST API: can the web side hold it?

Registers ``--workers`` remote workers (default 1,000) and simulates them in
this one process (asyncio, aiohttp): each heartbeats every ``--heartbeat``
seconds (3), polls ``queue/claim/`` when idle, and runs what it claims as a
remote worker does (start → two output batches → complete) without an agent.
Meanwhile short work is created at ``--rate`` tasks/s and the stalled-worker
guardian runs every second, as beat would run it, with the production
threshold (3 × heartbeat): any worker it marks offline was wrongly marked.

    .venv/bin/python bench/fleet.py [--workers 1000] [--seconds 60] [--web-processes 1] [--rate 20]

The ``--web-processes`` daphnes accept on one listening socket (``daphne --fd``).
Prints heartbeats/s held, heartbeat and claim p50/p99 (steady state: after the
first two heartbeat periods; and over the whole run), runs completed, workers
wrongly marked offline, PostgreSQL connections (most seen at once), the web
processes' CPU per worker-second and this process's own CPU (the fleet shares
the machine with the server).
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
from bench.harness import cpu_seconds, process_tree, setup_django, start_web_processes, stop_worker, wait_until  # noqa: E402


def _percentile(values, fraction):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Fleet:
    def __init__(self, bases, workers, heartbeat_seconds):
        # Each heartbeat and claim as (sent at, seconds to answer).
        self.bases = bases
        self.workers = workers  # [(worker id, token)]
        self.heartbeat_seconds = heartbeat_seconds
        self.stop_at = None
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
            self.heartbeats.append((started, time.monotonic() - started))
            await asyncio.sleep(max(0.0, self.heartbeat_seconds - (time.monotonic() - started)))

    async def _work(self, client, base, token):
        await asyncio.sleep(random.uniform(0, self.heartbeat_seconds))
        while time.monotonic() < self.stop_at:
            started = time.monotonic()
            claimed = await self._post(client, base, token, "queue/claim/", {})
            self.claims.append((started, time.monotonic() - started))
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

    async def run(self, seconds, started):
        """Warm up (one heartbeat per worker, connections opened), then run
        for ``seconds``; ``started()`` is called when the clock starts."""
        import aiohttp

        # Two connections a worker, as a remote worker's heartbeat thread and run loop have.
        connector = aiohttp.TCPConnector(limit=len(self.workers) * 2)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as client:
            # Registering 1,000 workers takes a while, and registration counts
            # as a heartbeat: each sends one before the clock (and the
            # guardian) starts, as a fleet's workers do from the moment they
            # register. Not measured.
            at_once = asyncio.Semaphore(100)

            async def first_heartbeat(n, worker_id, token):
                async with at_once:
                    await self._post(client, self.bases[n % len(self.bases)], token, f"workers/{worker_id}/heartbeat/")

            await asyncio.gather(*(first_heartbeat(n, w, t) for n, (w, t) in enumerate(self.workers)))
            self.errors.clear()
            self.stop_at = time.monotonic() + seconds
            started()
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
    parser.add_argument(
        "--web-processes",
        "--web",
        type=int,
        default=1,
        help="daphne processes sharing one listening port (daphne --fd), as production runs several",
    )
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
    web_procs, base = start_web_processes("agentvine.asgi:application", "fleet", args.web_processes, env)
    bases = [base]
    import requests

    wait_until(lambda: _answers(requests, base), 30, "daphne")

    print(f"registering {args.workers} remote workers …", flush=True)
    workers = []
    with requests.Session() as client:
        client.headers["Authorization"] = f"Token {operator_key}"
        for n in range(args.workers):
            reply = client.post(
                f"{bases[n % len(bases)]}/api/v1/workers/", json={"name": f"fleet-{n}", "hostname": "bench"}, timeout=30
            ).json()
            workers.append((reply["id"], reply["token"]))

    fleet = Fleet(bases, workers, args.heartbeat)
    wrongly_offline, most_connections = set(), 0

    def watch():
        # As beat runs the guardians; plus what PostgreSQL sees.
        nonlocal most_connections
        created = 0
        began = time.monotonic()
        while time.monotonic() < fleet.stop_at:
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
    web_pids = [pid for proc in web_procs for pid in process_tree(proc.pid)]
    before = {}

    def started():
        before.update(web=cpu_seconds(web_pids), fleet=time.process_time())
        watcher.start()

    asyncio.run(fleet.run(args.seconds, started))
    watcher.join()
    cpu_before, client_before = before["web"], before["fleet"]
    cpu = cpu_seconds(web_pids) - cpu_before
    client_cpu = time.process_time() - client_before
    for proc in web_procs:
        stop_worker(proc)
    # Steady state: after the first two periods (connections opened, first beats).
    steady_from = fleet.stop_at - args.seconds + 2 * args.heartbeat
    beats = [seconds for sent, seconds in fleet.heartbeats if sent >= steady_from]
    claims = [seconds for sent, seconds in fleet.claims if sent >= steady_from]

    load = Path("/proc/loadavg").read_text().split()[:3]
    print(
        f"workers {args.workers}, {args.seconds:.0f} s, heartbeat every {args.heartbeat:g} s, "
        f"{args.web_processes} web process(es), load average {' '.join(load)}"
    )
    expected = args.workers / args.heartbeat
    steady_seconds = args.seconds - 2 * args.heartbeat
    print(f"heartbeats/s held     {len(beats) / steady_seconds:.0f} (expected {expected:.0f})")
    print(f"heartbeat p50 / p99   {_ms(beats, 0.5)} / {_ms(beats, 0.99)} ms (all: p99 {_ms(fleet.heartbeats, 0.99)})")
    print(f"claim p50 / p99       {_ms(claims, 0.5)} / {_ms(claims, 0.99)} ms (all: p99 {_ms(fleet.claims, 0.99)})")
    print(f"runs completed        {fleet.completed}")
    print(
        f"wrongly offline       {len(wrongly_offline)} (stalled after {settings.AGENTVINE_STALLED_WORKER_SECONDS:g} s)"
    )
    print(f"PostgreSQL connections at most {most_connections}")
    print(f"web CPU per worker-s  {cpu / (args.workers * args.seconds) * 1000:.2f} ms ({cpu / args.seconds:.2f} cores)")
    print(f"fleet CPU (this process) {client_cpu / args.seconds:.2f} cores")
    if fleet.errors:
        print(f"errors                {len(fleet.errors)}, most often: {statistics.multimode(fleet.errors)[:3]}")


def _ms(samples, fraction):
    values = [sample[1] if isinstance(sample, tuple) else sample for sample in samples]
    return f"{_percentile(values, fraction) * 1000:.0f}"


def _answers(requests, base):
    try:
        return requests.get(f"{base}/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


if __name__ == "__main__":
    main()
