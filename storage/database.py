"""One database's plumbing, shared by the run store, the recorders and the verdict cache: the engine (and a writer
view of it), compiled statements, the buffer of verdict-cache rows, error mapping and planner statistics.

``storage.store.Storage`` is a ``Database`` with runs on top; ``RunRecorder`` and ``SqlVerdictCache`` need only
this, so they do not depend on the run store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from engine.errors import StorageError
from storage.db import WRITE, guard
from storage.models import RUN_SCOPED_TABLES
from storage.sql import Statements

__all__ = ["CacheBuffer", "Database"]

log = logging.getLogger("tradevet.storage")

Key = tuple[str, str, str, str]  # tier, model, prompt version, context hash


class CacheBuffer:
    """Verdict-cache rows waiting to be written, by key; the first row put for a key stays. Thread-safe."""

    def __init__(self) -> None:
        self._rows: dict[Key, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def get(self, key: Key) -> dict[str, Any] | None:
        with self._lock:
            return self._rows.get(key)

    def put(self, key: Key, row: dict[str, Any]) -> int:
        """Buffer ``row`` unless ``key`` is waiting already; returns how many rows are waiting."""
        with self._lock:
            self._rows.setdefault(key, row)
            return len(self._rows)

    def snapshot(self) -> list[dict[str, Any]]:
        """The waiting rows, to be written; pass them to ``written`` once they are committed."""
        with self._lock:
            return list(self._rows.values())

    def written(self, committed: list[dict[str, Any]]) -> None:
        """Forget the rows of a snapshot that was committed (a row put again since then stays)."""
        with self._lock:
            for row in committed:
                key = (row["tier"], row["model"], row["prompt_version"], row["context_hash"])
                if self._rows.get(key) is row:
                    del self._rows[key]


class Database:
    """One engine's connections and what every writer and reader of it shares."""

    ANALYZE_FIRST_AT = 500

    def __init__(self, engine: Engine, url_masked: str, *, busy_timeout_ms: int) -> None:
        self.url_masked = url_masked
        self.engine = engine
        self.busy_timeout_ms = busy_timeout_ms
        # Writers announce themselves so that SQLite takes its write lock at BEGIN (see storage.db).
        self.writer = engine.execution_options(**{WRITE: True})
        self._read_sessions = sessionmaker(engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self.writer, expire_on_commit=False)
        self.statements = Statements(engine.dialect)
        self.closed = False
        self.cache_buffer = CacheBuffer()  # verdict-cache entries not yet written (SqlVerdictCache.put)
        # PostgreSQL: rows written since opening, and the count at which planner statistics are next refreshed
        self._rows_written = 0
        self._analyze_at = self.ANALYZE_FIRST_AT

    # ------------------------------------------------------------------------------------ plumbing

    @contextmanager
    def guard(self, doing: str) -> Iterator[None]:
        """Database errors inside the block → one-line StorageError naming the URL and ``doing``."""
        if self.closed:
            raise StorageError(f"{self.url_masked}: {doing}: storage is closed")
        with guard(self.url_masked, doing, self.busy_timeout_ms):
            yield

    @contextmanager
    def read_session(self, doing: str) -> Iterator[Session]:
        with self.guard(doing), self._read_sessions() as session:
            yield session

    @contextmanager
    def write_session(self, doing: str) -> Iterator[Session]:
        with self.guard(doing), self._write_sessions.begin() as session:
            yield session

    # -------------------------------------------------------------------------------- statistics

    ANALYZE_FIRST_AT = 500

    def rows_written(self, n: int) -> None:
        """Count rows just committed; on PostgreSQL, refresh the planner statistics of the run tables each time
        the count doubles (500, 1,000, 2,000, ... rows: a few ANALYZEs per run).

        A new database has none until autovacuum gets round to it (a minute or more), and with none the
        planner joins packs, verdicts, decisions and signals by nested loops: reading the reviews back (the
        scorecard right after a replay, a resume after a crash) then takes time quadratic in their number
        (4 s for 268 reviews here; hours for 10,000). Statistics at most 2x stale keep the plans linear.
        A failed ANALYZE is logged and ignored: statistics are an optimisation.
        """
        self._rows_written += n
        if self.engine.dialect.name != "postgresql" or self._rows_written < self._analyze_at:
            return
        self._analyze_at = 2 * self._rows_written
        try:
            with self.guard("cannot refresh planner statistics"), self.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE " + ", ".join(RUN_SCOPED_TABLES))
        except StorageError as e:
            log.warning("%s", e)

    def flush(self) -> None:
        """Write buffered verdict-cache entries now, in a transaction of their own."""
        pending = self.cache_buffer.snapshot()
        if pending:
            with self.guard("cannot write the verdict cache"), self.writer.begin() as conn:
                self.statements.insert["verdict_cache"].run(conn, pending)
            self.cache_buffer.written(pending)

    def close(self) -> None:
        """Write what is buffered and release every connection. Idempotent."""
        if self.closed:
            return
        try:
            self.flush()
        except StorageError as e:
            # closing must not mask the error that made the caller close; a lost cache entry only
            # costs a fresh review later
            log.warning("verdict cache: %d entries not written: %s", len(self.cache_buffer), e)
        finally:
            self.closed = True
            self.engine.dispose()
