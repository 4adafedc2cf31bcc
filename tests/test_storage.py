"""Storage tests: SliceRecords → SQLite (and PostgreSQL when TRADEVET_PG_URL is set) → the same values back.

TRADEVET_PG_URL must name a throwaway database: every PostgreSQL test drops the tradevet tables there first.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, inspect, text

import storage.rows
import storage.sql
from engine.errors import StorageError
from engine.types import (
    Action,
    Bar,
    ContextPack,
    CorrelatedPosition,
    Decision,
    Event,
    ExitReason,
    Fill,
    FillKind,
    GateResult,
    NewsCategory,
    NewsFlag,
    NewsItem,
    Outcome,
    OutcomeKind,
    RegimeInfo,
    RegimeTag,
    ReviewRecord,
    Side,
    Signal,
    SliceRecord,
    TierAttempt,
    Trade,
    TradeStats,
    TradeSummary,
    Verdict,
    VerdictKind,
)
from storage import RunRecorder, Storage, head_revision, open_storage
from storage.db import SCHEMA_REVISION
from storage.models import RUN_SCOPED_TABLES, Base
from tests.conftest import PG_URL  # noqa: F401 - the db_url fixture lives there

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
TF = 300_000  # 5m bars
ALL_TABLES = {"runs", *RUN_SCOPED_TABLES, "verdict_cache"}


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def store(db_url: str) -> Iterator[Storage]:
    s = open_storage(db_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tv.db'}"


def _new_run(store: Storage, name: str = "demo", mode: str = "active") -> RunRecorder:
    run_id = store.create_run(name, f'{{"run": {{"name": "{name}"}}}}', "cafe0123", 7, mode, 10_000.0)
    return store.recorder(run_id)


# ------------------------------------------------------------------------------------ sample values


def _bars(t: int) -> tuple[Bar, ...]:
    return (
        Bar("BTC/USDT", t - TF, t, 42_000.5, 42_310.0, 41_950.25, 42_200.125, 12.5),
        Bar("ETH/USDT", t - TF, t, 2_250.0, 2_262.5, 2_241.0, 2_255.75, 310.0),
    )


def _signal(sid: str, t: int, side: Side = Side.LONG) -> Signal:
    return Signal(id=sid, strategy_id="sma_fast", symbol="BTC/USDT", side=side, created_ms=t, entry=42_200.125,
                  stop_loss=41_800.0 if side is Side.LONG else 42_600.0,
                  take_profit=43_000.25 if side is Side.LONG else 41_400.0, size_hint=0.1, timeframe="5m",
                  tags=("cross", "atr_stop"))


def _pack(sig: Signal) -> ContextPack:
    return ContextPack.build(
        signal=sig,
        recent_trades=(TradeSummary("ETH/USDT", Side.SHORT, T0 - 50 * TF, T0 - 20 * TF, -1.25, -0.8, "stop"),),
        trade_stats=TradeStats(count=1, win_rate=0.0, loss_streak=1),
        regime=RegimeInfo(RegimeTag.TRENDING, 1.31, 0.62, 71.5, 96, 8),
        correlated=(CorrelatedPosition("ETH/USDT", Side.LONG, 9.5, 0.83, 0.4, "donchian"),),
        news=(NewsFlag(NewsCategory.LISTING, 42.0, "Exchange lists BTC perpetual", "wire"),),
        gate_note="24h quote volume 3.1M ≥ 1M; 2/5 slots used; no cooldown",
        equity=10_123.45,
    )


def _verdict(kind: VerdictKind = VerdictKind.MODIFY) -> Verdict:
    return Verdict(
        verdict=kind, confidence=0.72, rationale="trend intact but correlated ETH long", modified_size_pct=50.0,
        modified_sl=41_900.0, source="sonnet", tier="sonnet", model="claude-sonnet-4-6", prompt_version="v3",
        latency_ms=812.5, input_tokens=1_850, output_tokens=64, cached_tokens=1_500, cost_usd=0.00123,
        error="", raw_reply='{"verdict":"modify","confidence":0.72}',
        attempts=(TierAttempt("gpt", False, "timeout", 8000.0, "deadline 8s"),
                  TierAttempt("sonnet", True, "ok", 812.5)),
    )


def _review(sig: Signal, mode: str = "active") -> ReviewRecord:
    decision = Decision(sig.id, Action.EXECUTE, 50.0, 41_900.0, sig.take_profit, ("size 50% of signal",), "modify")
    return ReviewRecord(_pack(sig), _verdict(), decision, mode)


def _slice(t: int = T0, *, n: int = 0) -> SliceRecord:
    """One slice with a row for every table: a reviewed signal and a blocked one, fills, a trade, ..."""
    a, b = _signal(f"sma_fast:BTC/USDT:{t}:{n}", t), _signal(f"sma_fast:BTC/USDT:{t}:{n}b", t, Side.SHORT)
    gates = ((a.id, GateResult("min_volume", True, "24h quote volume 3.1M ≥ 1M")),
             (a.id, GateResult("cooldown", True, "no cooldown")),
             (b.id, GateResult("min_volume", True, "ok")),
             (b.id, GateResult("cooldown", False, "cooldown 6 bars", until_ms=t + 6 * TF)))
    fills = (Fill(f"deposit:{n}", "", "USDT", Side.LONG, FillKind.DEPOSIT, t - TF, 1.0, 1.0, 10_000.0, 0.0, "deposit"),
             Fill(f"{a.id}:entry", a.id, "BTC/USDT", Side.LONG, FillKind.ENTRY, t, 42_200.0, 42_221.1, 0.0118,
                  0.4982, "next_open"),
             Fill(f"{a.id}:exit", a.id, "BTC/USDT", Side.LONG, FillKind.EXIT, t + TF, 41_900.0, 41_850.0, 0.0118,
                  0.4938, "stop", ambiguous=True, gap=True))
    trade = Trade(a.id, "sma_fast", "BTC/USDT", Side.LONG, 0.0118, 42_221.1, 41_850.0, t, t + TF, -5.37, -1.078,
                  -0.88, 0.992, ExitReason.STOP, 1, ambiguous=True)
    outcomes = (Outcome(a.id, OutcomeKind.REALIZED, True, -1.078, -0.88, "stop", True, t, t + TF, "realized"),
                Outcome(a.id, OutcomeKind.SHADOW, False, note="gap beyond the stop"))
    events = (Event("breaker", t, "gpt", "closed → open after 5 failures", (("failures", 5), ("tier", "gpt"))),
              Event("retire", t, "reviewer", "veto precision 0.41 < 0.50: shadow mode",
                    (("precision", 0.41), ("vetoes", 52))))
    news = (NewsItem(f"n{n}-{t}", t - 60_000, ("BTC", "ETH/USDT"), "Exchange lists BTC perpetual", "wire",
                     NewsCategory.LISTING),)
    return SliceRecord(close_ms=t, bars=_bars(t), signals=(a, b), gate_results=gates, reviews=(_review(a),),
                       fills=fills, trades=(trade,), outcomes=outcomes, events=events, news=news)


def _dump(store: Storage) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, in a stable order, for before/after comparisons."""
    out: dict[str, list[tuple[object, ...]]] = {}
    with store.engine.connect() as conn:
        for name in sorted(ALL_TABLES):
            table = Base.metadata.tables[name]
            present = {c["name"] for c in sa.inspect(conn).get_columns(name)}
            # the columns every revision has (0004 added runs.kind and runs.parent_id)
            cols = [c for c in table.columns if c.name in present and (name, c.name) not in _ADDED_BY_0004]
            out[name] = sorted((tuple(r) for r in conn.execute(sa.select(*cols))), key=repr)
    return out


