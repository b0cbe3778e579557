"""The API address inside a sandbox without network (``"network": false``).

A sandbox with its own empty network namespace reaches nothing, the API
included. So the API alone is relayed, as raw bytes (TLS passes through
untouched):

- outside, the worker listens on a Unix socket in a directory of its own and
  connects each connection to the API's host and port (:class:`ApiRelay`);
- inside, a small process started next to the agent listens on the API's
  port on the loopback interface and connects each connection to that socket
  (:func:`main`, run as a script with the interpreter the sandbox has);
- the sandbox's ``/etc/hosts`` maps the API's host name to the loopback
  address, so the agent uses ``AGENTVINE_API_URL`` unchanged (a name or a
  loopback address; another IP literal cannot be relayed).

Nothing else leaves the sandbox. Standard library only: this file runs inside.
"""

import os
import signal
import socket
import sys
import threading
from urllib.parse import urlsplit

INSIDE_DIR = "/run/agentvine"
SOCKET_NAME = "api.sock"
CHUNK = 65536

ERR_API_HOST = "network off needs AGENTVINE_API_URL with a host name or a loopback address, not {host}"


def api_address(url):
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "127.0.0.1", port


def is_loopback_or_name(host):
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return True  # a name: /etc/hosts points it at the loopback address
    return host.startswith("127.") or host == "::1"


def _pump(source, target):
    try:
        while data := source.recv(CHUNK):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _splice(left, right):
    threading.Thread(target=_pump, args=(left, right), daemon=True).start()
    threading.Thread(target=_pump, args=(right, left), daemon=True).start()


class ApiRelay:
    """Outside: a Unix socket in ``directory`` whose connections go to the API."""

    def __init__(self, url, directory):
        self.host, self.port = api_address(url)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.directory = directory
        self.path = os.path.join(directory, SOCKET_NAME)
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(16)
        self._thread = threading.Thread(target=self._serve, name="agentvine-api-relay", daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                inside, _ = self.listener.accept()
            except OSError:
                return
            try:
                api = socket.create_connection((self.host, self.port), timeout=10)
                api.settimeout(None)
            except OSError:
                inside.close()
                continue
            _splice(inside, api)

    def close(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def main(argv):
    """Inside: ``api_relay.py HOST PORT SOCKET`` listens on the loopback port."""
    host, port, path = argv[0], int(argv[1]), argv[2]
    # The executor's interrupts are for the agent; this must outlive them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    family = socket.AF_INET6 if host == "::1" else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", port))
    listener.listen(16)
    while True:
        agent, _ = listener.accept()
        outside = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            outside.connect(path)
        except OSError:
            agent.close()
            continue
        _splice(agent, outside)


if __name__ == "__main__":
    main(sys.argv[1:])
