"""Replay batching: how ``engine.drivers.replay.Replay`` groups slices into recorder transactions.

Batches start at ``FIRST_BATCH_SLICES`` and double, capped by rows and by time; a fixed ``batch_slices`` keeps
them at that size; each batch holds whole slices in order and every slice is written exactly once; a
recorder failure surfaces from ``run`` with the batches before it committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.core.pipeline import StepStats
from engine.drivers.replay import RecordBatch, Replay
from engine.errors import StorageError
from engine.types import Bar, GateResult, Signal, SliceRecord
from storage import open_storage

T0 = 1_735_689_600_000
TF = 300_000


def _record(i: int, *, symbols: int = 2, signal: bool = False) -> SliceRecord:
    t = T0 + i * TF
    bars = tuple(Bar(f"S{j}/USDT", t - TF, t, 1.0 + i, 2.0 + i, 0.5, 1.5 + i, 10.0) for j in range(symbols))
    if not signal:
        return SliceRecord(close_ms=t, bars=bars)
    sig = Signal(f"x:S0/USDT:{t}", "x", "S0/USDT", "long", t, 1.5, 1.0, 2.0, 0.1, "5m")  # type: ignore[arg-type]
    gates = ((sig.id, GateResult("a", True, "ok")), (sig.id, GateResult("b", False, "no", until_ms=t + TF)))
    return SliceRecord(close_ms=t, bars=bars, signals=(sig,), gate_results=gates)


class _Pipeline:
    """Stands in for engine.core.pipeline.Pipeline: hands out prepared records, one per slice of bars."""

    def __init__(self, records: list[SliceRecord], last: SliceRecord | None = None) -> None:
        self.records = iter(records)
        self.last = last
        self.stats = StepStats()

    def step(self, bars: tuple[Bar, ...]) -> SliceRecord:
        rec = next(self.records)
        assert rec.bars == bars
        self.stats.slices += 1
        return rec

    def finish(self) -> SliceRecord | None:
        return self.last


class _BatchRecorder:
    """A recorder with new_batch/write_batch, keeping the close times of each written batch."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_at = fail_at

    class Batch:
        def __init__(self) -> None:
            self.closes: list[int] = []
            self.rows = 0

        @property
        def slices(self) -> int:
            return len(self.closes)

        def add(self, rec: SliceRecord) -> None:
            self.closes.append(rec.close_ms)
            self.rows += rec.row_count()

    def new_batch(self) -> _BatchRecorder.Batch:
        return self.Batch()

    def write_batch(self, batch: _BatchRecorder.Batch) -> None:
        if self.fail_at is not None and len(self.batches) == self.fail_at:
            raise StorageError("db: cannot record: disk I/O error")
        self.batches.append(batch.closes)


def _run(records: list[SliceRecord], recorder: Any, last: SliceRecord | None = None, **kw: Any) -> StepStats:
    return Replay(_Pipeline(records, last), (r.bars for r in records), recorder, **kw).run()


def _sizes(rec: _BatchRecorder) -> list[int]:
    return [len(b) for b in rec.batches]


def _assert_every_slice_once_in_order(rec: _BatchRecorder, records: list[SliceRecord]) -> None:
    assert [t for b in rec.batches for t in b] == [r.close_ms for r in records]


def test_batches_start_small_and_double() -> None:
    records = [_record(i) for i in range(1000)]
    rec = _BatchRecorder()
    _run(records, rec)
    assert _sizes(rec) == [64, 128, 256, 512, 40]
    _assert_every_slice_once_in_order(rec, records)


def test_batches_stop_growing_at_the_row_limit() -> None:
    records = [_record(i, symbols=10) for i in range(2000)]  # 10 rows a slice
    rec = _BatchRecorder()
    _run(records, rec, batch_rows=3_000)
    assert _sizes(rec) == [64, 128, 256, 300, 300, 300, 300, 300, 52]
    _assert_every_slice_once_in_order(rec, records)


def test_rows_count_signals_and_gate_results_too() -> None:
    records = [_record(i, signal=True) for i in range(100)]  # 2 bars, a signal and 2 gate results: 5 rows
    rec = _BatchRecorder()
    _run(records, rec, batch_rows=50)
    assert _sizes(rec) == [10] * 10


