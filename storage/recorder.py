"""Recording one run: its slices → rows, one transaction per slice or batch of whole slices; its rows → value types.

In: pipeline value types (``SliceRecord``, ``Verdict``, ...); out: the same types loaded back. Writes go
through the compiled ``storage.sql.Statements``, executed many rows per statement, so recording the same slice
twice changes nothing (``ON CONFLICT DO NOTHING``); buffered verdict-cache rows ride along in the same
transaction.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, and_, select

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
)
from storage import rows
from storage.sql import (
    BARS,
    DECISIONS,
    EVENTS,
    FILLS,
    GATES,
    NEWS,
    OUTCOMES,
    PACKS,
    RUNS,
    SIGNALS,
    TRADES,
    VERDICTS,
    WRITE_ORDER,
)

if TYPE_CHECKING:
    from storage.database import Database

__all__ = ["Batch", "RunRecorder", "rebuild_pack"]


def _now() -> datetime:
    return datetime.now(UTC)


class Batch:
    """The rows of one or more slices, per table, in the order the pipeline produced them.

    Built slice by slice (``RunRecorder.new_batch``, ``add``) and written in one transaction
    (``RunRecorder.write_batch``). Each table's rows are kept as one flat list of column values (what
    ``Insert.run`` takes), and a slice becomes rows as it is added: while a batch fills, it holds plain
    values rather than a tuple per row or the slice records, which the garbage collector would otherwise
    count and scan, over and over, during a long replay.
    """

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.values: dict[str, list[Any]] = {name: [] for name in WRITE_ORDER}
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
    """Persistence of one run (implements ``engine.ports.Recorder``): writes in the caller's process."""

    def __init__(self, storage: Database, run_id: int) -> None:
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

    def new_batch(self) -> Batch:
        """An empty batch: ``add`` slices to it, then ``write_batch`` it (what ``record_slices`` does in one go).

        Raises (``add``): ValueError for a slice that cannot be recorded (an unsealed context pack).
        """
        return Batch(self.run_id)

    def write_batch(self, batch: Batch) -> None:
        """Write a batch's slices in one transaction; last_slice_ms = their latest close. Raises: StorageError."""
        if not batch.slices:
            return
        self._write(batch, self.doing(batch))

    def close(self) -> None:
        """Nothing waits: every batch was committed by ``write_batch``."""

    def abort(self) -> None:
        """Nothing waits: every batch was committed by ``write_batch``."""

    def doing(self, batch: Batch) -> str:
        """What writing ``batch`` is, for error messages: "cannot record slices A..B of run N"."""
        first, last = batch.first_ms, batch.last_ms
        what = f"slice {first}" if batch.slices == 1 else f"slices {first}..{last}"
        return f"cannot record {what} of run {self.run_id}"

    def _write(self, batch: Batch, doing: str) -> None:
        # Buffered verdict-cache entries ride along: one commit instead of one per reviewed signal.
        cached = self.storage.cache_buffer.snapshot()
        self.commit(batch, cached, doing)
        self.written(batch.rows, cached)

    def written(self, rows: int, cached: list[dict[str, Any]]) -> None:
        """Bookkeeping once ``commit`` of a batch of ``rows`` rows and the verdict-cache rows ``cached`` succeeded."""
        self.storage.cache_buffer.written(cached)
        self.storage.rows_written(rows)

    def commit(self, batch: Batch, cached: list[dict[str, Any]], doing: str) -> None:
        """Write ``batch`` and the verdict-cache rows ``cached`` in one transaction (no bookkeeping: ``written``).

        Raises: StorageError naming ``doing`` (and the table, when one insert failed); nothing is written then.
        """
        st = self.storage.statements
        table: str | None = None
        try:
            with self.storage.guard(doing), self.storage.writer.begin() as conn:
                for table in WRITE_ORDER:
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
            v = conn.execute(select(RUNS.c.last_slice_ms).where(RUNS.c.id == self.run_id)).scalar_one_or_none()
        return None if v is None else int(v)

    def load_fills(self) -> list[Fill]:
        """The ledger, ordered by fill time then fill id."""
        q = select(FILLS).where(FILLS.c.run_id == self.run_id).order_by(FILLS.c.filled_ms, FILLS.c.id)
        with self._read("fills") as conn:
            return [rows.row_to_fill(r) for r in conn.execute(q)]

    def load_trades(self) -> list[Trade]:
        """Closed trades, ordered by close time then signal id."""
        q = select(TRADES).where(TRADES.c.run_id == self.run_id).order_by(TRADES.c.closed_ms,
                                                                             TRADES.c.signal_id)
        with self._read("trades") as conn:
            return [rows.row_to_trade(r) for r in conn.execute(q)]

    def _by_signal(self, table: Table, *extra_order: Any) -> Any:
        """Rows of ``table`` in the order of their signals (creation time, then id)."""
        return (
            select(table)
            .join(SIGNALS, and_(SIGNALS.c.run_id == table.c.run_id, SIGNALS.c.id == table.c.signal_id))
            .where(table.c.run_id == self.run_id)
            .order_by(SIGNALS.c.created_ms, SIGNALS.c.id, *extra_order)
        )

    def load_outcomes(self) -> list[Outcome]:
        """Realized and shadow outcomes, in signal order."""
        with self._read("outcomes") as conn:
            return [rows.row_to_outcome(r) for r in conn.execute(self._by_signal(OUTCOMES, OUTCOMES.c.kind))]

    def load_signals(self) -> list[Signal]:
        """Every signal (blocked and reviewed), ordered by creation time then id."""
        q = select(SIGNALS).where(SIGNALS.c.run_id == self.run_id).order_by(SIGNALS.c.created_ms, SIGNALS.c.id)
        with self._read("signals") as conn:
            return [rows.row_to_signal(r) for r in conn.execute(q)]

    def load_gate_results(self) -> list[tuple[str, GateResult]]:
        """(signal id, result) pairs in signal order, each signal's gates in evaluation order."""
        with self._read("gate results") as conn:
            return [rows.row_to_gate(r) for r in conn.execute(self._by_signal(GATES, GATES.c.seq))]

    def load_decisions(self) -> dict[str, Decision]:
        with self._read("decisions") as conn:
            return {r.signal_id: rows.row_to_decision(r) for r in conn.execute(self._by_signal(DECISIONS))}

    def load_reviews(self) -> list[ReviewRecord]:
        """Reviewed signals in signal order, each pack rebuilt from its stored JSON.

        Raises: StorageError when a rebuilt pack's hash differs from the stored one (the row was altered,
        or the pack format changed since it was recorded).
        """
        p, v, d = PACKS, VERDICTS, DECISIONS
        q = (
            select(p.c.signal_id, p.c.hash, p.c.json.label("pack_json"),
                   *(c for c in v.c if c.name not in ("run_id", "signal_id")),
                   *(c for c in d.c if c.name not in ("run_id", "signal_id")))
            .join(v, and_(v.c.run_id == p.c.run_id, v.c.signal_id == p.c.signal_id))
            .join(d, and_(d.c.run_id == p.c.run_id, d.c.signal_id == p.c.signal_id))
            .join(SIGNALS, and_(SIGNALS.c.run_id == p.c.run_id, SIGNALS.c.id == p.c.signal_id))
            .where(p.c.run_id == self.run_id)
            .order_by(SIGNALS.c.created_ms, SIGNALS.c.id)
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
        q = select(EVENTS).where(EVENTS.c.run_id == self.run_id).order_by(EVENTS.c.seq)
        with self._read("events") as conn:
            return [rows.row_to_event(r) for r in conn.execute(q)]

    def load_bars(self, symbol: str | None = None, since_ms: int | None = None) -> list[Bar]:
        """Recorded bars ordered by close time then symbol; ``since_ms`` keeps bars closing at or after it."""
        b = BARS
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
        q = select(NEWS).where(NEWS.c.run_id == self.run_id).order_by(NEWS.c.published_ms, NEWS.c.id)
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
