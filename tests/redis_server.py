"""A throw-away ``redis-server`` a fault test owns: started on a free port,
shut down (``shutdown nosave``: it comes back empty) and started again on the
same port, removed at the end. Never the shared Redis."""

import socket
import subprocess
import time
from pathlib import Path

import redis


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, directory):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
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
