"""Resume: a recorded run (bars, verdicts, fills) → a pipeline in exactly the state it had at its last slice.

The pipeline is deterministic given its bars and its reviewer's verdicts, so the state of a run — open
positions, pending entries, shadow trades, indicator values, gate locks, the retire rule's window — is
rebuilt by stepping it again over the recorded bars with the recorded verdicts, writing nothing. The
regenerated ledger and context-pack hashes are then checked against the stored ones: a restart either
continues the very same run or refuses with a one-line reason. Nothing is processed twice in the database.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from engine.core.pipeline import Pipeline, StepStats
from engine.drivers.replay import fills_fingerprint
from engine.errors import StorageError
from engine.ports import RunRecords
from engine.types import Bar, ContextPack, Event, Fill, FillKind, ReviewRecord, Verdict

__all__ = ["RecordedReviewer", "catch_up", "group_slices"]


class RecordedReviewer:
    """Answers with the verdicts a run recorded (implements ``engine.ports.Reviewer``, without I/O); a pack that
    differs from the recorded one is an error."""

    tiers: tuple[()] = ()
    cache = None
    synchronous = True

    def __init__(self, reviews: Sequence[ReviewRecord], mode: str) -> None:
        self._by_signal = {r.pack.signal.id: r for r in reviews}
        self.mode = mode

    async def review_many(self, packs: Sequence[ContextPack]) -> list[Verdict]:
        return self.review_many_sync(packs)

    def review_cached(self, hashes: Sequence[str]) -> list[Verdict | None]:
        return [None] * len(hashes)

    def review_many_sync(self, packs: Sequence[ContextPack]) -> list[Verdict]:
        out = []
        for p in packs:
            rec = self._by_signal.get(p.signal.id)
            if rec is None:
                raise StorageError(f"resume: signal {p.signal.id} was not reviewed in the recorded run "
                                   "(the code or config changed since the run started)")
            if rec.pack.hash != p.hash:
                raise StorageError(f"resume: the context pack of {p.signal.id} differs from the recorded one "
                                   "(the code or config changed since the run started)")
            out.append(rec.verdict)
        return out

    def drain_events(self) -> list[Event]:
        return []

    async def aclose(self) -> None:
        return None


def group_slices(bars: Sequence[Bar], symbol_order: Sequence[str]) -> list[tuple[Bar, ...]]:
    """Recorded bars → slices in time order, symbols in the feed's order (as they were first stepped)."""
    rank = {s: i for i, s in enumerate(symbol_order)}
    ordered = sorted(bars, key=lambda b: (b.close_ms, rank.get(b.symbol, len(rank)), b.symbol))
    return [tuple(g) for _, g in itertools.groupby(ordered, key=lambda b: b.close_ms)]


def catch_up(pipeline: Pipeline, recorder: RunRecords, symbols: Sequence[str]) -> int | None:
    """Step ``pipeline`` over what ``recorder`` holds; return the last processed close time (None if new).

    Raises: StorageError when the regenerated ledger or packs differ from the recorded ones.
    """
    last_ms = recorder.last_slice_ms()
    stored_fills: list[Fill] = recorder.load_fills()
    if last_ms is None or not stored_fills:
        return None
    deposit = stored_fills[0]
    if deposit.kind is not FillKind.DEPOSIT:
        raise StorageError("resume: the recorded ledger does not start with its deposit")
    real = pipeline.reviewer
    pipeline.reviewer = RecordedReviewer(recorder.load_reviews(), pipeline.mode)  # type: ignore[assignment]
    regenerated: list[Fill] = []
    try:
        pipeline.open_ledger(deposit.qty * deposit.fill_price, deposit.filled_ms)
        for bars in group_slices(recorder.load_bars(), symbols):
            regenerated.extend(pipeline.step(bars).fills)
        # A replay killed after writing its last batch (which carries the end-of-data exits) but before it
        # was marked finished: its data had ended, so the end-of-data exits are part of the ledger to match.
        if any(e.kind == "run" and e.subject == "replay" for e in recorder.load_events()):
            end = pipeline.finish()
            if end is not None:
                regenerated.extend(end.fills)
            pipeline.ended = True
    finally:
        pipeline.reviewer = real
        if real is not None:
            real.mode = pipeline.mode
    # storage returns fills by (time, id); within one slice the pipeline emits exits before later entries
    regenerated.sort(key=lambda f: (f.filled_ms, f.id))
    if fills_fingerprint(regenerated) != fills_fingerprint(stored_fills):
        first_diff = next((i for i, (a, b) in enumerate(zip(regenerated, stored_fills, strict=False))
                           if a != b), min(len(regenerated), len(stored_fills)))
        raise StorageError(f"resume: the recorded ledger ({len(stored_fills)} fills) cannot be reproduced "
                           f"({len(regenerated)} regenerated, first difference at fill #{first_diff})")
    pipeline.stats = StepStats()  # counts restart: they describe this session's work
    return last_ms