_ADDED_BY_0004 = {("runs", "kind"), ("runs", "parent_id")}


# ------------------------------------------------------------------------------------------- schema


def test_migration_creates_every_table_and_records_its_revision(store: Storage) -> None:
    with store.engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert tables >= ALL_TABLES and "alembic_version" in tables
    assert version == head_revision() == SCHEMA_REVISION == "0006"


def test_models_and_migrations_agree(store: Storage) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        insp = inspect(conn)
        # autogenerate does not compare keys; their column order decides what the indexes serve
        for name, table in Base.metadata.tables.items():
            assert insp.get_pk_constraint(name)["constrained_columns"] == [c.name for c in table.primary_key], name
            got_fks = {(tuple(f["constrained_columns"]), f["referred_table"]) for f in insp.get_foreign_keys(name)}
            want_fks = {(tuple(c.name for c in f.columns), f.referred_table.name)
                        for f in table.foreign_key_constraints}
            assert got_fks == want_fks, name
    assert diff == []


def test_sqlite_runs_in_wal_mode_with_pragmas(sqlite_url: str) -> None:
    with open_storage(sqlite_url, busy_timeout_ms=1234) as s, s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
    # WAL is a property of the file: a plain sqlite3 connection sees it too
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_schema_newer_than_the_code_is_refused(db_url: str) -> None:
    open_storage(db_url).close()
    eng = create_engine(db_url)
    with eng.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0042_future'"))
    eng.dispose()
    with pytest.raises(StorageError) as e:
        open_storage(db_url)
    msg = str(e.value)
    assert msg.endswith("database schema is at revision 0042_future, newer than this tradevet (knows up to 0006): "
                        "upgrade tradevet")
    assert "\n" not in msg


def test_reopening_keeps_data_and_does_not_migrate_again(sqlite_url: str) -> None:
    with open_storage(sqlite_url) as s:
        rec = _new_run(s)
        rec.record_slice(_slice())
    with open_storage(sqlite_url, create=False) as s:
        assert s.table_counts(rec.run_id)["bars"] == 2


# --------------------------------------------------------------------------------------- open errors


def _one_line_error(url: str, **kw: object) -> str:
    with pytest.raises(StorageError) as e:
        open_storage(url, **kw)  # type: ignore[arg-type]
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_nonexistent_directory_is_a_one_line_storage_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/nope/x.db"
    msg = _one_line_error(url)
    assert msg == f"{url}: cannot open database: directory {tmp_path}/nope does not exist"
    assert not (tmp_path / "nope").exists()


def test_relative_path_error_names_the_relative_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _one_line_error("sqlite:///nope/x.db") == \
        "sqlite:///nope/x.db: cannot open database: directory nope does not exist"


