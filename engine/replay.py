"""Replay driver: a finite feed + SimClock → Pipeline.step per slice → recorder, as fast as possible.

Slices are written in small batches; each batch is one transaction, so a slice is never half-written.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable

from engine.pipeline import Pipeline, StepStats
from engine.ports import Recorder
from engine.types import Bar, Fill, SliceRecord

__all__ = ["Replay", "fills_fingerprint", "record_digest"]


class Replay:
    def __init__(self, pipeline: Pipeline, slices: Iterable[tuple[Bar, ...]], recorder: Recorder | None, *,
                 batch_slices: int = 64, on_slice: Callable[[SliceRecord], None] | None = None,
                 finish: bool = True) -> None:
        self.pipeline = pipeline
        self.slices = slices
        self.recorder = recorder
        self.batch_slices = max(1, batch_slices)
        self.on_slice = on_slice
        self.finish = finish

    def run(self) -> StepStats:
        buf: list[SliceRecord] = []
        step = self.pipeline.step
        for bars in self.slices:
            rec = step(bars)
            if self.on_slice is not None:
                self.on_slice(rec)
            if self.recorder is not None:
                buf.append(rec)
                if len(buf) >= self.batch_slices:
                    self._flush(buf)
        if self.finish:
            last = self.pipeline.finish()
            if last is not None:
                if self.on_slice is not None:
                    self.on_slice(last)
                buf.append(last)
        self._flush(buf)
        return self.pipeline.stats

    def _flush(self, buf: list[SliceRecord]) -> None:
        if not buf or self.recorder is None:
            buf.clear()
            return
        record_many = getattr(self.recorder, "record_slices", None)
        if record_many is not None:
            record_many(buf)
        else:
            for r in buf:
                self.recorder.record_slice(r)
        buf.clear()


def fills_fingerprint(fills: Iterable[Fill]) -> str:
    """SHA-256 over every fill (ids, times, prices, quantities, fees): the run's trade fingerprint."""
    h = hashlib.sha256()
    for f in fills:
        h.update(f"{f.id}|{f.kind}|{f.filled_ms}|{f.fill_price!r}|{f.qty!r}|{f.fee!r}|{f.reason}\n".encode())
    return h.hexdigest()


def record_digest(records: Iterable[SliceRecord]) -> str:
    """SHA-256 over everything a run recorded except wall-clock measurements (verdict latencies)."""
    h = hashlib.sha256()
    for r in records:
        reviews = tuple(
            (rv.pack.hash, dataclasses.replace(rv.verdict, latency_ms=0.0, attempts=tuple(
                dataclasses.replace(a, latency_ms=0.0) for a in rv.verdict.attempts)), rv.decision, rv.mode)
            for rv in r.reviews
        )
        h.update(repr((r.close_ms, r.bars, r.signals, r.gate_results, reviews, r.fills, r.trades, r.outcomes,
                       r.events, r.news)).encode())
    return h.hexdigest()
