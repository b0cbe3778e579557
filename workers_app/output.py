"""Batches agent output into Postgres and onto the live layer.

A chatty agent must not cost one database write per line: output is kept in
memory until ``flush_chars`` characters or ``flush_seconds`` have gone by,
then written as one ordered chunk. Memory stays bounded by ``flush_chars``
plus the last piece received; the tail kept for pages is bounded too.
"""

import time

from django.conf import settings
from django.db import IntegrityError, reset_queries

from agentvine.errors import ExecutionFenced
from queue_app.outputs import execution_output_append


class OutputBuffer:
    def __init__(self, execution, *, flush_seconds=None, flush_chars=None, tail_chars=None):
        self.execution = execution
        self.flush_seconds = settings.AGENTVINE_OUTPUT_FLUSH_SECONDS if flush_seconds is None else flush_seconds
        self.flush_chars = settings.AGENTVINE_OUTPUT_FLUSH_CHARS if flush_chars is None else flush_chars
        self.tail_chars = settings.AGENTVINE_OUTPUT_TAIL_CHARS if tail_chars is None else tail_chars
        self.seq = execution.output_chunks
        self.tail = execution.output_tail
        self.total_chars = execution.output_chars
        self.writes = 0
        self._pending = []
        self._pending_chars = 0
        self._unsent = None  # (seq, text, tail) of a write that failed
        self._last_flush = time.monotonic()

    def add(self, text):
        if not text:
            return
        self._pending.append(text)
        self._pending_chars += len(text)
        if self._pending_chars >= self.flush_chars:
            self.flush()

    def maybe_flush(self):
        if (self._pending or self._unsent) and time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self):
        """Write what is pending as the next chunk. A write that fails (the
        database went away) is kept and sent again, as it was, by the next
        flush, before anything newer: output is never lost or reordered, and
        a batch whose first write did land (its reply was lost) is not
        stored twice (its seq is taken: the retry's unique violation says so)."""
        self._last_flush = time.monotonic()
        if self._unsent is not None:
            self._send(*self._unsent, retry=True)
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending = []
        self._pending_chars = 0
        self.tail = (self.tail + text)[-self.tail_chars :]
        self._unsent = (self.seq, text, self.tail)
        self.seq += 1
        self.total_chars += len(text)
        self._send(*self._unsent, retry=False)
        if settings.DEBUG:
            # DEBUG keeps every SQL statement, output text included, for the
            # whole Celery task: a long run would grow by its output's size.
            reset_queries()

    def _send(self, seq, text, tail, *, retry):
        try:
            self._write(seq=seq, text=text, tail=tail)
        except IntegrityError:
            if not retry:
                raise
        except ExecutionFenced:
            # The run is no longer the live one: its output has nowhere to go.
            self._unsent = None
            raise
        self._unsent = None
        self.writes += 1

    def _write(self, *, seq, text, tail):
        """Persist one batch (the remote worker sends it over HTTP instead)."""
        execution_output_append(execution=self.execution, seq=seq, text=text, tail=tail)