def test_unwritable_path_is_a_one_line_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    msg = _one_line_error(f"sqlite:///{blocker}/x.db")
    assert msg.endswith(f"cannot open database: {blocker} is not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_directory_is_a_one_line_storage_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert "is not writable" in _one_line_error(f"sqlite:///{ro}/x.db")
    finally:
        ro.chmod(0o700)


def test_other_open_errors_are_one_line_storage_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"this is not an sqlite file, just some bytes " * 100)
    assert "not an SQLite database" in _one_line_error(f"sqlite:///{tmp_path}/junk.db")
    assert "is a directory" in _one_line_error(f"sqlite:///{tmp_path}")
    assert "does not exist" in _one_line_error(f"sqlite:///{tmp_path}/missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()
    assert "unsupported database backend 'mysql'" in _one_line_error("mysql://u:p@localhost/db")
    assert "invalid database URL" in _one_line_error("not a url at all")


def test_a_foreign_database_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE customers (id INTEGER)")
    assert "not a tradevet database" in _one_line_error(f"sqlite:///{path}")


def test_empty_database_needs_create(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    assert "no tradevet schema" in _one_line_error(f"sqlite:///{path}", create=False)
    open_storage(f"sqlite:///{path}").close()  # create=True makes it a tradevet database


def test_unreachable_server_error_masks_the_password() -> None:
    msg = _one_line_error("postgresql://trader:s3cret@127.0.0.1:1/tradevet")
    assert msg.startswith("postgresql://trader:***@127.0.0.1:1/tradevet: ")
    assert "s3cret" not in msg


def test_locked_database_is_a_storage_error_and_nothing_is_lost(sqlite_url: str) -> None:
    with open_storage(sqlite_url, busy_timeout_ms=50) as s:
        rec = _new_run(s)
        holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageError) as e:
                rec.record_slice(_slice())
            assert "database is locked" in str(e.value) and str(e.value).startswith(sqlite_url)
            assert rec.last_slice_ms() is None  # reads still work while another process writes (WAL)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        rec.record_slice(_slice())
        assert rec.last_slice_ms() == T0


def test_in_memory_sqlite_works(tmp_path: Path) -> None:
    with open_storage("sqlite://") as s:
        rec = _new_run(s)
        rec.record_slice(_slice())
        assert len(rec.load_bars()) == 2


def test_closed_storage_refuses_work(sqlite_url: str) -> None:
    s = open_storage(sqlite_url)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StorageError, match="storage is closed"):
        s.list_runs()


# --------------------------------------------------------------------------------------- round trips


def test_every_table_round_trips_through_the_domain_types(store: Storage) -> None:
    rec = _new_run(store)
    sl = _slice()
    rec.record_slice(sl)

    assert rec.load_bars() == sorted(sl.bars, key=lambda b: (b.close_ms, b.symbol))
    assert rec.load_signals() == sorted(sl.signals, key=lambda s: (s.created_ms, s.id))
    assert rec.load_gate_results() == list(sl.gate_results)
    assert rec.load_fills() == sorted(sl.fills, key=lambda f: (f.filled_ms, f.id))
    assert rec.load_trades() == list(sl.trades)
    assert sorted(rec.load_outcomes(), key=repr) == sorted(sl.outcomes, key=repr)
    assert rec.load_events() == list(sl.events)
    assert rec.load_news() == list(sl.news)
    assert rec.load_decisions() == {rv.decision.signal_id: rv.decision for rv in sl.reviews}

    (got,) = rec.load_reviews()
    (want,) = sl.reviews
    assert got == want  # verdict with attempts, decision, mode, and the pack's content
    assert (got.pack.hash, got.pack.json) == (want.pack.hash, want.pack.json)

    # statuses, regime tag and the run's resume point
    with store.engine.connect() as conn:
        statuses = dict(conn.execute(text("SELECT id, status FROM signals")).all())
        regime = conn.execute(text("SELECT regime_tag FROM context_packs")).scalar_one()
    assert statuses == {sl.signals[0].id: "reviewed", sl.signals[1].id: "blocked"}
    assert regime == "trending"
    assert rec.last_slice_ms() == T0 == store.get_run(rec.run_id).last_slice_ms


def test_table_counts_per_run_and_for_the_database(store: Storage) -> None:
    a, b = _new_run(store, "a"), _new_run(store, "b")
    a.record_slice(_slice())
    counts = store.table_counts(a.run_id)
    assert set(counts) == set(RUN_SCOPED_TABLES)
    assert counts == {"bars": 2, "signals": 2, "gate_results": 4, "context_packs": 1, "verdicts": 1, "decisions": 1,
                      "fills": 3, "trades": 1, "outcomes": 2, "events": 2, "news_items": 1}
    assert all(n == 0 for n in store.table_counts(b.run_id).values())
    whole = store.table_counts()
    assert set(whole) == ALL_TABLES and whole["runs"] == 2 and whole["bars"] == 2
    assert store.table_counts(a.run_id, tables=["signals", "fills"]) == {"signals": 2, "fills": 3}


def test_runs_are_isolated_from_each_other(store: Storage) -> None:
    a, b = _new_run(store, "a"), _new_run(store, "b")
    a.record_slice(_slice(T0))
    b.record_slice(_slice(T0))  # the same ids in another run are other rows
    assert a.load_fills() == b.load_fills()
    assert store.table_counts(a.run_id) == store.table_counts(b.run_id)
    assert store.table_counts()["fills"] == 6


def test_load_bars_filters_by_symbol_and_time(store: Storage) -> None:
    rec = _new_run(store)
    rec.record_slices([SliceRecord(close_ms=T0 + i * TF, bars=_bars(T0 + i * TF)) for i in range(5)])
    assert len(rec.load_bars()) == 10
    eth = rec.load_bars("ETH/USDT")
    assert [b.close_ms for b in eth] == [T0 + i * TF for i in range(5)] and {b.symbol for b in eth} == {"ETH/USDT"}
    assert [b.close_ms for b in rec.load_bars("BTC/USDT", since_ms=T0 + 3 * TF)] == [T0 + 3 * TF, T0 + 4 * TF]
    assert rec.load_bars("XRP/USDT") == []


