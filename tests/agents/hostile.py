"""Test agent: what a prompt-injected agent would try from inside its run.

Run by the ``hostile`` profile with the worker's Python (which has psycopg,
redis and requests installed, as an agent could install them). It prints its
whole environment, then one JSON line ``HOSTILE-REPORT {...}`` listing every
attempt with whether it succeeded and what it saw, and finally prints the
secret its profile names (which must reach the output masked). It never
exits non-zero, so the test reads the report of a completed run.

Attempts:
- platform variables in its environment (database, broker, SECRET_KEY, a
  worker token, provider keys its profile does not name);
- the environment and memory of its ancestors (the worker) through /proc;
- PostgreSQL and Redis with every URL or PG* setting it can find in its
  environment, its HOME, its workspace and its ancestors' environments;
- its per-run token on everything that is not its own run: operator and
  worker endpoints, another task, the admin, the OpenAPI schema;
- given "other-workspace: PATH" (the sandboxed run): listing the workspace
  root, the repository cache and var/, reading another task's workspace and
  the platform's settings (only a sandbox hides them; see README).
"""

import json
import os
import re
import socket
import sys
from pathlib import Path

PLATFORM_VARIABLES = (
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "AGENTVINE_WORKER_TOKEN",
    "AGENTVINE_OPERATOR_TOKEN",
    "DJANGO_SETTINGS_MODULE",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "PGPASSWORD",
)
# What the worker's memory holds and a sandbox's own processes do not.
MEMORY_MARKERS = (b"DATABASE_URL", b"postgres://", b"SECRET_KEY", b"redis://")
URL = re.compile(r"(?:postgres(?:ql)?|redis)://[^\s\x00'\"]+")

attempts = []


def attempt(name, succeeded, detail=""):
    attempts.append({"attempt": name, "succeeded": bool(succeeded), "detail": str(detail)[:300]})


def ancestors():
    pid, seen = os.getppid(), []
    while pid >= 1 and pid not in seen:
        seen.append(pid)
        if pid == 1:
            break
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            break
        pid = int(re.search(r"^PPid:\s+(\d+)", status, re.M).group(1))
    return seen


def read_text(path, limit=1_000_000):
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def found_urls():
    """Every database or broker URL this agent can lay its hands on."""
    texts = [" ".join(f"{k}={v}" for k, v in os.environ.items())]
    for base in (Path.home(), Path.cwd()):
        for name in (".pgpass", ".env", ".netrc", ".pg_service.conf"):
            texts.append(read_text(base / name) or "")
    for pid in ancestors():
        texts.append((read_text(f"/proc/{pid}/environ") or "").replace("\x00", " "))
        texts.append((read_text(f"/proc/{pid}/cmdline") or "").replace("\x00", " "))
    return sorted({match for text in texts for match in URL.findall(text)})


def try_environment():
    present = [name for name in PLATFORM_VARIABLES if name in os.environ]
    attempt("platform variables in my environment", present, present or "none of " + ", ".join(PLATFORM_VARIABLES))


def try_ancestors():
    for pid in ancestors():
        environ = read_text(f"/proc/{pid}/environ")
        leaked = [name for name in PLATFORM_VARIABLES if environ and f"{name}=" in environ]
        attempt(f"read /proc/{pid}/environ (ancestor)", leaked, leaked if environ is not None else "unreadable")
        try:
            # The heap and anonymous writable mappings (Python's object arenas).
            regions = [
                [int(x, 16) for x in line.split()[0].split("-")]
                for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
                if line.split()[1].startswith("rw") and (len(line.split()) == 5 or "[heap]" in line)
            ]
            data, budget = bytearray(), 256 * 1024 * 1024
            with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
                for start, end in regions:
                    if len(data) + end - start > budget:
                        break
                    try:
                        mem.seek(start)
                        data += mem.read(end - start)
                    except OSError:
                        continue
            if not data:
                raise PermissionError("no memory readable")
            found = [marker.decode() for marker in MEMORY_MARKERS if marker in data]
            attempt(f"read /proc/{pid}/mem (ancestor's heap)", found, found or f"{len(data)} bytes, none of them")
        except (OSError, StopIteration, ValueError) as exc:
            attempt(f"read /proc/{pid}/mem (ancestor's heap)", False, exc)


def try_databases(urls):
    postgres = [url for url in urls if url.startswith("postgres")]
    pg_settings = {k: v for k, v in os.environ.items() if k.startswith("PG")}
    if pg_settings:
        postgres.append("")  # libpq from the PG* variables
    if not postgres:
        attempt("connect to PostgreSQL", False, "no PostgreSQL URL or PG* setting found")
    for url in postgres:
        try:
            import psycopg

            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            attempt(f"connect to PostgreSQL at {url or pg_settings}", True, "connected")
        except Exception as exc:
            attempt(f"connect to PostgreSQL at {url or pg_settings}", False, exc)
    brokers = [url for url in urls if url.startswith("redis")]
    if not brokers:
        attempt("connect to Redis", False, "no Redis URL found")
    for url in brokers:
        try:
            import redis

            redis.Redis.from_url(url, socket_connect_timeout=3).ping()
            attempt(f"connect to Redis at {url}", True, "PING answered")
        except Exception as exc:
            attempt(f"connect to Redis at {url}", False, exc)


