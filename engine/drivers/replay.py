"""Replay driver: a finite feed + SimClock → Pipeline.step per slice → recorder, as fast as possible.

Slices are written in batches; each batch is one transaction holding whole slices (and advancing the run's
last recorded slice), so a slice is never half-written and a crash costs at most the batch in memory, which
a resume regenerates. A batch is written once it holds ``batch_rows`` rows, once ``batch_seconds`` passed
since its first slice, or at its slice limit, whichever comes first. The slice limit starts at
``FIRST_BATCH_SLICES`` and doubles with each batch (unless ``batch_slices`` fixes it): a run records its
first progress at once, and then batches grow until the per-transaction cost (a commit, now and then a WAL
checkpoint) is small next to the rows, while a slow replay (a remote reviewer) still records its progress
every few seconds. Every ``engine.ports.Recorder`` makes its own batches (``new_batch``): storage's turn each
slice into rows as it comes, so that a filling batch holds rows rather than slice records; a recorder that
keeps the records themselves can use ``RecordBatch``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from engine.core.pipeline import Pipeline, StepStats
from engine.ports import Recorder
from engine.types import Bar, Fill, SliceRecord

__all__ = ["RecordBatch", "Replay", "fills_fingerprint"]


class RecordBatch(list[SliceRecord]):
    """A batch that keeps the slice records themselves, for a recorder that has no rows to build (test doubles,
    a recorder keeping records in memory): ``Recorder.new_batch`` may return one."""

    rows = 0

    @property
    def slices(self) -> int:
        return len(self)

    def add(self, rec: SliceRecord) -> None:
        self.append(rec)
        self.rows += rec.row_count()


class Replay:
    FIRST_BATCH_SLICES = 64
    BATCH_ROWS = 50_000
    BATCH_SECONDS = 2.0

    def __init__(self, pipeline: Pipeline, slices: Iterable[tuple[Bar, ...]], recorder: Recorder | None, *,
                 batch_slices: int | None = None, batch_rows: int | None = None, batch_seconds: float | None = None,
                 on_slice: Callable[[SliceRecord], None] | None = None, finish: bool = True) -> None:
        self.pipeline = pipeline
        self.slices = slices
        self.recorder = recorder
        self.batch_slices = max(1, batch_slices) if batch_slices is not None else None
        self.batch_rows = max(1, batch_rows if batch_rows is not None else self.BATCH_ROWS)
        self.batch_seconds = self.BATCH_SECONDS if batch_seconds is None else batch_seconds
        self.on_slice = on_slice
        self.finish = finish

    def run(self) -> StepStats:
        step = self.pipeline.step
        on_slice = self.on_slice
        recording = self.recorder is not None
        max_slices = self.batch_slices or self.FIRST_BATCH_SLICES
        growing = self.batch_slices is None
        max_rows = self.batch_rows
        max_seconds = self.batch_seconds
        clock = time.monotonic
        batch = self._new_batch()
        started = 0.0
        for bars in self.slices:
            rec = step(bars)
            if on_slice is not None:
                on_slice(rec)
            if recording:
                if not batch.slices:
                    started = clock()
                batch.add(rec)
                if batch.rows >= max_rows or batch.slices >= max_slices or clock() - started >= max_seconds:
                    self._write(batch)
                    batch = self._new_batch()
                    if growing:
                        max_slices *= 2
        if self.finish:
            last = self.pipeline.finish()
            if last is not None:
                if on_slice is not None:
                    on_slice(last)
                if recording:
                    batch.add(last)
        if recording:
            self._write(batch)
        return self.pipeline.stats

    def _new_batch(self) -> Any:
        return self.recorder.new_batch() if self.recorder is not None else RecordBatch()

    def _write(self, batch: Any) -> None:
        if self.recorder is not None and batch.slices:
            self.recorder.write_batch(batch)


def fills_fingerprint(fills: Iterable[Fill]) -> str:
    """SHA-256 over every fill (ids, times, prices, quantities, fees): the run's trade fingerprint."""
    h = hashlib.sha256()
    for f in fills:
        h.update(f"{f.id}|{f.kind}|{f.filled_ms}|{f.fill_price!r}|{f.qty!r}|{f.fee!r}|{f.reason}\n".encode())
    return h.hexdigest()
