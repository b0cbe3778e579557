"""The local outbox: writes wait here until the server acknowledges them.

Every write (task create, send, answer, …) is first stored as an entry with
an Idempotency-Key made once, at enqueue time, and the exact JSON body, so a
replay is byte-for-byte the same request and the server applies it once.

Durability: SQLite in WAL mode with ``synchronous=FULL``; an entry is marked
``done`` in its own committed transaction only after the server answered 2xx.
A SIGKILL between the server's answer and that commit leaves the entry
``pending``; the next sync replays it with the same key and the server answers
with the stored response instead of writing again.

Entries are replayed oldest first, strictly one after the other per target
(a task, an agent); different targets are replayed side by side, a few at a
time, so a long outbox drains in seconds rather than minutes. A permanent refusal (4xx) marks the entry
``failed`` with the server's message and the sync goes on with the next one.
"""

import fcntl
import json
import os
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from agentvine_cli.client import UNAVAILABLE_STATUSES, ApiError, ServerUnavailable
from agentvine_cli.config import data_dir, outbox_path

PENDING = "pending"
DONE = "done"
FAILED = "failed"
# A plain 500 is not stored by the server's idempotency layer, so a replay is
# safe; after this many it is treated as permanent rather than block the queue.
MAX_SERVER_ERRORS = 5
FETCH_CHUNK = 5000
SYNC_CONCURRENCY = int(os.environ.get("AGENTVINE_SYNC_CONCURRENCY", "4"))
LOCK_FILE = "sync.lock"
DONE_KEEP_SECONDS = 7 * 24 * 3600

ERR_SERVER_ERROR = "server error ({reason}) on {attempts} attempts"
ERR_SYNC_BUSY = "another agentvine process is syncing the outbox"

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    server TEXT NOT NULL,
    target TEXT NOT NULL,
    summary TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    body TEXT,
    idempotency_key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    response TEXT,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS entries_status_id ON entries (status, id);