def test_floats_and_ints_round_trip_exactly(store: Storage) -> None:
    rec = _new_run(store)
    finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
    counter = iter(range(10**6))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(price=finite, qty=finite, fee=finite, ms=st.integers(-(2**62), 2**62), reason=st.text(max_size=40))
    def check(price: float, qty: float, fee: float, ms: int, reason: str) -> None:
        fill = Fill(f"f{next(counter)}", "", "BTC/USDT", Side.SHORT, FillKind.ENTRY, ms, price, -price, qty, fee,
                    reason.replace("\x00", ""))
        rec.record_slice(SliceRecord(close_ms=T0, bars=(), fills=(fill,)))
        (got,) = [f for f in rec.load_fills() if f.id == fill.id]
        assert got == fill

    check()


# ---------------------------------------------------------------------------------------- idempotency


def test_recording_the_same_slice_twice_changes_nothing(store: Storage) -> None:
    rec = _new_run(store)
    rec.record_slice(_slice(T0))
    rec.record_slice(_slice(T0 + TF, n=1))
    before = _dump(store)
    counts = store.table_counts(rec.run_id)
    rec.record_slice(_slice(T0))  # an older slice again: also must not move last_slice_ms back
    rec.record_slice(_slice(T0 + TF, n=1))
    rec.record_slices([_slice(T0), _slice(T0 + TF, n=1)])
    assert store.table_counts(rec.run_id) == counts
    assert _dump(store) == before  # every row, including the run row's updated_at and last_slice_ms
    assert rec.last_slice_ms() == T0 + TF


def test_events_are_kept_as_sent_and_not_duplicated_on_repeat(store: Storage) -> None:
    rec = _new_run(store)
    e = Event("run", T0, "replay", "resumed", (("from_ms", T0),))

    def record_events(events: list[Event]) -> None:
        rec.record_slice(SliceRecord(close_ms=T0, bars=(), events=tuple(events)))

    record_events([e, e])  # two identical events in one slice are two events
    record_events([e, e])  # recording the same slice again adds nothing
    assert rec.load_events() == [e, e]
    other = dataclasses.replace(e, message="stopped")
    record_events([e, other])
    assert rec.load_events() == [e, e, other]
    with store.engine.connect() as conn:
        seqs = [r[0] for r in conn.execute(text(f"SELECT seq FROM events WHERE run_id = {rec.run_id} ORDER BY seq"))]
    assert seqs == [1, 2, 3]


def test_outcomes_may_come_later_and_are_written_once(store: Storage) -> None:
    rec = _new_run(store)
    sl = _slice(T0)
    rec.record_slice(dataclasses.replace(sl, outcomes=()))
    sid = sl.signals[0].id
    later = Outcome(sid, OutcomeKind.SHADOW, True, 2.5, 1.6, "target", False, T0 + TF, T0 + 30 * TF)
    rec.record_slice(SliceRecord(close_ms=T0 + 30 * TF, bars=(), outcomes=(later,)))
    assert rec.load_outcomes() == [later]
    # an outcome is final when written: a different one for the same (signal, kind) is ignored
    rec.record_slice(SliceRecord(close_ms=T0 + 31 * TF, bars=(), outcomes=(dataclasses.replace(later, pnl_pct=-9.0),)))
    assert rec.load_outcomes() == [later]
    assert rec.last_slice_ms() == T0 + 31 * TF


def test_record_slices_writes_a_batch_like_single_slices(db_url: str, tmp_path: Path) -> None:
    slices = [_slice(T0 + i * TF, n=i) for i in range(6)]
    with open_storage(db_url) as s:
        one = _new_run(s, "single")
        for sl in slices:
            one.record_slice(sl)
        batch = _new_run(s, "batch")
        batch.record_slices(slices)
        batch.record_slices([])  # nothing to do
        assert s.table_counts(batch.run_id) == s.table_counts(one.run_id)
        for load in ("load_bars", "load_signals", "load_gate_results", "load_fills", "load_trades", "load_outcomes",
                     "load_events", "load_news", "load_decisions", "load_reviews"):
            assert getattr(batch, load)() == getattr(one, load)(), load
        assert batch.last_slice_ms() == one.last_slice_ms() == T0 + 5 * TF


# ------------------------------------------------------------------------------------------ atomicity


