"""Connecting: a database URL → a configured Engine with an up-to-date schema, or one-line ``StorageError``s.

Everything that can go wrong between us and the database (bad URL, missing driver, missing directory,
locked file, unreachable server, schema newer than the code) is turned into ``StorageError`` here, with
the URL (password masked) and the cause on one line.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from engine.errors import StorageError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_MS",
    "MIGRATIONS_DIR",
    "SCHEMA_REVISION",
    "connect",
    "describe_error",
    "guard",
    "head_revision",
    "mask_url",
    "migrate",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The newest revision in migrations/versions (a test keeps the two equal). Knowing it without Alembic
# lets an up-to-date database open without importing Alembic, which costs ~0.3 s per command.
SCHEMA_REVISION = "0006"
DEFAULT_BUSY_TIMEOUT_MS = 5_000
SUPPORTED_BACKENDS = ("sqlite", "postgresql")
WRITE = "tradevet_write"  # execution option: this transaction will write (SQLite takes the lock up front)
_MIGRATION_LOCK = 0x74726164657665  # PostgreSQL advisory lock key held while migrating ("tradeve")


# ------------------------------------------------------------------------------------------------ URLs


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***`` (also for URLs SQLAlchemy cannot parse)."""
    try:
        u = url if isinstance(url, URL) else make_url(url)
        return u.render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(//[^/:@]*:)[^/@]*@", r"\1***@", str(url))


def is_memory(u: URL) -> bool:
    """Whether a SQLite URL names an in-memory database (one process's own, gone with it)."""
    return u.database in (None, "", ":memory:") or u.query.get("mode") == "memory"


def _sqlite_path_problem(u: URL, *, create: bool) -> str | None:
    """Why a SQLite file URL cannot work, checked on the file system before SQLite's vaguer message."""
    if is_memory(u) or u.query.get("uri") or str(u.database).startswith("file:"):
        return None
    path = Path(str(u.database))
    parent = path.parent
    if path.is_dir():
        return f"cannot open database: {path} is a directory"
    if not path.exists():
        if not parent.exists():
            return f"cannot open database: directory {parent} does not exist"
        if not parent.is_dir():
            return f"cannot open database: {parent} is not a directory"
        if not create:
            return f"no database at {path} (the file does not exist)"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"cannot create database: directory {parent} is not writable"
        return None
    if not os.access(path, os.R_OK):
        return f"cannot open database: {path} is not readable"
    # WAL needs to create the -wal and -shm files next to the database even to read it.
    if not os.access(path, os.W_OK) or not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot open database: {path} or its directory is not writable (WAL mode needs both)"
    return None


# ------------------------------------------------------------------------------------------- errors


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        line = line.strip()
        if line:
            return line
    return "unknown error"


def _cause(exc: BaseException, busy_timeout_ms: int) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = _first_line(str(orig))
    low = text.lower()
    if isinstance(orig, sqlite3.Error) or "sqlite" in type(orig).__module__:
        if "locked" in low or "busy" in low:
            return f"database is locked by another process (gave up after waiting {busy_timeout_ms} ms)"
        if "unable to open database file" in low:
            return "cannot open database file (check that the directory exists and is writable)"
        if "readonly" in low or "read-only" in low:
            return "database is read-only (check the permissions of the file and its directory)"
        if "file is not a database" in low:
            return "the file is not an SQLite database"
        if "disk is full" in low:
            return "the disk is full"
    if isinstance(exc, sa_exc.IntegrityError):
        return f"integrity error: {text}"
    if isinstance(exc, sa_exc.NoSuchModuleError):
        return f"no driver for this URL ({text})"
    if isinstance(exc, ModuleNotFoundError):
        hint = "; for PostgreSQL: pip install 'psycopg[binary]'" if "psycopg" in text else ""
        return f"database driver not installed ({text}){hint}"
    if isinstance(exc, sa_exc.ArgumentError):
        return f"invalid database URL ({text})"
    return text


def describe_error(url_masked: str, exc: BaseException, *, doing: str = "",
                   busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> StorageError:
    """A one-line StorageError: ``<url>: <what we were doing>: <cause>``."""
    what = f"{doing}: " if doing else ""
    return StorageError(f"{url_masked}: {what}{_cause(exc, busy_timeout_ms)}")


# Errors that come from the database or its driver; our own programming errors pass through untouched.
DB_ERRORS: tuple[type[BaseException], ...] = (sa_exc.SQLAlchemyError, sqlite3.Error, OSError)


@contextmanager
def guard(url_masked: str, doing: str = "", busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> Iterator[None]:
    """Map database errors raised inside the block to StorageError (StorageError itself passes through)."""
    try:
        yield
    except StorageError:
        raise
    except DB_ERRORS as e:
        raise describe_error(url_masked, e, doing=doing, busy_timeout_ms=busy_timeout_ms) from e


# ------------------------------------------------------------------------------------------- engine


def _install_sqlite_events(engine: Engine, busy_timeout_ms: int, memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it skips BEGIN before SELECT and DDL),
        # so that a slice's reads and writes and a migration's DDL are really one transaction.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if not memory:
                # WAL: readers (reports, `tradevet runs`) never block the writer and vice versa.
                cur.execute("PRAGMA journal_mode = WAL")
            # NORMAL is durable across application crashes in WAL mode; only a power loss may drop
            # the last commits, which replay regenerates.
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock at BEGIN, so busy_timeout applies; a deferred transaction
        # that upgrades to a writer later fails at once with "database is locked" in WAL mode.
        if conn.get_execution_options().get(WRITE):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def connect(db_url: str, *, create: bool = True,
            busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> tuple[Engine, str]:
    """Build the engine for ``db_url`` and check it answers. Returns (engine, masked URL).

    Raises: StorageError (bad URL, unsupported backend, missing driver, missing file or directory,
    unreachable server).
    """
    shown = mask_url(db_url)
    try:
        u = make_url(db_url)
    except sa_exc.ArgumentError as e:
        raise StorageError(f"{shown}: invalid database URL (expected e.g. sqlite:///tradevet.db or "
                           f"postgresql://user:pass@host/db): {_first_line(str(e))}") from None
    backend = u.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise StorageError(f"{shown}: unsupported database backend {backend!r} (use sqlite or postgresql)")
    kwargs: dict[str, Any] = {}
    memory = backend == "sqlite" and is_memory(u)
    if backend == "sqlite":
        problem = _sqlite_path_problem(u, create=create)
        if problem:
            raise StorageError(f"{shown}: {problem}")
        if memory:
            # One shared connection: otherwise every pooled connection would see its own empty database.
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        kwargs.update(pool_pre_ping=True)
    try:
        engine = create_engine(u, **kwargs)
    except (sa_exc.SQLAlchemyError, ImportError) as e:
        raise describe_error(shown, e, doing="cannot connect") from None
    if backend == "sqlite":
        _install_sqlite_events(engine, busy_timeout_ms, memory)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except DB_ERRORS as e:
        engine.dispose()
        raise describe_error(shown, e, doing="cannot open database", busy_timeout_ms=busy_timeout_ms) from None
    return engine, shown


# ------------------------------------------------------------------------------------------ migrate


def _alembic_config(connection: Connection | None = None) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # The connection, not a URL: the migration then runs in our transaction with our pragmas.
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest schema revision in ``storage/migrations`` (asks Alembic)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "storage/migrations has no revisions"
    return head


def _stored_revisions(conn: Connection, tables: set[str]) -> list[str]:
    if "alembic_version" not in tables:
        return []
    return [str(r[0]) for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]


def migrate(engine: Engine, url_masked: str, *, create: bool = True,
            busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> str:
    """Bring the schema to the newest revision, in one transaction. Returns the revision.

    Raises: StorageError when the database is at a revision this code does not know (newer code wrote
    it), when it holds foreign tables but no tradevet schema, or, with ``create=False``, when it has no
    tradevet schema at all.
    """
    with guard(url_masked, "cannot migrate the schema", busy_timeout_ms):
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            stored = _stored_revisions(conn, tables)
        if stored == [SCHEMA_REVISION]:
            return SCHEMA_REVISION
        from alembic import command
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(_alembic_config())
        head = script.get_current_head() or SCHEMA_REVISION
        for current in stored:
            try:
                known = script.get_revision(current) is not None
            except Exception:  # alembic raises several kinds for an id it has never seen
                known = False
            if not known:
                raise StorageError(f"{url_masked}: database schema is at revision {current}, newer than this "
                                   f"tradevet (knows up to {head}): upgrade tradevet")
        if stored == [head]:
            return head
        if not stored and tables - {"alembic_version"}:
            raise StorageError(f"{url_masked}: not a tradevet database (it has tables {', '.join(sorted(tables))} "
                               f"but no schema revision)")
        if not stored and not create:
            raise StorageError(f"{url_masked}: no tradevet schema in this database (run `tradevet paper` to "
                               f"create one)")
        with engine.execution_options(**{WRITE: True}).begin() as conn:
            if conn.dialect.name == "postgresql":
                # Two processes opening a new database at once would both create the tables, and the second
                # fail on PostgreSQL's catalog. The second waits here instead; Alembic then reads the revision
                # the first committed and has nothing left to do. (SQLite: BEGIN IMMEDIATE serialises.)
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            command.upgrade(_alembic_config(conn), "head")
    return head