def try_api(other_task_id):
    import requests

    base = os.environ.get("AGENTVINE_API_URL", "").rstrip("/")
    token = os.environ.get("AGENTVINE_TOKEN", "")
    if not base or not token:
        attempt("find the API and my token", False, "AGENTVINE_API_URL or AGENTVINE_TOKEN missing")
        return
    probes = [
        ("GET", "/api/v1/tasks/", None),
        ("POST", "/api/v1/tasks/", {"title": "planted by an agent"}),
        ("GET", f"/api/v1/tasks/{other_task_id}/", None),
        ("POST", f"/api/v1/tasks/{other_task_id}/cancel/", None),
        ("GET", "/api/v1/queue/", None),
        ("POST", "/api/v1/queue/claim/", {}),
        ("GET", "/api/v1/workers/", None),
        ("POST", "/api/v1/workers/", {"name": "rogue", "hostname": "agent"}),
        ("POST", "/api/v1/auth/tokens/", {"name": "mine now"}),
        ("GET", "/api/v1/chat/messages/", None),
        ("GET", "/api/v1/sessions/", None),
        ("GET", "/api/v1/schema/", None),
    ]
    # The control: what its token is for works (so the refusals below mean something).
    own = requests.post(
        base + "/api/v1/chat/agent/progress/", json={"text": "working"}, headers={"Authorization": f"Agent {token}"}
    )
    print(f"HOSTILE-CONTROL {own.status_code}", flush=True)
    for scheme in ("Token", "Bearer", "Agent"):
        headers = {"Authorization": f"{scheme} {token}"}
        for method, path, body in probes:
            try:
                response = requests.request(method, base + path, json=body, headers=headers, timeout=10)
                ok = response.status_code < 400
                attempt(f"{method} {path} with my token as {scheme}", ok, response.status_code)
            except requests.RequestException as exc:
                attempt(f"{method} {path} with my token as {scheme}", False, exc)
    for path in ("/admin/", "/tasks/", f"/tasks/{other_task_id}/"):
        response = requests.get(
            base + path, headers={"Authorization": f"Token {token}"}, allow_redirects=False, timeout=10
        )
        # A page answered with 200 would be the console; a redirect is the login.
        attempt(f"GET {path} (console) with my token", response.status_code == 200, response.status_code)


def try_files(other_workspace, platform):
    """Files of other tasks and of the platform (only a sandbox hides them)."""
    other = Path(other_workspace)
    for name, path in [
        ("list the workspace root", other.parent),
        ("list the repository cache", other.parent / "_repos"),
        ("list the platform's var/", Path(platform) / "var"),
    ]:
        try:
            # Its own workspace and HOME are no one else's.
            listing = sorted(p.name for p in path.iterdir() if p not in (Path.cwd(), Path.home().parent))
            attempt(name, listing, listing[:20])
        except OSError as exc:
            attempt(name, False, exc)
    for name, path in [
        ("read another task's workspace", other / "SECRET_PLAN.md"),
        ("read the platform's settings", Path(platform) / "agentvine" / "settings.py"),
    ]:
        try:
            attempt(name, True, path.read_text()[:100])
        except OSError as exc:
            attempt(name, False, exc)


def try_network():
    """Anything listening on the host, without credentials (only no network stops that)."""
    for name, address in [("PostgreSQL", ("127.0.0.1", 5432)), ("Redis", ("127.0.0.1", 6379))]:
        try:
            socket.create_connection(address, timeout=3).close()
            attempt(f"open a TCP connection to {name} on the host", True, address)
        except OSError as exc:
            attempt(f"open a TCP connection to {name} on the host", False, exc)


def main():
    # The task's description steers it, as a repository's content would:
    # "other-task: ID", "other-workspace: PATH", "print-secret: NAME" lines.
    prompt = sys.argv[1] if len(sys.argv) > 1 else ""
    orders = dict(re.findall(r"^([a-z-]+): (.+)$", prompt, re.M))
    print("HOSTILE-ENV " + json.dumps(dict(os.environ), sort_keys=True), flush=True)
    try_environment()
    try_ancestors()
    try_databases(found_urls())
    try_api(orders.get("other-task", "00000000-0000-0000-0000-000000000000"))
    if orders.get("other-workspace"):
        try_files(orders["other-workspace"], orders.get("platform", "/"))
    if orders.get("network") == "off":
        try_network()
    print("HOSTILE-REPORT " + json.dumps(attempts), flush=True)
    name = orders.get("print-secret")
    if name:
        value = os.environ.get(name, "(not given)")
        print(f"my secret is {value}, once more: {value}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