def test_a_slice_is_written_whole_or_not_at_all(store: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = _new_run(store)
    rec.record_slice(_slice(T0))
    before = _dump(store)

    # fail in the second half of the writes (after bars, signals, reviews, fills and trades went out)
    real_run = storage.sql.Insert.run
    calls: list[str] = []

    def flaky(self: storage.sql.Insert, conn: object, data: list[dict[str, object]]) -> None:
        calls.append(self.table)
        if self.table == "outcomes":
            raise sqlite3.OperationalError("disk I/O error")
        real_run(self, conn, data)  # type: ignore[arg-type]

    monkeypatch.setattr(storage.sql.Insert, "run", flaky)
    with pytest.raises(StorageError) as e:
        rec.record_slice(_slice(T0 + TF, n=1))
    monkeypatch.undo()
    assert calls[:4] == ["bars", "signals", "gate_results", "context_packs"]  # the first half did run
    assert {"fills", "trades"} <= set(calls)
    msg = str(e.value)
    assert "\n" not in msg and f"slice {T0 + TF} of run {rec.run_id}" in msg and "(table outcomes)" in msg
    assert _dump(store) == before
    assert rec.last_slice_ms() == T0


def test_a_bad_row_rolls_back_its_whole_batch(store: Storage) -> None:
    rec = _new_run(store)
    good = _slice(T0)
    orphan = Trade("never-signalled", "sma_fast", "BTC/USDT", Side.LONG, 1.0, 1.0, 1.0, T0, T0, 0.0, 0.0, 0.0, 0.0,
                   ExitReason.TIME, 1)
    bad = SliceRecord(close_ms=T0 + TF, bars=_bars(T0 + TF), trades=(orphan,))
    with pytest.raises(StorageError) as e:
        rec.record_slices([good, bad])
    assert "integrity error" in str(e.value) and "(table trades)" in str(e.value)
    assert all(n == 0 for n in store.table_counts(rec.run_id).values())
    assert rec.last_slice_ms() is None


def test_an_unsealed_pack_is_refused_before_anything_is_written(store: Storage) -> None:
    rec = _new_run(store)
    sl = _slice(T0)
    raw = dataclasses.replace(sl.reviews[0].pack, json="", hash="")
    with pytest.raises(ValueError, match="not sealed"):
        rec.record_slice(dataclasses.replace(sl, reviews=(dataclasses.replace(sl.reviews[0], pack=raw),)))
    assert store.table_counts(rec.run_id)["bars"] == 0


# ------------------------------------------------------------------------------------------ reviews


def test_load_reviews_refuses_a_pack_whose_hash_does_not_match(store: Storage) -> None:
    rec = _new_run(store)
    sl = _slice(T0)
    rec.record_slice(sl)
    sid = sl.reviews[0].pack.signal.id
    altered = sl.reviews[0].pack.json.replace('"equity":10123.45', '"equity":99999.0')
    assert altered != sl.reviews[0].pack.json
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE context_packs SET json = :j WHERE signal_id = :s"), {"j": altered, "s": sid})
    with pytest.raises(StorageError) as e:
        rec.load_reviews()
    assert f"context pack of signal {sid} does not match its stored hash" in str(e.value)
    assert "\n" not in str(e.value)


def test_load_reviews_reports_an_unreadable_pack(store: Storage) -> None:
    rec = _new_run(store)
    rec.record_slice(_slice(T0))
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE context_packs SET json = '{\"signal\": {}}'"))
    with pytest.raises(StorageError, match="cannot be read back"):
        rec.load_reviews()


# --------------------------------------------------------------------------------------------- runs


def test_runs_are_created_resolved_and_updated(store: Storage) -> None:
    first = _new_run(store, "demo").run_id
    other = _new_run(store, "other").run_id
    latest = _new_run(store, "demo").run_id
    info = store.get_run(first)
    assert (info.name, info.status, info.seed, info.reviewer_mode, info.starting_equity, info.last_slice_ms) == \
        ("demo", "running", 7, "active", 10_000.0, None)
    assert info.config_json == '{"run": {"name": "demo"}}' and info.config_hash == "cafe0123"
    assert info.created_at.tzinfo is not None and info.created_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]

    assert store.resolve_run(str(first)).id == first
    assert store.resolve_run(" demo ").id == latest  # a name means its latest run
    assert store.resolve_run("other").id == other
    with pytest.raises(StorageError) as e:
        store.resolve_run("nosuch")
    assert str(e.value) == f"no run 'nosuch' in {store.url_masked} (known: demo, other)"
    with pytest.raises(StorageError, match="no run 999"):
        store.get_run(999)
    with pytest.raises(StorageError, match="no run 999"):
        store.recorder(999)
    with pytest.raises(StorageError, match="no run 999"):
        store.set_run_status(999, "failed")

    assert [r.id for r in store.list_runs()] == [first, other, latest]
    store.set_run_status(latest, "stopped")
    store.set_reviewer_mode(latest, "shadow")
    got = store.get_run(latest)
    assert (got.status, got.reviewer_mode) == ("stopped", "shadow")
    with pytest.raises(ValueError, match="status must be one of"):
        store.set_run_status(latest, "paused")
    with pytest.raises(ValueError, match="reviewer mode must be one of"):
        store.set_reviewer_mode(latest, "loud")


def test_resolve_run_in_an_empty_database(store: Storage) -> None:
    with pytest.raises(StorageError, match=r"\(known: none\)"):
        store.resolve_run("demo")
    with pytest.raises(StorageError, match="no run '99999999999999999999999'"):
        store.resolve_run("99999999999999999999999")


def test_recorder_and_cache_implement_the_engine_ports(store: Storage) -> None:
    import inspect as pyinspect

    from engine.ports import Recorder, VerdictCache

    for impl, port in ((_new_run(store), Recorder), (store.verdict_cache(), VerdictCache)):
        for name, member in vars(port).items():
            if callable(member) and not name.startswith("_"):
                mine = getattr(type(impl), name)
                assert list(pyinspect.signature(mine).parameters) == list(pyinspect.signature(member).parameters)


def test_find_resumable_run_takes_the_latest_unfinished_run_of_a_name(store: Storage) -> None:
    assert store.find_resumable_run("demo") is None
    old = _new_run(store, "demo").run_id
    store.set_run_status(old, "stopped")
    other = _new_run(store, "other").run_id
    assert store.find_resumable_run("demo").id == old  # type: ignore[union-attr]
    new = _new_run(store, "demo").run_id  # still running: a crash leaves it like this
    assert store.find_resumable_run("demo").id == new  # type: ignore[union-attr]
    store.set_run_status(new, "finished")
    assert store.find_resumable_run("demo") is None  # the older stopped run is history now
    assert store.find_resumable_run("other").id == other  # type: ignore[union-attr]
    store.set_run_status(other, "failed")
    assert store.find_resumable_run("other") is None


