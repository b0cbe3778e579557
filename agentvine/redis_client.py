"""One Redis client per process for short commands (rate limits, wake-up signals).

A ``redis.Redis`` is thread-safe and keeps a pool of connections (reset in a
forked child by redis-py itself). Building one per call or per thread (as
Django's cache framework does, and under ASGI every request runs in a new
thread) opens a new TCP connection, with its handshake, every time.
"""

import threading

import redis
from django.conf import settings

_lock = threading.Lock()
_client = None
# None: as many connections as threads use it at once (web processes).
_max_connections = None


def one_connection_per_process():
    """Make this process's client hold a single connection (call before its
    first use). A slot process's threads (runner, heartbeat, wake-up
    listener, event sender) send a few short commands each: they take turns
    on one socket instead of each opening one, so a fleet's Redis connections
    grow by one per slot for them, not by the number of threads that
    happened to overlap."""
    global _client, _max_connections
    with _lock:
        # A client built before (in the parent, before the fork) is not this
        # process's: redis-py would start a fresh pool for it anyway.
        _client, _max_connections = None, 1


def shared_redis_disconnect():
    """Close this process's connections (a parent before it forks: a child
    would otherwise inherit the socket, open for as long as it lives)."""
    if _client is not None:
        _client.connection_pool.disconnect()


def shared_redis():
    """The process's client for ``settings.REDIS_URL``."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                options = {"socket_connect_timeout": 2, "socket_timeout": 5, "health_check_interval": 30}
                if _max_connections is not None:
                    # Blocking: a thread waits (briefly) for the connection
                    # instead of the pool failing when it is in use.
                    pool = redis.BlockingConnectionPool.from_url(
                        settings.REDIS_URL, max_connections=_max_connections, timeout=10, **options
                    )
                    _client = redis.Redis(connection_pool=pool)
                else:
                    _client = redis.Redis.from_url(settings.REDIS_URL, **options)
    return _client
