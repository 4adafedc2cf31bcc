"""Repositories: Storage (runs), RunRecorder (one run's slices) and SqlVerdictCache over one Engine.

In: pipeline value types (``SliceRecord``, ``Verdict``, ...); out: the same types loaded back, and
``RunInfo`` rows. Writes go through Core ``insert ... ON CONFLICT DO NOTHING`` statements built once per
``Storage`` and executed many rows per statement (flat lists of column values, executemany), one
transaction per slice or batch of slices, so recording the same slice twice changes nothing. Run-level
reads and updates use ORM sessions that are opened per call and passed explicitly; nothing here is global.
"""

from __future__ import annotations

import itertools
import logging
import operator
import os
import sqlite3
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, sessionmaker

from engine.errors import StorageError
from engine.types import (
    Bar,
    ContextPack,
    Decision,
    Event,
    Fill,
    GateResult,
    NewsItem,
    Outcome,
    ReviewRecord,
    Signal,
    SliceRecord,
    Trade,
    Verdict,
)
from storage import rows
from storage.db import WRITE, guard, is_memory
from storage.models import (
    RUN_MODES,
    RUN_SCOPED_TABLES,
    RUN_STATUSES,
    BarRow,
    Base,
    ContextPackRow,
    DecisionRow,
    EventRow,
    FillRow,
    GateResultRow,
    NewsItemRow,
    OutcomeRow,
    RunRow,
    SignalRow,
    TradeRow,
    VerdictCacheRow,
    VerdictRow,
)

__all__ = ["RESUMABLE", "RunInfo", "RunRecorder", "SqlVerdictCache", "Storage"]

log = logging.getLogger("tradevet.storage")

RESUMABLE = ("running", "stopped")
_CLAIM_CLASS = 0x74766E  # first key of the PostgreSQL advisory locks that claim a run name ("tvn")

_BARS: Table = BarRow.__table__  # type: ignore[assignment]
_SIGNALS: Table = SignalRow.__table__  # type: ignore[assignment]
_GATES: Table = GateResultRow.__table__  # type: ignore[assignment]
_PACKS: Table = ContextPackRow.__table__  # type: ignore[assignment]
_VERDICTS: Table = VerdictRow.__table__  # type: ignore[assignment]
_DECISIONS: Table = DecisionRow.__table__  # type: ignore[assignment]
_FILLS: Table = FillRow.__table__  # type: ignore[assignment]
_TRADES: Table = TradeRow.__table__  # type: ignore[assignment]
_OUTCOMES: Table = OutcomeRow.__table__  # type: ignore[assignment]
_EVENTS: Table = EventRow.__table__  # type: ignore[assignment]
_NEWS: Table = NewsItemRow.__table__  # type: ignore[assignment]
_RUNS: Table = RunRow.__table__  # type: ignore[assignment]
_CACHE: Table = VerdictCacheRow.__table__  # type: ignore[assignment]

# Write order of one slice: parents before the rows whose foreign keys point at them.
_WRITE_ORDER = ("bars", "signals", "gate_results", "context_packs", "verdicts", "decisions", "fills", "trades",
                "outcomes", "news_items")


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(dt: datetime) -> datetime:
    # SQLite hands back naive datetimes for DateTime(timezone=True), PostgreSQL its session zone;
    # we only ever write UTC, so both become the same aware UTC value.
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


@dataclass(frozen=True)
class RunInfo:
    """One row of ``runs``, as callers see it."""

    id: int
    name: str
    status: str  # running | finished | failed | stopped
    config_json: str
    config_hash: str
    seed: int
    reviewer_mode: str  # active | shadow | off
    created_at: datetime  # wall clock, UTC
    last_slice_ms: int | None
    starting_equity: float


def _info(r: RunRow) -> RunInfo:
    return RunInfo(r.id, r.name, r.status, r.config_json, r.config_hash, int(r.seed), r.reviewer_mode,
                   _aware(r.created_at), None if r.last_slice_ms is None else int(r.last_slice_ms),
                   float(r.starting_equity))


def _positional(dialect: Dialect) -> Dialect:
    """The same dialect compiling positional parameters (tuples bind fastest in both drivers)."""
    return type(dialect)(paramstyle="qmark" if dialect.name == "sqlite" else "format")


_PG_MAX_PARAMETERS = 65_535  # bind parameters per statement (the protocol counts them in 16 bits)


def _sqlite_max_variables() -> int:
    # SQLITE_MAX_VARIABLE_NUMBER's default: 999 before SQLite 3.32, 32766 since
    return 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


