"""A TCP proxy a fault test puts between a process and a service, to cut the
link silently: :meth:`TcpProxy.go_silent` stops forwarding on every open
connection without closing it (neither side hears anything, as after a
network cut that left the connections half-open), while connections made
afterwards work."""

import socket
import threading


class _Link:
    def __init__(self, client, upstream):
        self.client = client
        self.upstream = upstream
        self.silent = False

    def pump(self, source, target):
        try:
            while data := source.recv(65536):
                if not self.silent:
                    target.sendall(data)
        except OSError:
            pass
        finally:
            if not self.silent:
                for sock in (self.client, self.upstream):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass


class TcpProxy:
    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.links = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            link = _Link(client, upstream)
            with self._lock:
                self.links.append(link)
            threading.Thread(target=link.pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=link.pump, args=(upstream, client), daemon=True).start()

    def go_silent(self):
        """Every connection open now stops carrying data, and stays open."""
        with self._lock:
            for link in self.links:
                link.silent = True
            return len(self.links)

    def close(self):
        self.listener.close()
        with self._lock:
            for link in self.links:
                for sock in (link.client, link.upstream):
                    # shutdown first: a close() alone does not end a recv()
                    # another thread is blocked in, and the peer hears nothing.
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    try:
                        sock.close()
                    except OSError:
                        pass
