"""SQL for recording: per-table ``INSERT ... ON CONFLICT DO NOTHING`` statements compiled once, executed many rows at
a time, and the few other statements every slice or lookup runs (in: a dialect; out: ``Statements``).

Kept apart from what the statements are used for (``storage.recorder``, ``storage.cache``): splicing multi-row
``VALUES`` groups into compiled SQL is the one place this package writes SQL text by hand.
"""

from __future__ import annotations

import operator
import sqlite3
from typing import Any

from sqlalchemy import BigInteger, Connection, Table, bindparam, case, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from storage import rows
from storage.models import (
    BarRow,
    ContextPackRow,
    DecisionRow,
    EventRow,
    FillRow,
    GateResultRow,
    NewsItemRow,
    OutcomeRow,
    PackDigestRow,
    RunRow,
    SignalRow,
    TradeRow,
    VerdictCacheRow,
    VerdictRow,
)

__all__ = ["WRITE_ORDER", "Insert", "Statements"]

BARS: Table = BarRow.__table__  # type: ignore[assignment]
SIGNALS: Table = SignalRow.__table__  # type: ignore[assignment]
GATES: Table = GateResultRow.__table__  # type: ignore[assignment]
PACKS: Table = ContextPackRow.__table__  # type: ignore[assignment]
VERDICTS: Table = VerdictRow.__table__  # type: ignore[assignment]
DECISIONS: Table = DecisionRow.__table__  # type: ignore[assignment]
FILLS: Table = FillRow.__table__  # type: ignore[assignment]
TRADES: Table = TradeRow.__table__  # type: ignore[assignment]
OUTCOMES: Table = OutcomeRow.__table__  # type: ignore[assignment]
EVENTS: Table = EventRow.__table__  # type: ignore[assignment]
NEWS: Table = NewsItemRow.__table__  # type: ignore[assignment]
RUNS: Table = RunRow.__table__  # type: ignore[assignment]
DIGESTS: Table = PackDigestRow.__table__  # type: ignore[assignment]
CACHE: Table = VerdictCacheRow.__table__  # type: ignore[assignment]

# Write order of one slice: parents before the rows whose foreign keys point at them.
WRITE_ORDER = ("bars", "signals", "gate_results", "context_packs", "verdicts", "decisions", "fills", "trades",
                "outcomes", "news_items")


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


class Insert:
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


class Statements:
    """Statements built once per Storage, so that each is compiled once and reused for every slice."""

    def __init__(self, dialect: Dialect) -> None:
        self.insert: dict[str, Insert] = {
            t.name: Insert(t, dialect, raw=t is not CACHE)
            for t in (BARS, SIGNALS, GATES, PACKS, VERDICTS, DECISIONS, FILLS, TRADES, OUTCOMES, NEWS,
                      EVENTS, CACHE, DIGESTS)
        }
        last = RUNS.c.last_slice_ms
        upto = bindparam("upto", type_=BigInteger)
        advances = or_(last.is_(None), last < upto)
        # last_slice_ms never moves backwards, and a slice recorded again leaves the run row untouched.
        self.advance_run = (
            update(RUNS)
            .where(RUNS.c.id == bindparam("rid"))
            .values(last_slice_ms=case((advances, upto), else_=last),
                    updated_at=case((advances, bindparam("now")), else_=RUNS.c.updated_at))
        )
        self.max_event_seq = select(func.coalesce(func.max(EVENTS.c.seq), 0)).where(
            EVENTS.c.run_id == bindparam("rid"))
        c = CACHE.c
        get = select(c.verdict).where(c.tier == bindparam("tier"), c.model == bindparam("model"),
                                      c.prompt_version == bindparam("pv"), c.context_hash == bindparam("h"))
        compiled = get.compile(dialect=_positional(dialect))
        # a cache lookup per reviewed signal: driver SQL skips SQLAlchemy's per-call statement work
        self.cache_get = str(compiled)
        self.cache_get_order = operator.itemgetter(*(compiled.positiontup or ()))
        self.events_at = select(EVENTS.c.kind, EVENTS.c.at_ms, EVENTS.c.subject, EVENTS.c.message,
                                EVENTS.c.data).where(
            EVENTS.c.run_id == bindparam("rid"), EVENTS.c.at_ms.in_(bindparam("ats", expanding=True)))
