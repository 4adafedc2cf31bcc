"""Storage: a database URL → ``Storage`` (runs, per-run recorders, the verdict cache, the read side's readers) on
SQLite or PostgreSQL.

SQLAlchemy 2.x with typed models; the schema is created and upgraded only by the Alembic migrations in
``storage/migrations``, applied when the database is opened. Every database error that reaches a caller
is an ``engine.errors.StorageError`` with one line naming the URL (password masked) and the cause.
"""

from __future__ import annotations

from engine.errors import StorageError
from storage.cache import SqlVerdictCache
from storage.db import DEFAULT_BUSY_TIMEOUT_MS, connect, head_revision, mask_url, migrate
from storage.recorder import RunRecorder
from storage.store import Storage

__all__ = [
    "RunRecorder",
    "SqlVerdictCache",
    "Storage",
    "StorageError",
    "head_revision",
    "mask_url",
    "open_storage",
]


def open_storage(db_url: str, *, create: bool = True, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> Storage:
    """Connect to ``db_url`` (SQLite in WAL mode, or PostgreSQL) and migrate its schema to the newest revision.

    ``create=False`` opens only an existing tradevet database (for read-only commands such as ``runs``
    and ``score``): a missing SQLite file or an empty database is an error instead of a new database.
    ``busy_timeout_ms`` is how long SQLite waits for another process's write lock before giving up.

    Raises: StorageError (one line: the URL with its password masked, and the cause).
    """
    engine, shown = connect(db_url, create=create, busy_timeout_ms=busy_timeout_ms)
    try:
        migrate(engine, shown, create=create, busy_timeout_ms=busy_timeout_ms)
    except BaseException:
        engine.dispose()
        raise
    return Storage(engine, shown, busy_timeout_ms=busy_timeout_ms)
