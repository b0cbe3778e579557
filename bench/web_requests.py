"""daphne's CPU per API request, with the platform's ASGI handler and with Django's stock one.

Starts a real daphne on a scratch database for each handler in turn and sends
``--requests`` requests of each kind from ``--clients`` keep-alive clients:

    anonymous   GET /api/v1/queue/ without credentials (401): the request path alone
    status      GET /api/v1/queue/ with an operator's API token
    create      POST /api/v1/tasks/ (one task; its doorbell goes to Redis, no worker runs)

    .venv/bin/python bench/web_requests.py [--requests 2000] [--clients 4]

"platform" is agentvine/asgi.py (agentvine/asgi_handler.py); "stock" is
bench/stock_asgi.py, the same application on Django's ASGIHandler.
"""

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import cpu_seconds, process_tree, setup_django, start_web, stop_worker, wait_until  # noqa: E402

HANDLERS = {"platform": "agentvine.asgi:application", "stock": "bench.stock_asgi:application"}


def _measure(base, method, path, expect, headers, body, *, requests_total, clients, pid):
    import requests

    errors = []

    def client(count):
        session = requests.Session()
        session.headers.update(headers)
        for _ in range(count):
            response = session.request(method, base + path, json=body, timeout=30)
            if response.status_code != expect:
                errors.append(f"{response.status_code} {response.text[:200]}")

    share = [requests_total // clients] * clients
    threads = [threading.Thread(target=client, args=(count,)) for count in share]
    cpu_start, started = cpu_seconds(process_tree(pid)), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(process_tree(pid)) - cpu_start
    if errors:
        raise RuntimeError(f"{len(errors)} of {method} {path} were not {expect}, e.g. {errors[0]}")
    done = sum(share)
    return done / elapsed, 1000 * cpu / done


def run(handler, *, requests_total, clients, key):
    import requests

    # The request budget (429 beyond it) stays on, out of this bench's reach.
    web, base = start_web(HANDLERS[handler], f"web-{handler}", {"AGENTVINE_API_RATE": "1000000/min"})

    def up():
        try:
            return requests.get(base + "/api/v1/queue/", timeout=2).status_code == 401
        except requests.ConnectionError:
            return False

    try:
        wait_until(up, 60, "daphne")
        token = {"Authorization": f"Token {key}"}
        kinds = [
            ("anonymous", "GET", "/api/v1/queue/", 401, {}, None),
            ("status", "GET", "/api/v1/queue/", 200, token, None),
            ("create", "POST", "/api/v1/tasks/", 201, token, {"title": "web bench", "executor": "noop"}),
        ]
        for name, *request in kinds:
            rate, cpu = _measure(base, *request, requests_total=requests_total, clients=clients, pid=web.pid)
            print(f"  {handler:8} {name:9} {rate:7.0f} req/s   daphne CPU {cpu:5.2f} ms/request")
    finally:
        stop_worker(web)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="requests of each kind, per handler")
    parser.add_argument("--clients", type=int, default=4, help="concurrent keep-alive clients")
    args = parser.parse_args()
    setup_django()
    from django.contrib.auth import get_user_model

    from workers_app.services import api_token_create

    user = get_user_model().objects.create_user(username="bench-operator", password="bench-pass-123", is_staff=True)
    key = api_token_create(user=user, name="bench")[1]
    print(f"{args.requests} requests of each kind from {args.clients} clients")
    # Alternated, so a drift in the machine's speed shows as a spread, not a bias.
    for handler in ("platform", "stock", "platform", "stock"):
        run(handler, requests_total=args.requests, clients=args.clients, key=key)


if __name__ == "__main__":
    main()
