"""A recorded run as the read side holds it: a ``RunReader``'s reviews and outcomes, read once, as columns.

Every reviewer column of a backtest, the scorecard, the report and an export read the same ``StoredRun``: the
reviewed signals in signal order with a ``PackRef`` each (its content hash checked against the stored JSON as
it was read), the recorded verdicts and decisions as columns, and the outcomes as columns. Scoring reads the
columns straight (``signal_columns``, ``recorded_columns``); value objects are built only when asked for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from engine.ports import PackCheck, RunReader
from engine.recorded.columns import SignalColumns, VerdictColumns, gc_paused
from engine.types import Outcome, PackRef, ReviewRecord, StoredOutcomes, StoredReviews

__all__ = ["StoredRun", "load_stored"]


@dataclass
class StoredRun:
    """A recorded run, loaded once and shared by every reader of it."""

    run_id: int
    name: str
    config_json: str
    starting_equity: float
    reviews: StoredReviews  # the reviewed signals, their packs (PackRef), verdicts and decisions, in signal order
    stored_outcomes: StoredOutcomes  # shadow outcomes (what every column is judged against), realized on request
    load_s: float = 0.0
    _records: list[ReviewRecord] | None = field(default=None, repr=False)
    _outcomes: list[Outcome] | None = field(default=None, repr=False)

    @property
    def packs(self) -> list[PackRef]:
        return list(self.reviews.packs)

    @property
    def records(self) -> list[ReviewRecord]:
        """The recorded reviews (verdict and decision objects are built on first use; not after a lean load)."""
        if self._records is None:
            self._records = [self.reviews.record(i) for i in range(len(self.reviews))]
        return self._records

    @property
    def outcomes(self) -> list[Outcome]:
        """The loaded outcomes (built on first use)."""
        if self._outcomes is None:
            self._outcomes = self.stored_outcomes.all()
        return self._outcomes

    def signal_columns(self) -> SignalColumns:
        """The reviewed signals and their outcomes as scoring reads them, straight from the columns."""
        c = self.stored_outcomes.columns
        facts = zip(c["signal_id"], c["kind"], c["filled"], c["pnl_pct"], c["exit_reason"], c["ambiguous"],
                    c["closed_ms"], strict=True)
        shadow: dict[str, tuple[Any, ...]] = {}
        realized: dict[str, tuple[Any, ...]] = {}
        for sid, kind, filled, pnl, exit_reason, ambiguous, closed_ms in facts:
            if kind == "shadow":
                shadow[sid] = (filled, pnl, exit_reason, ambiguous, closed_ms)
            else:
                realized[sid] = (filled, pnl)
        packs = self.reviews.packs
        return SignalColumns.build([p.signal for p in packs], [p.equity for p in packs],
                                   [p.regime_tag for p in packs], shadow, realized)

    def recorded_columns(self) -> VerdictColumns:
        """The recorded verdicts and decisions as scoring reads them, straight from the columns."""
        v, d = self.reviews.verdicts, self.reviews.decisions
        return VerdictColumns(v["verdict"], v["source"], v["tier"], v["latency_ms"], v["input_tokens"],
                              v["output_tokens"], v["cached_tokens"], v["cost_usd"], v["attempts"], d["action"],
                              d["size_pct"])


def load_stored(reader: RunReader, run_id: int, *, keep_json: bool = False, realized: bool = False,
                lean: bool = False, check: PackCheck | None = None) -> StoredRun:
    """Read a run's reviews and outcomes once; every stored pack is checked against its hash as it is read.

    ``realized``: load the realized outcomes too (the scorecard of a run needs them, a backtest does not).
    ``lean``: read only what scoring reads of the recorded verdicts and decisions (a backtest): ``records`` is
    then unavailable, ``recorded_columns`` is. ``keep_json``: keep each pack's JSON in its PackRef (100,000 packs
    are ~500 MB of text). ``check``: the packs' check started earlier (``RunReader.check_packs``).

    Raises: StorageError (no such run; a pack whose JSON does not match its stored hash).
    """
    t0 = time.perf_counter()
    run = reader.get_run(run_id)
    with gc_paused():
        reviews = reader.reviewed(run_id, keep_json=keep_json, lean=lean, check=check)
        outcomes = reader.outcomes(run_id, realized=realized, snapshot=check is not None)
    return StoredRun(run.id, run.name, run.config_json, run.starting_equity, reviews, outcomes,
                     load_s=time.perf_counter() - t0)