"""


@dataclass(frozen=True)
class Entry:
    id: int
    created_at: float
    server: str
    target: str
    summary: str
    method: str
    path: str
    body: str | None
    idempotency_key: str
    status: str
    attempts: int
    error: str | None
    response: str | None
    finished_at: float | None

    @property
    def response_data(self):
        return json.loads(self.response) if self.response else None


@dataclass
class SyncResult:
    sent: int = 0
    failed: int = 0
    unavailable: ServerUnavailable | None = None
    # A 401 is about the credentials, not the entry: stop, keep everything pending.
    unauthorized: ApiError | None = None
    busy: bool = False

    @property
    def stopped(self):
        return self.unavailable is not None or self.unauthorized is not None

    def __post_init__(self):
        self._lock = threading.Lock()

    def count(self, *, sent=0, failed=0):
        with self._lock:
            self.sent += sent
            self.failed += failed


class Outbox:
    def __init__(self, path=None):
        self.path = path or outbox_path()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Autocommit mode: every statement below is its own durable transaction.
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        # The sync's threads share this connection; sqlite3 wants them serialised.
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        os.chmod(self.path, 0o600)
        # Done entries are kept a while (their responses answer `submit`), then dropped.
        expired = time.time() - DONE_KEEP_SECONDS
        self._execute("DELETE FROM entries WHERE status = ? AND finished_at < ?", (DONE, expired))

    def _execute(self, sql, args=()):
        with self._lock:
            cursor = self._db.execute(sql, args)
            return cursor, cursor.fetchall()

    def close(self):
        self._db.close()

    def enqueue(self, *, server, target, summary, method, path, body=None):
        text = None if body is None else json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        cursor, _ = self._execute(
            "INSERT INTO entries (created_at, server, target, summary, method, path, body, idempotency_key)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (time.time(), server, target, summary, method, path, text, f"cli-{uuid.uuid4()}"),
        )
        return self.get(cursor.lastrowid)

    def get(self, entry_id):
        _, rows = self._execute("SELECT * FROM entries WHERE id = ?", (entry_id,))
        return Entry(**dict(rows[0])) if rows else None

    def pending(self, *, server=None, after_id=0, limit=None):
        sql = "SELECT * FROM entries WHERE status = ? AND id > ?"
        args = [PENDING, after_id]
        if server is not None:
            sql += " AND server = ?"
            args.append(server)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [Entry(**dict(row)) for row in self._execute(sql, args)[1]]

    def failed(self):
        _, rows = self._execute("SELECT * FROM entries WHERE status = ? ORDER BY id", (FAILED,))
        return [Entry(**dict(row)) for row in rows]

    def count(self, status=PENDING):
        return self._execute("SELECT count(*) FROM entries WHERE status = ?", (status,))[1][0][0]

    def mark_done(self, entry, response):
        self._execute(
            "UPDATE entries SET status = ?, response = ?, error = NULL, finished_at = ? WHERE id = ? AND status = ?",
            (DONE, json.dumps(response), time.time(), entry.id, PENDING),
        )

    def mark_failed(self, entry, error):
        self._execute(
            "UPDATE entries SET status = ?, error = ?, finished_at = ? WHERE id = ? AND status = ?",
            (FAILED, error, time.time(), entry.id, PENDING),
        )

    def note_attempt(self, entry):
        self._execute("UPDATE entries SET attempts = attempts + 1 WHERE id = ?", (entry.id,))
        return entry.attempts + 1

    def discard(self, entry):
        self._execute("DELETE FROM entries WHERE id = ?", (entry.id,))

    def clear_failed(self):
        return self._execute("DELETE FROM entries WHERE status = ?", (FAILED,))[0].rowcount


@contextmanager
def sync_lock(*, wait):
    """One syncing process at a time, so two never replay the same entry concurrently."""
    directory = data_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(directory / LOCK_FILE, "a") as handle:
        flags = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
        try:
            fcntl.flock(handle, flags)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def outbox_sync(outbox, client, *, wait=True, until_id=None, on_entry=None, concurrency=SYNC_CONCURRENCY):
    """Replay the pending entries of ``client``'s server until done or the server is unavailable."""
    result = SyncResult()
    with sync_lock(wait=wait) as locked:
        if not locked:
            result.busy = True
            return result
        while not result.stopped:
            entries = outbox.pending(server=client.server, limit=FETCH_CHUNK)
            if until_id is not None:
                entries = [entry for entry in entries if entry.id <= until_id]
            if not entries:
                break
            by_target = {}
            for entry in entries:
                by_target.setdefault(entry.target, []).append(entry)
            lanes = list(by_target.values())
            if len(lanes) == 1 or concurrency <= 1:
                for lane in lanes:
                    _replay_lane(outbox, client, lane, result, on_entry)
            else:
                with ThreadPoolExecutor(max_workers=min(concurrency, len(lanes))) as pool:
                    # One HTTP session per lane: requests' sessions are not thread-safe.
                    futures = [
                        pool.submit(_replay_lane, outbox, client.clone(), lane, result, on_entry) for lane in lanes
                    ]
                    for future in futures:
                        future.result()
    return result


def _replay_lane(outbox, client, lane, result, on_entry):
    """One target's entries, strictly in order; stops at the first unavailable answer."""
    for entry in lane:
        if result.stopped:
            return
        try:
            response = client.request(
                entry.method, entry.path, raw_body=entry.body, idempotency_key=entry.idempotency_key
            )
        except ServerUnavailable as exc:
            if exc.status is not None and exc.status not in UNAVAILABLE_STATUSES:
                attempts = outbox.note_attempt(entry)
                if attempts >= MAX_SERVER_ERRORS:
                    outbox.mark_failed(entry, ERR_SERVER_ERROR.format(reason=exc.reason, attempts=attempts))
                    result.count(failed=1)
            result.unavailable = exc
            return
        except ApiError as exc:
            if exc.status == 401:
                result.unauthorized = exc
                return
            outbox.mark_failed(entry, f"HTTP {exc.status}: {exc.message}")
            result.count(failed=1)
        else:
            outbox.mark_done(entry, response)
            result.count(sent=1)
        if on_entry is not None:
            on_entry(entry)
