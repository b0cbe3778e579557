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


def shared_redis():
    """The process's client for ``settings.REDIS_URL``."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = redis.Redis.from_url(
                    settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30
                )
    return _client