def _values_group(sql: str) -> tuple[str, str, str]:
    """``INSERT ... VALUES (?, ?) ON CONFLICT ...`` → (``INSERT ... VALUES ``, ``(?, ?)``, `` ON CONFLICT ...``)."""
    head, sep, rest = sql.partition(" VALUES ")
    depth = end = 0
    while end < len(rest):
        depth += (rest[end] == "(") - (rest[end] == ")")
        end += 1
        if depth == 0:
            break
    if not sep or not rest.startswith("(") or depth:
        raise RuntimeError(f"unexpected INSERT: {sql}")
    return head + sep, rest[:end], rest[end:]


class _Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` for one table, compiled once, executed with many rows at a time.

    Run-scoped rows arrive as one flat list of column values, row after row in the table's column order
    (``rows.COLUMNS``, from the ``rows.*_values`` functions), holding only str/int/float/bool/None, which
    both drivers bind natively. Their SQL is compiled once with positional parameters and the values go
    straight to the driver's executemany: SQLAlchemy's per-row parameter processing would otherwise cost as
    much as the database's own insert work, and bars are the hot path of a replay. Rows go
    ``ROWS_PER_STATEMENT`` at a time through one multi-row ``VALUES`` statement, the rest one by one (on
    SQLite a third less time per row than a statement per row, on PostgreSQL a third less for the whole
    replay; ``ON CONFLICT DO NOTHING`` applies to each row alike). Tables holding values the drivers bind
    differently (datetimes: the verdict cache) take the ordinary Core path with dicts.
    """

    ROWS_PER_STATEMENT = 100

    def __init__(self, table: Table, dialect: Dialect, *, raw: bool) -> None:
        ins = sqlite.insert if dialect.name == "sqlite" else postgresql.insert
        self.table = table.name
        self.stmt = ins(table).on_conflict_do_nothing()
        self.sql: str | None = None
        self.width = 0  # columns per row
        self.many_sql = ""
        self.rows_per_statement = 1
        if raw:
            compiled = self.stmt.compile(dialect=_positional(dialect))
            names = tuple(compiled.positiontup or ())
            if names != rows.COLUMNS[table.name]:
                raise RuntimeError(f"storage.rows.COLUMNS[{table.name!r}] is out of step with the table: "
                                   f"{rows.COLUMNS[table.name]} != {names}")
            self.sql = str(compiled)
            self.width = len(names)
            head, group, tail = _values_group(self.sql)
            if group.count("?" if dialect.name == "sqlite" else "%s") != self.width:
                raise RuntimeError(f"unexpected INSERT for {table.name}: {self.sql}")
            limit = _sqlite_max_variables() if dialect.name == "sqlite" else _PG_MAX_PARAMETERS
            k = max(1, min(self.ROWS_PER_STATEMENT, limit // self.width))
            self.rows_per_statement = k
            self.many_sql = head + ", ".join([group] * k) + tail

    def run(self, conn: Connection, data: list[Any]) -> None:
        """Insert ``data``: the flat column values of whole rows, or (the Core path) a list of dicts."""
        if self.sql is None:
            conn.execute(self.stmt, data)
            return
        width = self.width
        n = len(data)
        if n % width:
            raise ValueError(f"{self.table}: {n} values are not whole rows of {width}")
        start = 0
        k = self.rows_per_statement
        if k > 1:
            step = k * width
            start = n - n % step
            if start:
                conn.exec_driver_sql(self.many_sql, [tuple(data[i:i + step]) for i in range(0, start, step)])
        if start < n:
            conn.exec_driver_sql(self.sql, [tuple(data[i:i + width]) for i in range(start, n, width)])


class _Statements:
    """Statements built once per Storage, so that each is compiled once and reused for every slice."""

    def __init__(self, dialect: Dialect) -> None:
        self.insert: dict[str, _Insert] = {
            t.name: _Insert(t, dialect, raw=t is not _CACHE)
            for t in (_BARS, _SIGNALS, _GATES, _PACKS, _VERDICTS, _DECISIONS, _FILLS, _TRADES, _OUTCOMES, _NEWS,
                      _EVENTS, _CACHE)
        }
        last = _RUNS.c.last_slice_ms
        upto = bindparam("upto", type_=BigInteger)
        advances = or_(last.is_(None), last < upto)
        # last_slice_ms never moves backwards, and a slice recorded again leaves the run row untouched.
        self.advance_run = (
            update(_RUNS)
            .where(_RUNS.c.id == bindparam("rid"))
            .values(last_slice_ms=case((advances, upto), else_=last),
                    updated_at=case((advances, bindparam("now")), else_=_RUNS.c.updated_at))
        )
        self.max_event_seq = select(func.coalesce(func.max(_EVENTS.c.seq), 0)).where(
            _EVENTS.c.run_id == bindparam("rid"))
        c = _CACHE.c
        get = select(c.verdict).where(c.tier == bindparam("tier"), c.model == bindparam("model"),
                                      c.prompt_version == bindparam("pv"), c.context_hash == bindparam("h"))
        compiled = get.compile(dialect=_positional(dialect))
        # a cache lookup per reviewed signal: driver SQL skips SQLAlchemy's per-call statement work
        self.cache_get = str(compiled)
        self.cache_get_order = operator.itemgetter(*(compiled.positiontup or ()))
        self.events_at = select(_EVENTS.c.kind, _EVENTS.c.at_ms, _EVENTS.c.subject, _EVENTS.c.message,
                                _EVENTS.c.data).where(
            _EVENTS.c.run_id == bindparam("rid"), _EVENTS.c.at_ms.in_(bindparam("ats", expanding=True)))


# ============================================================================================ Storage


class Storage:
    """One database: runs, per-run recorders and the verdict cache. Build it with ``open_storage``."""

    def __init__(self, engine: Engine, url_masked: str, *, busy_timeout_ms: int) -> None:
        self.url_masked = url_masked
        self.engine = engine
        self.busy_timeout_ms = busy_timeout_ms
        # Writers announce themselves so that SQLite takes its write lock at BEGIN (see storage.db).
        self.writer = engine.execution_options(**{WRITE: True})
        self._read_sessions = sessionmaker(engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self.writer, expire_on_commit=False)
        self.statements = _Statements(engine.dialect)
        self._closed = False
        # Verdict-cache entries not yet written (see SqlVerdictCache.put), keyed like the table.
        self._cache_pending: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self._cache_lock = threading.Lock()
        self._claims: dict[str, Any] = {}  # run name → what holds its writer claim (see claim_run_name)
        # PostgreSQL: rows written since opening, and the count at which planner statistics are next refreshed
        self._rows_written = 0
        self._analyze_at = self.ANALYZE_FIRST_AT

    def __repr__(self) -> str:
        return f"Storage({self.url_masked!r})"

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ plumbing

    @contextmanager
    def guard(self, doing: str) -> Iterator[None]:
        """Database errors inside the block → one-line StorageError naming the URL and ``doing``."""
        if self._closed:
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

    # ---------------------------------------------------------------------------------------- runs

    def create_run(self, name: str, config_json: str, config_hash: str, seed: int, reviewer_mode: str,
                   starting_equity: float) -> int:
        """Insert a run with status ``running``. Returns its id."""
        _check(reviewer_mode, RUN_MODES, "reviewer_mode")
        now = _now()
        with self.write_session(f"cannot create run {name!r}") as s:
            row = RunRow(name=name, status="running", config_json=config_json, config_hash=config_hash, seed=seed,
                         reviewer_mode=reviewer_mode, created_at=now, updated_at=now, last_slice_ms=None,
                         starting_equity=starting_equity)
            s.add(row)
            s.flush()
            return int(row.id)

    def get_run(self, run_id: int) -> RunInfo:
        """Raises: StorageError when there is no such run."""
        with self.read_session(f"cannot read run {run_id}") as s:
            row = s.get(RunRow, run_id)
            if row is None:
                raise StorageError(f"no run {run_id} in {self.url_masked}")
            return _info(row)

    def find_resumable_run(self, name: str) -> RunInfo | None:
        """The latest run named ``name`` if it is still ``running`` (crashed) or ``stopped``; else None.

        Only the latest run of a name is considered: once a newer run of that name finished or failed,
        an older interrupted one is history, not something to continue.
        """
        with self.read_session(f"cannot look up run {name!r}") as s:
            row = s.scalars(select(RunRow).where(RunRow.name == name).order_by(RunRow.id.desc()).limit(1)).first()
            return _info(row) if row is not None and row.status in RESUMABLE else None

    def resolve_run(self, ref: str) -> RunInfo:
        """A run by id (``"12"``) or by name (the latest run of that name).

        Raises: StorageError ``no run 'x' in <url> (known: ...)``.
        """
        ref = str(ref).strip()
        with self.read_session(f"cannot look up run {ref!r}") as s:
            # only plain ASCII digits that fit a 64-bit id are ids; anything else is a name
            row = s.get(RunRow, int(ref)) if ref.isascii() and ref.isdigit() and len(ref) < 19 else None
            if row is None:
                row = s.scalars(select(RunRow).where(RunRow.name == ref).order_by(RunRow.id.desc()).limit(1)).first()
            if row is not None:
                return _info(row)
            names = list(s.scalars(select(RunRow.name).group_by(RunRow.name).order_by(func.max(RunRow.id).desc())))
        shown = ", ".join(names[:10]) + (f", … ({len(names) - 10} more)" if len(names) > 10 else "")
        raise StorageError(f"no run {ref!r} in {self.url_masked} (known: {shown or 'none'})")

    def list_runs(self) -> list[RunInfo]:
        """Every run, oldest first."""
        with self.read_session("cannot list runs") as s:
            return [_info(r) for r in s.scalars(select(RunRow).order_by(RunRow.id))]

    def set_run_status(self, run_id: int, status: str) -> None:
        _check(status, RUN_STATUSES, "status")
        self._update_run(run_id, f"cannot set the status of run {run_id}", status=status)

    def set_reviewer_mode(self, run_id: int, mode: str) -> None:
        _check(mode, RUN_MODES, "reviewer mode")
        self._update_run(run_id, f"cannot set the reviewer mode of run {run_id}", reviewer_mode=mode)

    def _update_run(self, run_id: int, doing: str, **values: Any) -> None:
        with self.write_session(doing) as s:
            done = s.execute(update(RunRow).where(RunRow.id == run_id).values(updated_at=_now(), **values))
            if done.rowcount == 0:  # type: ignore[attr-defined]
                raise StorageError(f"no run {run_id} in {self.url_masked}")

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

    # ------------------------------------------------------------------------------------ claims

    CLAIM_WAIT_S = 3.0

    def claim_run_name(self, name: str, *, wait_s: float | None = None) -> bool:
        """Become the one process writing runs named ``name`` in this database, until ``close``.

        Without it, a second ``tradevet paper`` of the same name would take the first one's run (status
        ``running``) for an interrupted one, resume it under its feet and mark it failed. The claim is an
        OS-level lock the operating system or the server drops with the process, so a run killed by SIGKILL
        is free again at once: PostgreSQL, a session advisory lock on its own connection; SQLite, a byte-range
        lock in ``<database file>-lock``; an in-memory database belongs to one process anyway. Waits up to
        ``wait_s`` (default ``CLAIM_WAIT_S``: the server may notice a killed client a moment late). Returns
        False when another process holds it. Raises: StorageError.
        """
        if name in self._claims:
            return True
        key = zlib.crc32(name.encode("utf-8"))
        deadline = time.monotonic() + (self.CLAIM_WAIT_S if wait_s is None else wait_s)
        while True:
            held = self._try_claim(key)
            if held is not None:
                self._claims[name] = held
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _try_claim(self, key: int) -> Any:
        """What holds the claim for ``key`` (a connection, a file descriptor, True), or None when taken."""
        url = self.engine.url
        if url.get_backend_name() == "postgresql":
            with self.guard("cannot claim the run name"):
                conn = self.engine.connect()
                try:
                    got = conn.exec_driver_sql(
                        f"SELECT pg_try_advisory_lock({_CLAIM_CLASS}, {key - 2**32 if key >= 2**31 else key})"
                    ).scalar()
                    conn.commit()
                except BaseException:
                    conn.close()
                    raise
            if got:
                return conn
            conn.close()
            return None
        if is_memory(url):
            return True
        try:
            import fcntl
        except ImportError:  # no POSIX locks (Windows): claims are not enforced there
            return True
        path = str(url.database).removeprefix("file:").split("?", 1)[0] + "-lock"
        with self.guard("cannot claim the run name"):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, key)
            except OSError:
                os.close(fd)
                return None
        return fd

    def _release_claims(self) -> None:
        for name, held in list(self._claims.items()):
            try:
                if isinstance(held, bool):
                    pass
                elif isinstance(held, int):
                    os.close(held)  # drops the byte-range lock
                else:
                    held.invalidate()  # ends the session at once, and its advisory lock with it
                    held.close()
            except Exception as e:  # never mask why we are closing
                log.warning("run name %r: releasing the writer claim failed: %s", name, e)
        self._claims.clear()

    # --------------------------------------------------------------------------------- components

    def recorder(self, run_id: int) -> RunRecorder:
        """The recorder of an existing run. Raises: StorageError when there is no such run."""
        self.get_run(run_id)
        return RunRecorder(self, run_id)

    def verdict_cache(self) -> SqlVerdictCache:
        return SqlVerdictCache(self)

    def table_counts(self, run_id: int | None = None, *, tables: Sequence[str] | None = None) -> dict[str, int]:
        """Rows per table: for one run (its run-scoped tables), or for the whole database; ``tables``: only
        these (counting a million-bar run's bars takes a while)."""
        self.flush()
        names = RUN_SCOPED_TABLES if run_id is not None else ("runs", *RUN_SCOPED_TABLES, "verdict_cache")
        if tables is not None:
            names = tuple(tables)
        out: dict[str, int] = {}
        with self.guard("cannot count rows"), self.engine.connect() as conn:
            for name in names:
                table = Base.metadata.tables[name]
                q = select(func.count()).select_from(table)
                if run_id is not None:
                    q = q.where(table.c.run_id == run_id)
                out[name] = int(conn.execute(q).scalar_one())
        return out

    def flush(self) -> None:
        """Write buffered verdict-cache entries now, in a transaction of their own."""
        pending = self.cache_rows()
        if pending:
            with self.guard("cannot write the verdict cache"), self.writer.begin() as conn:
                self.statements.insert["verdict_cache"].run(conn, pending)
            self.cache_written(pending)

    def cache_rows(self) -> list[dict[str, Any]]:
        """Buffered verdict-cache rows (a snapshot); pass them to ``cache_written`` once committed."""
        with self._cache_lock:
            return list(self._cache_pending.values())

    def cache_written(self, written: list[dict[str, Any]]) -> None:
        with self._cache_lock:
            for row in written:
                key = (row["tier"], row["model"], row["prompt_version"], row["context_hash"])
                if self._cache_pending.get(key) is row:
                    del self._cache_pending[key]

    def close(self) -> None:
        """Write what is buffered and release every connection. Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        except StorageError as e:
            # closing must not mask the error that made the caller close; a lost cache entry only
            # costs a fresh review later
            log.warning("verdict cache: %d entries not written: %s", len(self._cache_pending), e)
        finally:
            self._closed = True
            self._release_claims()
            self.engine.dispose()


def _check(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)} (got {value!r})")


# ======================================================================================== RunRecorder


class _Batch:
    """The rows of one or more slices, per table, in the order the pipeline produced them.

    Built slice by slice (``RunRecorder.new_batch``, ``add``) and written in one transaction
    (``RunRecorder.write_batch``). Each table's rows are kept as one flat list of column values (what
    ``_Insert.run`` takes), and a slice becomes rows as it is added: while a batch fills, it holds plain
    values rather than a tuple per row or the slice records, which the garbage collector would otherwise
    count and scan, over and over, during a long replay.
    """

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.values: dict[str, list[Any]] = {name: [] for name in _WRITE_ORDER}
        self.events: list[tuple[str, int, str, str, str]] = []
        self.rows = 0  # rows in values
        self.slices = 0  # slices added
        self.close_ms: int | None = None  # latest close among the slices added
        self.first_ms: int | None = None  # close of the first and of the last slice added (for error messages)
        self.last_ms: int | None = None

    def add(self, rec: SliceRecord) -> None:
        """Add a slice's rows (``rows`` counts them, events included: ``SliceRecord.row_count``).

        Raises: ValueError for a slice that cannot be recorded (an unsealed context pack), before adding any
        of its rows.
        """
        rid = self.run_id
        v = self.values
        packs = [rows.pack_values(rid, rv.pack) for rv in rec.reviews]  # refuses an unsealed pack up front
        ext = v["bars"].extend
        bar = rows.bar_values
        for b in rec.bars:
            ext(bar(rid, b))
        if rec.signals:
            reviewed = {rv.pack.signal.id for rv in rec.reviews}
            ext = v["signals"].extend
            for s in rec.signals:
                ext(rows.signal_values(rid, s, "reviewed" if s.id in reviewed else "blocked"))
        if rec.gate_results:
            rows.add_gate_values(v["gate_results"], rid, rec.gate_results)
        for rv, pack in zip(rec.reviews, packs, strict=True):
            sid = rv.pack.signal.id
            v["context_packs"].extend(pack)
            v["verdicts"].extend(rows.verdict_values(rid, sid, rv.verdict, rv.mode))
            v["decisions"].extend(rows.decision_values(rid, rv.decision))
        for table, items, values_of in (("fills", rec.fills, rows.fill_values),
                                        ("trades", rec.trades, rows.trade_values),
                                        ("outcomes", rec.outcomes, rows.outcome_values),
                                        ("news_items", rec.news, rows.news_values)):
            if items:
                ext = v[table].extend
                for item in items:
                    ext(values_of(rid, item))  # type: ignore[operator]
        if rec.events:
            self.events.extend(rows.event_key(e) for e in rec.events)
        if self.close_ms is None or rec.close_ms > self.close_ms:
            self.close_ms = rec.close_ms
        if self.first_ms is None:
            self.first_ms = rec.close_ms
        self.last_ms = rec.close_ms
        self.slices += 1
        self.rows += rec.row_count()


class RunRecorder:
    """Persistence of one run (implements ``engine.ports.Recorder``)."""

    def __init__(self, storage: Storage, run_id: int) -> None:
        self.storage = storage
        self.run_id = run_id

    def __repr__(self) -> str:
        return f"RunRecorder(run {self.run_id} in {self.storage.url_masked})"

    # -------------------------------------------------------------------------------------- writes

    def record_slice(self, record: SliceRecord) -> None:
        """Write everything of one slice in one transaction and advance ``runs.last_slice_ms``.

        Idempotent: recording the same slice again changes nothing. Raises: StorageError.
        """
        self.record_slices((record,))

    def record_slices(self, records: Sequence[SliceRecord]) -> None:
        """Write several slices in one transaction (batched replay); last_slice_ms = their latest close."""
        batch = self.new_batch()
        for rec in records:
            batch.add(rec)
        self.write_batch(batch)

    def new_batch(self) -> _Batch:
        """An empty batch: ``add`` slices to it, then ``write_batch`` it (what ``record_slices`` does in one go).

        Raises (``add``): ValueError for a slice that cannot be recorded (an unsealed context pack).
        """
        return _Batch(self.run_id)

    def write_batch(self, batch: _Batch) -> None:
        """Write a batch's slices in one transaction; last_slice_ms = their latest close. Raises: StorageError."""
        if not batch.slices:
            return
        self._write(batch, self.doing(batch))

    def doing(self, batch: _Batch) -> str:
        """What writing ``batch`` is, for error messages: "cannot record slices A..B of run N"."""
        first, last = batch.first_ms, batch.last_ms
        what = f"slice {first}" if batch.slices == 1 else f"slices {first}..{last}"
        return f"cannot record {what} of run {self.run_id}"

    def record_events(self, events: Sequence[Event]) -> None:
        """Append events outside a slice (run start, resume, ...). Sending the same events again adds nothing."""
        if not events:
            return
        batch = _Batch(self.run_id)
        batch.events.extend(rows.event_key(e) for e in events)
        self._write(batch, f"cannot record events of run {self.run_id}")

    def _write(self, batch: _Batch, doing: str) -> None:
        # Buffered verdict-cache entries ride along: one commit instead of one per reviewed signal.
        cached = self.storage.cache_rows()
        self.commit(batch, cached, doing)
        self.written(batch.rows, cached)

    def written(self, rows: int, cached: list[dict[str, Any]]) -> None:
        """Bookkeeping once ``commit`` of a batch of ``rows`` rows and the verdict-cache rows ``cached`` succeeded."""
        self.storage.cache_written(cached)
        self.storage.rows_written(rows)

    def commit(self, batch: _Batch, cached: list[dict[str, Any]], doing: str) -> None:
        """Write ``batch`` and the verdict-cache rows ``cached`` in one transaction (no bookkeeping: ``written``).

        Raises: StorageError naming ``doing`` (and the table, when one insert failed); nothing is written then.
        """
        st = self.storage.statements
        table: str | None = None
        try:
            with self.storage.guard(doing), self.storage.writer.begin() as conn:
                for table in _WRITE_ORDER:
                    data = batch.values[table]
                    if data:
                        st.insert[table].run(conn, data)
                table = "verdict_cache"
                if cached:
                    st.insert["verdict_cache"].run(conn, cached)
                table = "events"
                if batch.events:
                    self._write_events(conn, batch.events)
                table = "runs"
                if batch.close_ms is not None:
                    conn.execute(st.advance_run, {"rid": self.run_id, "upto": batch.close_ms, "now": _now()})
                table = None  # what fails from here on is the commit, not a table
        except StorageError as e:
            if table is None or "(table " in str(e):
                raise
            raise StorageError(f"{e} (table {table})") from e.__cause__

    def _write_events(self, conn: Connection, keys: list[tuple[str, int, str, str, str]]) -> None:
        # Events have no natural key, so "the same event" means equal in every field. Counted as a
        # multiset: an event sent twice in one call is kept twice, the same call repeated adds nothing.
        st = self.storage.statements
        ats = sorted({k[1] for k in keys})
        stored = Counter(tuple(r) for r in conn.execute(st.events_at, {"rid": self.run_id, "ats": ats}))
        seq = int(conn.execute(st.max_event_seq, {"rid": self.run_id}).scalar_one())
        new: list[Any] = []
        for key in keys:
            if stored[key] > 0:
                stored[key] -= 1
                continue
            seq += 1
            new.extend(rows.event_values(self.run_id, seq, key))
        if new:
            st.insert["events"].run(conn, new)

    # --------------------------------------------------------------------------------------- reads

    @contextmanager
    def _read(self, what: str) -> Iterator[Connection]:
        with self.storage.guard(f"cannot load {what} of run {self.run_id}"), self.storage.engine.connect() as conn:
            yield conn

    def last_slice_ms(self) -> int | None:
        with self._read("the last slice") as conn:
            v = conn.execute(select(_RUNS.c.last_slice_ms).where(_RUNS.c.id == self.run_id)).scalar_one_or_none()
        return None if v is None else int(v)

    def load_fills(self) -> list[Fill]:
        """The ledger, ordered by fill time then fill id."""
        q = select(_FILLS).where(_FILLS.c.run_id == self.run_id).order_by(_FILLS.c.filled_ms, _FILLS.c.id)
        with self._read("fills") as conn:
            return [rows.row_to_fill(r) for r in conn.execute(q)]

    def load_trades(self) -> list[Trade]:
        """Closed trades, ordered by close time then signal id."""
        q = select(_TRADES).where(_TRADES.c.run_id == self.run_id).order_by(_TRADES.c.closed_ms,
                                                                             _TRADES.c.signal_id)
        with self._read("trades") as conn:
            return [rows.row_to_trade(r) for r in conn.execute(q)]

    def _by_signal(self, table: Table, *extra_order: Any) -> Any:
        """Rows of ``table`` in the order of their signals (creation time, then id)."""
        return (
            select(table)
            .join(_SIGNALS, and_(_SIGNALS.c.run_id == table.c.run_id, _SIGNALS.c.id == table.c.signal_id))
            .where(table.c.run_id == self.run_id)
            .order_by(_SIGNALS.c.created_ms, _SIGNALS.c.id, *extra_order)
        )

    def load_outcomes(self) -> list[Outcome]:
        """Realized and shadow outcomes, in signal order."""
        with self._read("outcomes") as conn:
            return [rows.row_to_outcome(r) for r in conn.execute(self._by_signal(_OUTCOMES, _OUTCOMES.c.kind))]

    def load_signals(self) -> list[Signal]:
        """Every signal (blocked and reviewed), ordered by creation time then id."""
        q = select(_SIGNALS).where(_SIGNALS.c.run_id == self.run_id).order_by(_SIGNALS.c.created_ms, _SIGNALS.c.id)
        with self._read("signals") as conn:
            return [rows.row_to_signal(r) for r in conn.execute(q)]

    def load_gate_results(self) -> list[tuple[str, GateResult]]:
        """(signal id, result) pairs in signal order, each signal's gates in evaluation order."""
        with self._read("gate results") as conn:
            return [rows.row_to_gate(r) for r in conn.execute(self._by_signal(_GATES, _GATES.c.seq))]

    def load_decisions(self) -> dict[str, Decision]:
        with self._read("decisions") as conn:
            return {r.signal_id: rows.row_to_decision(r) for r in conn.execute(self._by_signal(_DECISIONS))}

    def load_reviews(self) -> list[ReviewRecord]:
        """Reviewed signals in signal order, each pack rebuilt from its stored JSON.

        Raises: StorageError when a rebuilt pack's hash differs from the stored one (the row was altered,
        or the pack format changed since it was recorded).
        """
        p, v, d = _PACKS, _VERDICTS, _DECISIONS
        q = (
            select(p.c.signal_id, p.c.hash, p.c.json.label("pack_json"),
                   *(c for c in v.c if c.name not in ("run_id", "signal_id")),
                   *(c for c in d.c if c.name not in ("run_id", "signal_id")))
            .join(v, and_(v.c.run_id == p.c.run_id, v.c.signal_id == p.c.signal_id))
            .join(d, and_(d.c.run_id == p.c.run_id, d.c.signal_id == p.c.signal_id))
            .join(_SIGNALS, and_(_SIGNALS.c.run_id == p.c.run_id, _SIGNALS.c.id == p.c.signal_id))
            .where(p.c.run_id == self.run_id)
            .order_by(_SIGNALS.c.created_ms, _SIGNALS.c.id)
        )
        with self._read("reviews") as conn:
            result = conn.execute(q).all()
        out: list[ReviewRecord] = []
        for r in result:
            pack = self._rebuild_pack(r.signal_id, r.pack_json, r.hash)
            decision = rows.row_to_decision(r)
            out.append(ReviewRecord(pack, rows.row_to_verdict(r), decision, r.mode))
        return out

    def _rebuild_pack(self, signal_id: str, text: str, stored_hash: str) -> ContextPack:
        return rebuild_pack(self.storage.url_masked, self.run_id, signal_id, text, stored_hash)

    def load_events(self) -> list[Event]:
        """The run's timeline, in the order recorded."""
        q = select(_EVENTS).where(_EVENTS.c.run_id == self.run_id).order_by(_EVENTS.c.seq)
        with self._read("events") as conn:
            return [rows.row_to_event(r) for r in conn.execute(q)]

    def load_bars(self, symbol: str | None = None, since_ms: int | None = None) -> list[Bar]:
        """Recorded bars ordered by close time then symbol; ``since_ms`` keeps bars closing at or after it."""
        b = _BARS
        q = select(b.c.symbol, b.c.open_ms, b.c.close_ms, b.c.open, b.c.high, b.c.low, b.c.close, b.c.volume).where(
            b.c.run_id == self.run_id)
        if symbol is not None:
            q = q.where(b.c.symbol == symbol)
        if since_ms is not None:
            q = q.where(b.c.close_ms >= since_ms)
        q = q.order_by(b.c.close_ms, b.c.symbol)
        with self._read("bars") as conn:
            # both backends hand back int and float for these columns: Bar(*row) needs no conversion
            return list(itertools.starmap(Bar, conn.execute(q)))

    def load_news(self) -> list[NewsItem]:
        """News items the run saw, in publication order."""
        q = select(_NEWS).where(_NEWS.c.run_id == self.run_id).order_by(_NEWS.c.published_ms, _NEWS.c.id)
        with self._read("news") as conn:
            return [rows.row_to_news(r) for r in conn.execute(q)]


def rebuild_pack(url_masked: str, run_id: int, signal_id: str, text: str, stored_hash: str) -> ContextPack:
    """A stored context pack, rebuilt from its JSON and checked against its stored hash.

    Raises: StorageError when the JSON cannot be read back or no longer hashes to what was stored.
    """
    where = f"{url_masked}: run {run_id}: context pack of signal {signal_id}"
    try:
        pack = ContextPack.from_json(text)
    except (ValueError, KeyError, TypeError) as e:
        raise StorageError(f"{where} cannot be read back ({type(e).__name__}: {e})") from None
    if pack.hash != stored_hash:
        raise StorageError(f"{where} does not match its stored hash (stored {stored_hash[:12]}…, rebuilt "
                           f"{pack.hash[:12]}…): the row was altered or the pack format changed")
    return pack


# ===================================================================================== SqlVerdictCache


class SqlVerdictCache:
    """Verdicts keyed by (tier, model, prompt version, context hash) (implements ``engine.ports.VerdictCache``).

    Shared by all runs of a database. The first verdict stored for a key stays: a cached answer must not
    change under a replay that relies on it. ``put`` buffers: entries are written with the next recorded
    slice (in its transaction), when ``FLUSH_AT`` are waiting, or at ``Storage.flush``/``close``; ``get``
    sees buffered entries at once. A crash can lose buffered entries, which only costs fresh reviews.
    """

    FLUSH_AT = 256
    _PREFIX = 16  # hex digits of the context hash kept in the in-memory key index

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        # Keys present in the table, read once at the first lookup: a miss — every signal of a new replay —
        # then costs a set lookup instead of a query. Entries another process writes after that are not
        # seen here (a cache miss: one fresh review), never a wrong verdict.
        self._index: set[tuple[str, str, str, str]] | None = None

    def _key(self, tier: str, model: str, prompt_version: str, context_hash: str) -> tuple[str, str, str, str]:
        return (tier, model, prompt_version, context_hash[: self._PREFIX])

    def _load_index(self) -> set[tuple[str, str, str, str]]:
        c = _CACHE.c
        q = select(c.tier, c.model, c.prompt_version, func.substr(c.context_hash, 1, self._PREFIX))
        with self.storage.guard("cannot read the verdict cache"), self.storage.engine.connect() as conn:
            return {tuple(r) for r in conn.execute(q)}  # type: ignore[misc]

    def get(self, tier: str, model: str, prompt_version: str, context_hash: str) -> Verdict | None:
        st = self.storage.statements
        key = (tier, model, prompt_version, context_hash)
        with self.storage._cache_lock:
            row = self.storage._cache_pending.get(key)
        if row is not None:
            text = row["verdict"]
        else:
            if self._index is None:
                self._index = self._load_index()
            if self._key(tier, model, prompt_version, context_hash) not in self._index:
                return None
            params = st.cache_get_order({"tier": tier, "model": model, "pv": prompt_version, "h": context_hash})
            with self.storage.guard("cannot read the verdict cache"), self.storage.engine.connect() as conn:
                text = conn.exec_driver_sql(st.cache_get, params).scalar()
        if text is None:
            return None
        try:
            return rows.verdict_from_json(text)
        except (ValueError, KeyError, TypeError) as e:
            # An unreadable entry costs one fresh review, not the run.
            log.warning("verdict cache: unreadable entry for %s/%s/%s/%s treated as a miss (%s)", tier, model,
                        prompt_version, context_hash[:12], e)
            return None

    def put(self, tier: str, model: str, prompt_version: str, context_hash: str, verdict: Verdict) -> None:
        row = {"tier": tier, "model": model, "prompt_version": prompt_version, "context_hash": context_hash,
               "verdict": rows.verdict_to_json(verdict), "created_at": _now()}
        if self._index is not None:
            self._index.add(self._key(tier, model, prompt_version, context_hash))
        with self.storage._cache_lock:
            self.storage._cache_pending.setdefault((tier, model, prompt_version, context_hash), row)
            waiting = len(self.storage._cache_pending)
        if waiting >= self.FLUSH_AT:
            self.storage.flush()

    def flush(self) -> None:
        """Write buffered entries now."""
        self.storage.flush()