# ------------------------------------------------------------------------------------- verdict cache


def test_verdict_cache_get_put_and_miss(store: Storage) -> None:
    cache = store.verdict_cache()
    key = ("sonnet", "claude-sonnet-4-6", "v3", "ab" * 32)
    assert cache.get(*key) is None
    v = _verdict()
    cache.put(*key, v)
    assert cache.get(*key) == dataclasses.replace(v, attempts=())  # attempts describe one call, not the answer
    # every part of the key matters
    assert cache.get("gpt", *key[1:]) is None
    assert cache.get(key[0], "other-model", *key[2:]) is None
    assert cache.get(*key[:2], "v4", key[3]) is None
    assert cache.get(*key[:3], "cd" * 32) is None
    # the first answer stays: a replay relying on it must not see it change
    cache.put(*key, dataclasses.replace(v, verdict=VerdictKind.VETO, confidence=0.99))
    assert cache.get(*key).verdict is VerdictKind.MODIFY  # type: ignore[union-attr]
    assert store.table_counts()["verdict_cache"] == 1
    # an entry for a verdict without optional values round-trips too
    plain = Verdict(VerdictKind.ACCEPT, 0.0, source="fallback")
    cache.put("rules", "", "v3", "ef" * 32, plain)
    assert cache.get("rules", "", "v3", "ef" * 32) == plain


def test_verdict_cache_survives_an_unreadable_entry(store: Storage) -> None:
    cache = store.verdict_cache()
    cache.put("t", "m", "v", "h", _verdict())
    cache.flush()
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE verdict_cache SET verdict = 'garbage'"))
    assert cache.get("t", "m", "v", "h") is None


def _cache_rows_on_disk(store: Storage) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM verdict_cache")).scalar_one())


def test_verdict_cache_writes_ride_along_with_the_next_slice(store: Storage) -> None:
    rec = _new_run(store)
    cache = store.verdict_cache()
    cache.put("rules", "", "v3", "01" * 32, _verdict())
    assert _cache_rows_on_disk(store) == 0  # buffered ...
    assert cache.get("rules", "", "v3", "01" * 32) is not None  # ... but visible at once
    rec.record_slice(_slice())
    assert _cache_rows_on_disk(store) == 1  # written in the slice's transaction


def test_verdict_cache_entries_survive_a_failed_slice_and_close(db_url: str) -> None:
    key = ("rules", "", "v3", "02" * 32)
    with open_storage(db_url) as s:
        rec = _new_run(s)
        s.verdict_cache().put(*key, _verdict())
        orphan = Outcome("never-signalled", OutcomeKind.SHADOW, False)
        with pytest.raises(StorageError):
            rec.record_slice(SliceRecord(close_ms=T0, bars=(), outcomes=(orphan,)))
        assert _cache_rows_on_disk(s) == 0  # rolled back with the slice, still buffered
    with open_storage(db_url) as s:  # close() wrote it
        assert s.verdict_cache().get(*key) == dataclasses.replace(_verdict(), attempts=())