def test_a_fixed_slice_count_keeps_batches_at_that_size() -> None:
    records = [_record(i) for i in range(20)]
    rec = _BatchRecorder()
    _run(records, rec, batch_slices=7)
    assert _sizes(rec) == [7, 7, 6]


def test_a_slow_replay_writes_a_batch_every_batch_seconds() -> None:
    records = [_record(i) for i in range(10)]
    rec = _BatchRecorder()
    _run(records, rec, batch_seconds=0.0)
    assert _sizes(rec) == [1] * 10


def test_the_end_of_data_record_rides_in_the_last_batch() -> None:
    records = [_record(i) for i in range(70)]
    last = SliceRecord(close_ms=records[-1].close_ms, bars=())
    rec = _BatchRecorder()
    seen: list[int] = []
    _run(records, rec, last, on_slice=lambda r: seen.append(r.close_ms))
    assert _sizes(rec) == [64, 7]
    assert len(seen) == 71


def test_a_failed_write_surfaces_and_the_earlier_batches_stand() -> None:
    records = [_record(i) for i in range(500)]
    rec = _BatchRecorder(fail_at=2)
    with pytest.raises(StorageError, match="disk I/O error"):
        _run(records, rec)
    assert _sizes(rec) == [64, 128]


def test_a_recorder_of_slice_records_gets_every_record_in_batches() -> None:
    records = [_record(i) for i in range(150)]

    class Records:
        def __init__(self) -> None:
            self.batches: list[list[int]] = []

        def new_batch(self) -> RecordBatch:
            return RecordBatch()

        def write_batch(self, batch: RecordBatch) -> None:
            self.batches.append([r.close_ms for r in batch])

    whole, rows = Records(), Records()
    _run(records, whole)
    _run(records, rows, batch_rows=100)  # 2 rows a slice
    assert [c for b in whole.batches for c in b] == [r.close_ms for r in records]
    assert [len(b) for b in whole.batches] == [64, 86]  # the slice limit doubles: 64, then the rest
    assert [len(b) for b in rows.batches] == [50, 50, 50]


def test_no_recorder_records_nothing() -> None:
    records = [_record(i) for i in range(10)]
    assert _run(records, None).slices == 10


def _store_records(n: int) -> Iterator[SliceRecord]:
    for i in range(n):
        yield _record(i, signal=i % 3 == 0)


def test_replay_into_storage_records_every_slice_and_advances_the_run(tmp_path: Path) -> None:
    records = list(_store_records(700))
    with open_storage(f"sqlite:///{tmp_path / 'r.db'}") as store:
        run_id = store.create_run("r", "{}", "h", 1, "active", 1.0)
        rec = store.recorder(run_id)
        written: list[int] = []
        real = rec.write_batch

        def spy(batch: Any) -> None:
            written.append(batch.slices)
            real(batch)

        rec.write_batch = spy  # type: ignore[method-assign]
        _run(records, rec, batch_rows=1_000)
        assert written == [64, 128, 256, 252]  # 700 slices; rows: 2 bars + a signal + 2 gates every 3rd
        counts = store.table_counts(run_id)
        assert counts["bars"] == 1_400 and counts["signals"] == 234 and counts["gate_results"] == 468
        assert rec.last_slice_ms() == records[-1].close_ms
        assert rec.load_bars() == [b for r in records for b in r.bars]


def test_storage_failure_mid_replay_leaves_the_committed_batches(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import storage.sql

    records = list(_store_records(300))
    with open_storage(f"sqlite:///{tmp_path / 'r.db'}") as store:
        run_id = store.create_run("r", "{}", "h", 1, "active", 1.0)
        rec = store.recorder(run_id)
        real = storage.sql.Insert.run
        calls = [0]

        def flaky(self: Any, conn: Any, data: Any) -> None:
            if self.table == "gate_results":
                calls[0] += 1
                if calls[0] == 3:
                    raise StorageError("db: cannot record: disk I/O error")
            real(self, conn, data)

        monkeypatch.setattr(storage.sql.Insert, "run", flaky)
        with pytest.raises(StorageError, match="disk I/O error"):
            _run(records, rec)
        # the first two batches (64 + 128 slices) committed, the third rolled back whole
        assert rec.last_slice_ms() == records[191].close_ms
        assert store.table_counts(run_id)["bars"] == 192 * 2
        assert rec.load_bars()[-1].close_ms == records[191].close_ms
