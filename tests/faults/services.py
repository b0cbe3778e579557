"""Services a fault test owns, to restart or cut them for real: a throw-away
PostgreSQL cluster and a throw-away redis-server, each on a free port. The
shared services on 5432/6379/5672 are never touched (../shared/FAULT-LAB.md)."""

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import redis


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresCluster:
    """``pg_createcluster`` on a free port (trust auth, fsync off), started;
    :meth:`restart` is the fault (every backend is killed, ~2.5 s)."""

    def __init__(self):
        self.version = sorted(os.listdir("/etc/postgresql"))[-1]
        self.name = f"fault{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        subprocess.run(
            ["pg_createcluster", self.version, self.name, "--port", str(self.port), "--", "--auth=trust"],
            check=True,
            capture_output=True,
        )
        conf = Path(f"/etc/postgresql/{self.version}/{self.name}/conf.d/fault.conf")
        conf.write_text("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n")
        self._ctl("start")
        self._wait_ready()

    def url(self, database):
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql, database="postgres"):
        return subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database, "-Atc", sql],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    def _ctl(self, action):
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action],
            check=True,
            capture_output=True,
        )

    def _wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)])
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"cluster {self.name} not ready after {timeout}s")

    def restart(self):
        self._ctl("restart")
        self._wait_ready()

    def stop(self):
        self._ctl("stop")

    def start(self):
        self._ctl("start")
        self._wait_ready()

    def drop(self):
        subprocess.run(["pg_dropcluster", "--stop", self.version, self.name], capture_output=True, check=False)


class RedisServer:
    """A ``redis-server`` on a free port, no persistence: :meth:`shutdown` and
    :meth:`start` again is Redis restarting empty, on the same port."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def client(self):
        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)

    def start(self, timeout=10):
        subprocess.run(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--dir",
                str(self.directory),
                "--pidfile",
                str(self.directory / "redis.pid"),
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            check=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client().ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def shutdown(self, timeout=10):
        """The fault: the server goes away with everything it held."""
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.client().ping()
            except redis.ConnectionError:
                return
            time.sleep(0.05)
        raise TimeoutError(f"redis on {self.port} did not stop")

    def stop(self):
        try:
            self.shutdown()
        except TimeoutError:
            pid = (self.directory / "redis.pid").read_text().strip()
            subprocess.run(["kill", "-9", pid], check=False)


class PgBouncer:
    """PgBouncer (Debian's ``pgbouncer``) in transaction mode on a free port,
    in front of the PostgreSQL at ``host:port``, with fewer server sessions
    (3) than the processes of a test have clients, so they share them as a
    fleet would; its admin console answers :meth:`stats`. It refuses to run
    as root, so it runs as ``postgres``."""

    def __init__(self, directory, *, host="127.0.0.1", port=5432):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        (self.directory / "userlist.txt").write_text('"postgres" ""\n')
        (self.directory / "pgbouncer.ini").write_text(
            f"[databases]\n* = host={host} port={port}\n\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.directory / 'userlist.txt'}\nadmin_users = postgres\n"
            "pool_mode = transaction\nmax_client_conn = 1000\ndefault_pool_size = 3\n"
            # psycopg sends these at connect; the pooler cannot keep per-session settings.
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {self.directory / 'pgbouncer.log'}\npidfile = {self.directory / 'pgbouncer.pid'}\n"
        )
        run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if run_as:
            subprocess.run(["chown", "-R", "postgres", str(self.directory)], check=True)
            # Every directory above must be passable for postgres (pytest's tmp_path is 0700).
            for parent in self.directory.parents:
                if str(parent).startswith("/tmp/") or parent == Path("/tmp"):
                    parent.chmod(parent.stat().st_mode | 0o011)
        self.process = subprocess.Popen(
            [*run_as, "pgbouncer", str(self.directory / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not start: {self.log()}") from None
                time.sleep(0.05)

    def url(self, database):
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def log(self):
        path = self.directory / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def stats(self, database):
        """The admin console's SHOW STATS row of ``database``, by column name."""
        import psycopg

        with psycopg.connect(self.url("pgbouncer"), autocommit=True, prepare_threshold=None) as admin:
            cursor = admin.execute("SHOW STATS")
            columns = [column.name for column in cursor.description]
            for row in cursor.fetchall():
                if row[0] == database:
                    return dict(zip(columns, row, strict=True))
        return {}

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
