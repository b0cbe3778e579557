"""Django's PostgreSQL backend with a health check that costs no round trip,
and a connection a slot's threads can share.

Celery slots keep their connection across tasks and check it before each one
(``CONN_HEALTH_CHECKS``, ``workers_app/slots.py``). Django checks by sending
``SELECT 1``: a round trip on every task, about 2 % of a slot's CPU per work
order. Between two statements a healthy connection has nothing to read; a
server that ends the session (a restart, ``pg_terminate_backend``, an idle
timeout) sends its goodbye and closes the socket, which makes it readable.
So the socket is polled first, and ``SELECT 1`` is sent only when something
came in unasked, to tell a goodbye from a harmless notice.

A slot process beats its heartbeat from a thread of its own. Django gives
every thread its own connection, which made two PostgreSQL backends per slot
(the scarce resource of a fleet: ``max_connections`` counts them). Instead the
heartbeat thread's wrapper *borrows* the slot's connection (:meth:`DatabaseWrapper.borrow`):
one socket, two wrappers, each with its own transaction state. A lock (an
``RLock`` shared by the two) keeps them apart: the owner holds it for each
statement and for the whole of each transaction (from autocommit off until it
is on again, or the connection is closed), the borrower for each of its beats,
so a beat never lands inside the slot's transaction nor the other way round.
psycopg's own connection lock already serialises the bytes on the socket.
"""

import select
import threading

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Set only on the two wrappers of a shared connection.
        self.use_lock = None
        self.lender = None
        self._transaction_held = False

    # -- sharing ------------------------------------------------------------

    def lend(self):
        """Make this wrapper's connection shareable; returns its lock."""
        if self.use_lock is None:
            self.use_lock = threading.RLock()
            self.execute_wrappers.insert(0, self._one_at_a_time)
            # The borrower may (re)open the owner's connection from its thread.
            self.inc_thread_sharing()
        return self.use_lock

    def borrow(self, owner):
        """Use ``owner``'s connection from now on (this thread's wrapper)."""
        self.use_lock = owner.lend()
        self.lender = owner

    def _one_at_a_time(self, execute, sql, params, many, context):
        with self.use_lock:
            return execute(sql, params, many, context)

    def get_new_connection(self, conn_params):
        if self.lender is None:
            return super().get_new_connection(conn_params)
        owner = self.lender
        with self.use_lock:
            raw = owner.connection
            if raw is not None and (raw.closed or raw.broken):
                owner.close()
            owner.ensure_connection()
            return owner.connection

    def _close(self):
        if self.lender is None:
            super()._close()
        # A borrower lets go of the owner's connection without closing it: a
        # broken one is found and replaced by the owner (or the next borrow).

    # -- the owner's side of the lock -----------------------------------------

    def ensure_connection(self):
        if self.use_lock is None or self.lender is not None:
            return super().ensure_connection()
        with self.use_lock:
            return super().ensure_connection()

    def set_autocommit(self, autocommit, force_begin_transaction_with_broken_autocommit=False):
        if self.use_lock is None or self.lender is not None:
            return super().set_autocommit(autocommit, force_begin_transaction_with_broken_autocommit)
        if not autocommit:
            # A transaction begins: the connection is the owner's until it ends.
            self.use_lock.acquire()
            try:
                super().set_autocommit(autocommit, force_begin_transaction_with_broken_autocommit)
            except BaseException:
                self.use_lock.release()
                raise
            self._transaction_held = True
            return None
        try:
            return super().set_autocommit(autocommit, force_begin_transaction_with_broken_autocommit)
        finally:
            self._release_transaction()

    def close(self):
        if self.use_lock is None or self.lender is not None:
            return super().close()
        with self.use_lock:
            try:
                return super().close()
            finally:
                # Closed inside a transaction: Django will not turn autocommit
                # back on, the transaction is over all the same.
                if self.in_atomic_block:
                    self._release_transaction()

    def _release_transaction(self):
        if self._transaction_held:
            self._transaction_held = False
            self.use_lock.release()

    def is_usable(self):
        if self.use_lock is None:
            return self._is_usable()
        with self.use_lock:
            return self._is_usable()

    def _is_usable(self):
        conn = self.connection
        if conn is None or conn.closed or conn.broken:
            return False
        try:
            readable, _, _ = select.select([conn.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable or super().is_usable()
