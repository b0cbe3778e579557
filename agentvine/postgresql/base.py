"""Django's PostgreSQL backend with a health check that costs no round trip.

Celery slots keep their connection across tasks and check it before each one
(``CONN_HEALTH_CHECKS``, ``workers_app/slots.py``). Django checks by sending
``SELECT 1``: a round trip on every task, about 2 % of a slot's CPU per work
order. Between two statements a healthy connection has nothing to read; a
server that ends the session (a restart, ``pg_terminate_backend``, an idle
timeout) sends its goodbye and closes the socket, which makes it readable.
So the socket is polled first, and ``SELECT 1`` is sent only when something
came in unasked, to tell a goodbye from a harmless notice.
"""

import select

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self):
        conn = self.connection
        if conn is None or conn.closed or conn.broken:
            return False
        try:
            readable, _, _ = select.select([conn.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable or super().is_usable()