def test_verdict_cache_flushes_when_enough_entries_wait(store: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = store.verdict_cache()
    monkeypatch.setattr(type(cache), "FLUSH_AT", 3)
    for i in range(2):
        cache.put("rules", "", "v3", f"{i:064x}", _verdict())
    assert _cache_rows_on_disk(store) == 0
    cache.put("rules", "", "v3", f"{2:064x}", _verdict())
    assert _cache_rows_on_disk(store) == 3


# ------------------------------------------------------------------------------------------ codecs


def test_event_data_round_trips_as_tuples() -> None:
    e = Event("breaker", T0, "gpt", "open", (("window", [1, 2]), ("nested", {"a": [3]}), ("none", None)))
    key = storage.rows.event_key(e)

    class Row:
        kind, at_ms, subject, message, data = key

    got = storage.rows.row_to_event(Row())
    assert got.data == (("window", (1, 2)), ("nested", {"a": (3,)}), ("none", None))


def test_row_tuples_follow_the_column_order_of_their_tables() -> None:
    rows = storage.rows
    for name, columns in rows.COLUMNS.items():
        assert tuple(Base.metadata.tables[name].c.keys()) == columns, name
    sl = _slice()
    sig, rv = sl.signals[0], sl.reviews[0]
    gates: list[object] = []
    rows.add_gate_values(gates, 1, sl.gate_results)
    width = len(rows.COLUMNS["gate_results"])
    shapes = {
        "bars": rows.bar_values(1, sl.bars[0]),
        "signals": rows.signal_values(1, sig, "blocked"),
        "gate_results": tuple(gates[3 * width:4 * width]),
        "context_packs": rows.pack_values(1, rv.pack),
        "verdicts": rows.verdict_values(1, sig.id, rv.verdict, "active"),
        "decisions": rows.decision_values(1, rv.decision),
        "fills": rows.fill_values(1, sl.fills[1]),
        "trades": rows.trade_values(1, sl.trades[0]),
        "outcomes": rows.outcome_values(1, sl.outcomes[0]),
        "events": rows.event_values(1, 7, rows.event_key(sl.events[0])),
        "news_items": rows.news_values(1, sl.news[0]),
    }
    assert set(shapes) == set(rows.COLUMNS) - {"pack_digests"}  # derived by a backtest, not recorded
    named = {name: dict(zip(rows.COLUMNS[name], values, strict=True)) for name, values in shapes.items()}
    # the second gate result of a signal is its seq 1; the fourth row is b's cooldown
    assert named["gate_results"] == {"run_id": 1, "signal_id": sl.signals[1].id, "seq": 1, "gate": "cooldown",
                                     "passed": False, "reason": "cooldown 6 bars", "until_ms": T0 + 6 * TF}
    assert named["signals"]["tags"] == '["cross","atr_stop"]'
    assert named["bars"]["symbol"] == sl.bars[0].symbol and named["bars"]["close_ms"] == sl.bars[0].close_ms
    assert named["fills"]["id"] == sl.fills[1].id and named["verdicts"]["signal_id"] == sig.id


def test_tags_json_is_the_same_for_any_tag_values() -> None:
    rows = storage.rows
    tags_at = rows.COLUMNS["signals"].index("tags")
    for tags in (("a", "b"), ("a", "b"), (), ("é", '"q"'), (1, True), [1.0, "x"]):
        sig = dataclasses.replace(_signal("s", T0), tags=tags)  # type: ignore[arg-type]
        assert rows.signal_values(1, sig, "blocked")[tags_at] == rows.dumps(list(tags))


# ------------------------------------------------------------------------------------ bulk writes


def _many(n: int) -> list[SliceRecord]:
    return [_slice(T0 + i * TF, n=i) for i in range(n)]


def test_many_rows_per_statement_record_like_one_slice_at_a_time(db_url: str) -> None:
    # 123 slices: 246 bars and 492 gate results, so full multi-row statements and a remainder for both
    slices = _many(123)
    with open_storage(db_url) as s:
        assert s.statements.insert["bars"].rows_per_statement == s.statements.insert["gate_results"].rows_per_statement
        assert s.statements.insert["bars"].rows_per_statement == storage.sql.Insert.ROWS_PER_STATEMENT == 100
        one = _new_run(s, "single")
        for sl in slices:
            one.record_slice(sl)
        batch = _new_run(s, "batch")
        batch.record_slices(slices)
        counts = s.table_counts(batch.run_id)
        assert counts == s.table_counts(one.run_id) and counts["bars"] == 246 and counts["gate_results"] == 492
        for load in ("load_bars", "load_signals", "load_gate_results", "load_fills", "load_trades", "load_outcomes",
                     "load_events", "load_news", "load_decisions", "load_reviews"):
            assert getattr(batch, load)() == getattr(one, load)(), load
        before = _dump(s)
        batch.record_slices(slices)  # again: every row conflicts and is skipped
        batch.record_slices(slices[::-1][:101])
        assert _dump(s) == before


def test_floats_round_trip_exactly_through_multi_row_statements(store: Storage) -> None:
    rec = _new_run(store)
    finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
    runs = iter(range(10**6))

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(prices=st.lists(finite, min_size=101, max_size=260))
    def check(prices: list[float]) -> None:
        t0 = T0 + next(runs) * 1_000 * TF
        bars = [Bar("BTC/USDT", t0 + i * TF - TF, t0 + i * TF, p, -p, p / 3, p * 7, abs(p)) for i, p in
                enumerate(prices)]
        rec.record_slices([SliceRecord(close_ms=b.close_ms, bars=(b,)) for b in bars])
        assert rec.load_bars(since_ms=t0)[: len(bars)] == bars

    check()


def test_insert_refuses_values_that_are_not_whole_rows(store: Storage) -> None:
    ins = store.statements.insert["bars"]
    with store.writer.begin() as conn, pytest.raises(ValueError, match="not whole rows of 9"):
        ins.run(conn, [1, 2, 3])


def test_new_batch_and_write_batch_record_like_record_slices(store: Storage) -> None:
    slices = _many(5)
    a, b = _new_run(store, "a"), _new_run(store, "b")
    a.record_slices(slices)
    batch = b.new_batch()
    for sl in slices:
        batch.add(sl)
    assert (batch.slices, batch.close_ms) == (5, T0 + 4 * TF)
    assert batch.rows == sum(store.table_counts(a.run_id).values())
    b.write_batch(batch)
    b.write_batch(b.new_batch())  # empty: nothing to do
    assert store.table_counts(b.run_id) == store.table_counts(a.run_id)
    assert b.load_reviews() == a.load_reviews() and b.last_slice_ms() == T0 + 4 * TF


def test_a_slice_refused_by_a_batch_adds_nothing_to_it(store: Storage) -> None:
    rec = _new_run(store)
    batch = rec.new_batch()
    batch.add(_slice(T0))
    before = ({k: list(v) for k, v in batch.values.items()}, list(batch.events), batch.rows, batch.slices)
    sl = _slice(T0 + TF, n=1)
    raw = dataclasses.replace(sl.reviews[0].pack, json="", hash="")
    with pytest.raises(ValueError, match="not sealed"):
        batch.add(dataclasses.replace(sl, reviews=(dataclasses.replace(sl.reviews[0], pack=raw),)))
    assert ({k: list(v) for k, v in batch.values.items()}, list(batch.events), batch.rows, batch.slices) == before
    rec.write_batch(batch)
    assert rec.last_slice_ms() == T0 and store.table_counts(rec.run_id)["bars"] == 2


def test_a_failed_batch_names_its_slices_and_writes_nothing(store: Storage) -> None:
    rec = _new_run(store)
    orphan = Trade("never-signalled", "sma_fast", "BTC/USDT", Side.LONG, 1.0, 1.0, 1.0, T0, T0, 0.0, 0.0, 0.0, 0.0,
                   ExitReason.TIME, 1)
    slices = [*_many(150), SliceRecord(close_ms=T0 + 150 * TF, bars=_bars(T0 + 150 * TF), trades=(orphan,))]
    with pytest.raises(StorageError) as e:
        rec.record_slices(slices)
    assert f"cannot record slices {T0}..{T0 + 150 * TF} of run {rec.run_id}" in str(e.value)
    assert "(table trades)" in str(e.value)
    assert all(n == 0 for n in store.table_counts(rec.run_id).values()) and rec.last_slice_ms() is None


# ------------------------------------------------------------------------------------- schema 0002


def _sqlite_tables_sql(store: Storage) -> dict[str, str]:
    with store.engine.connect() as conn:
        return dict(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'").all())


def test_sqlite_bars_and_gate_results_are_clustered_on_their_key(sqlite_url: str) -> None:
    with open_storage(sqlite_url) as s:
        sql = _sqlite_tables_sql(s)
    without_rowid = {name for name, text_ in sql.items() if text_.rstrip().endswith("WITHOUT ROWID")}
    assert without_rowid == {"bars", "gate_results", "pack_digests"}  # pack_digests: read by its key only


def _storage_at_0001(url: str) -> Storage:
    """A database migrated to revision 0001 only, and a Storage over it (Storage itself does not migrate)."""
    from alembic import command

    from storage.db import WRITE, _alembic_config, connect

    engine, shown = connect(url)
    with engine.execution_options(**{WRITE: True}).begin() as conn:
        command.upgrade(_alembic_config(conn), "0001")
        # today's recorder writes verdicts.reviewed_at_ms (0003, which leaves an existing column alone): the
        # rest of the 0001 schema is what the upgrade is tested on
        conn.exec_driver_sql("ALTER TABLE verdicts ADD COLUMN reviewed_at_ms BIGINT NOT NULL DEFAULT 0")
    return Storage(engine, shown, busy_timeout_ms=5_000)


def test_upgrading_a_0001_database_with_recorded_runs_keeps_every_row(db_url: str) -> None:
    old = _storage_at_0001(db_url)
    try:
        # (the recorders are built directly: reading a run row back needs the columns 0004 added)
        a, b = (RunRecorder(old, old.create_run(n, f'{{"run": {{"name": "{n}"}}}}', "cafe0123", 7, "active", 1e4))
                for n in ("a", "b"))
        a.record_slices(_many(130))
        b.record_slice(_slice(T0))
        with old.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0001"
        if old.engine.dialect.name == "sqlite":
            assert not any(t.rstrip().endswith("WITHOUT ROWID") for t in _sqlite_tables_sql(old).values())
        before = _dump(old)
        loaded = {load: getattr(a, load)() for load in ("load_bars", "load_gate_results", "load_reviews")}
    finally:
        old.close()
    with open_storage(db_url) as new:
        with new.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0006"
        assert _dump(new) == before
        assert before["bars"] and before["gate_results"]
        a2 = new.recorder(a.run_id)
        assert {load: getattr(a2, load)() for load in loaded} == loaded
        if new.engine.dialect.name == "sqlite":
            without_rowid = {n for n, t in _sqlite_tables_sql(new).items() if t.rstrip().endswith("WITHOUT ROWID")}
            assert without_rowid == {"bars", "gate_results", "pack_digests"}  # pack_digests: read by its key only
        # and the upgraded tables take new rows (and refuse orphans: the foreign keys came along)
        new.recorder(b.run_id).record_slice(_slice(T0 + TF, n=1))
        assert new.table_counts(b.run_id)["gate_results"] == 8
        with pytest.raises(StorageError, match="integrity error"):
            new.recorder(b.run_id).record_slice(SliceRecord(
                close_ms=T0 + 2 * TF, bars=(), gate_results=(("no-such-signal", GateResult("g", True, "")),)))


def test_downgrading_to_0001_keeps_every_row(sqlite_url: str) -> None:
    from alembic import command

    from storage.db import WRITE, _alembic_config

    with open_storage(sqlite_url) as s:
        _new_run(s).record_slices(_many(20))
        before = _dump(s)
        with s.engine.execution_options(**{WRITE: True}).begin() as conn:
            # (the models name verdicts.reviewed_at_ms, which 0003's downgrade drops: compared once up again)
            command.downgrade(_alembic_config(conn), "0001")
        assert not any(t.rstrip().endswith("WITHOUT ROWID") for t in _sqlite_tables_sql(s).values())
    with open_storage(sqlite_url) as s:  # and up again
        assert _dump(s) == before


def test_the_values_group_of_an_insert_is_found_whatever_its_casts() -> None:
    group = storage.sql._values_group
    assert group("INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING") == (
        "INSERT INTO t (a, b) VALUES ", "(?, ?)", " ON CONFLICT DO NOTHING")
    assert group("INSERT INTO t (a, b) VALUES (%s::VARCHAR(64), %s::NUMERIC(10, 2))") == (
        "INSERT INTO t (a, b) VALUES ", "(%s::VARCHAR(64), %s::NUMERIC(10, 2))", "")
    for bad in ("INSERT INTO t DEFAULT VALUES", "INSERT INTO t (a) VALUES (?", "INSERT INTO t (a) VALUES ?"):
        with pytest.raises(RuntimeError, match="unexpected INSERT"):
            group(bad)
