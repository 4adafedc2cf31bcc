"""What counts when a reviewer is judged: the one predicate for "this outcome is scored" and the one trailing window.

Both the live retire rule (``engine.core.pipeline``) and everything that scores a recorded run after the fact
(the scorecard, the report, the analysis) use these, so that a retire event and the scorecard's trailing
figures are the same numbers for the same run:

- An outcome is **finished** when its trade filled and exited by stop, target or time — not when it never filled,
  is still open (no exit reason yet) or was marked out at the end of the data (``end``).
- It is **scored** when it is finished and not **ambiguous** (a bar touched both stop and target: the stop is
  assumed first, but the order is a guess); ambiguous outcomes are reported apart.
- The **trailing window** at time ``t`` holds the reviewed signals *created* in ``(t − window, t]`` whose scored
  outcome is *known* at ``t`` (its trade closed at or before ``t``): what a rule deciding at ``t`` can see.
- The **retire rule against chance** (``retire_check``) reads one window: with at least ``min_vetoes`` scored
  vetoes, the reviewer is retired when its veto precision falls below the window's base loss rate, or does not
  exceed it significantly (one-sided exact binomial test of the vetoes' losers against the base rate at
  ``alpha``), or — optionally — falls below an absolute floor ``below``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from engine.stats import binom_sf

__all__ = ["UNFINISHED_EXITS", "RetireCheck", "TrailingCounts", "TrailingWindow", "is_finished", "is_scored",
           "retire_check", "trailing_at", "trailing_at_columns"]

# Exit reasons of an outcome that did not finish: no exit yet, or marked out at the end of the data.
UNFINISHED_EXITS = frozenset({"", "end"})


def is_finished(filled: bool, exit_reason: str) -> bool:
    """The trade filled and exited by stop, target or time."""
    return bool(filled) and exit_reason not in UNFINISHED_EXITS


def is_scored(filled: bool, exit_reason: str, ambiguous: bool) -> bool:
    """Finished and not ambiguous: what veto precision, the base loss rate and the retire rule count."""
    return is_finished(filled, exit_reason) and not ambiguous


@dataclass(frozen=True, slots=True)
class TrailingCounts:
    """Scored reviewed signals in a trailing window: vetoes and those that lost, all and those that lost."""

    since_ms: int  # the window is (since_ms, until_ms] by signal time
    until_ms: int
    veto_lost: int
    vetoes: int
    lost: int
    scored: int

    @property
    def precision(self) -> float | None:
        return self.veto_lost / self.vetoes if self.vetoes else None

    @property
    def base(self) -> float | None:
        return self.lost / self.scored if self.scored else None


class TrailingWindow:
    """The trailing window, kept up to date as scored outcomes become known (see the module docstring).

    ``add`` an outcome when it becomes known (it must be scored; pass its signal's creation time, whether the
    signal was vetoed and whether its shadow trade lost), ``counts(t)`` at any later time. Signals leave the
    window by creation time, in any order of arrival. O(log n) per outcome.
    """

    def __init__(self, window_ms: int) -> None:
        if window_ms <= 0:
            raise ValueError(f"window_ms must be > 0 (got {window_ms})")
        self.window_ms = window_ms
        self._heap: list[tuple[int, int, bool, bool]] = []  # (created_ms, arrival, veto, lost)
        self._arrivals = 0
        self._veto_lost = self._vetoes = self._lost = self._scored = 0

    def __len__(self) -> int:
        return self._scored

    def add(self, created_ms: int, veto: bool, lost: bool) -> None:
        heapq.heappush(self._heap, (created_ms, self._arrivals, veto, lost))
        self._arrivals += 1
        self._scored += 1
        self._lost += lost
        if veto:
            self._vetoes += 1
            self._veto_lost += lost

    def counts(self, t: int) -> TrailingCounts:
        """The window as of ``t``: signals created in (t − window, t] (``t`` never goes back)."""
        since = t - self.window_ms
        heap = self._heap
        while heap and heap[0][0] <= since:
            _, _, veto, lost = heapq.heappop(heap)
            self._scored -= 1
            self._lost -= lost
            if veto:
                self._vetoes -= 1
                self._veto_lost -= lost
        return TrailingCounts(since, t, self._veto_lost, self._vetoes, self._lost, self._scored)


def trailing_at(times: Sequence[int], window_ms: int, outcomes: Iterable[tuple[int, int, bool, bool]]
                ) -> list[TrailingCounts]:
    """The trailing window as of each of ``times`` (ascending), built from recorded scored outcomes given as
    ``(closed_ms, created_ms, veto, lost)``: exactly what a ``TrailingWindow`` fed live would have counted then
    (an outcome is known once its trade closed, and never before its signal was created).
    """
    pending = sorted((max(closed, created), created, veto, lost) for closed, created, veto, lost in outcomes)
    window = TrailingWindow(window_ms)
    out: list[TrailingCounts] = []
    i = 0
    for t in times:
        while i < len(pending) and pending[i][0] <= t:
            _, created, veto, lost = pending[i]
            window.add(created, veto, lost)
            i += 1
        out.append(window.counts(t))
    return out


def trailing_at_columns(times: Sequence[int], window_ms: int, closed_ms: np.ndarray, created_ms: np.ndarray,
                        veto: np.ndarray, lost: np.ndarray) -> list[TrailingCounts]:
    """``trailing_at`` over scored outcomes given as arrays, counted over masks for ascending ``times``.

    A ``TrailingWindow`` fed in order of knowing (closed, never before the signal) holds at t exactly the
    outcomes known by t whose signal was created after t − window, since the window's start only moves
    forward: so each t is a count over masks. Otherwise (times out of order, no window) ``trailing_at`` replays
    the feed.
    """
    if window_ms <= 0 or any(b < a for a, b in pairwise(times)):
        return trailing_at(times, window_ms, zip(closed_ms.tolist(), created_ms.tolist(), veto.tolist(),
                                                 lost.tolist(), strict=True))
    known = np.maximum(closed_ms, created_ms)
    out = []
    for t in times:
        since = t - window_ms
        inside = (known <= t) & (created_ms > since)
        v, lo = inside & veto, inside & lost
        out.append(TrailingCounts(since, t, int(np.count_nonzero(v & lo)), int(np.count_nonzero(v)),
                                  int(np.count_nonzero(lo)), int(np.count_nonzero(inside))))
    return out


@dataclass(frozen=True, slots=True)
class RetireCheck:
    """The retire rule's verdict on one trailing window (``retire_check``), with the numbers it read.

    ``failed`` names the tests that failed, in this order: ``below_base`` (precision < base loss rate),
    ``not_significant`` (the exact one-sided p-value of "vetoes lose more often than the base rate" is above
    ``alpha``), ``below_floor`` (precision < ``below``). Empty when the reviewer keeps its place, or when the
    window holds too few scored vetoes to judge (``enough`` false).
    """

    counts: TrailingCounts
    min_vetoes: int
    alpha: float
    below: float | None
    p_value: float | None
    failed: tuple[str, ...]

    @property
    def enough(self) -> bool:
        return self.counts.vetoes >= self.min_vetoes

    @property
    def retire(self) -> bool:
        return bool(self.failed)

    @property
    def lift(self) -> float | None:
        p, b = self.counts.precision, self.counts.base
        return None if p is None or b is None else p - b

    def message(self, window_days: float) -> str:
        """One line: which tests failed, with the numbers (the retire event's message)."""
        c = self.counts
        prec, base = c.precision or 0.0, c.base or 0.0
        why: list[str] = []
        if "below_base" in self.failed:
            why.append(f"veto precision {prec:.3f} is below the base loss rate {base:.3f}")
        if "not_significant" in self.failed:
            why.append(f"veto precision {prec:.3f} does not exceed the base loss rate {base:.3f} significantly "
                       f"(exact one-sided binomial p = {self.p_value:.3g} > alpha {self.alpha:g})")
        if "below_floor" in self.failed:
            why.append(f"veto precision {prec:.3f} is below the floor {self.below:g}")
        return (f"{'; '.join(why)} — over the last {window_days:g} days, {c.veto_lost}/{c.vetoes} scored vetoes "
                f"lost, {c.lost}/{c.scored} of all scored reviewed signals: reviewer switched to shadow mode")

    def to_dict(self) -> dict[str, object]:
        c = self.counts
        return {"vetoes": c.vetoes, "vetoes_lost": c.veto_lost, "scored": c.scored, "lost": c.lost,
                "precision": c.precision, "base": c.base, "lift": self.lift, "p_value": self.p_value,
                "alpha": self.alpha, "below": self.below, "min_vetoes": self.min_vetoes,
                "enough": self.enough, "retire": self.retire, "failed": list(self.failed),
                "since_ms": c.since_ms, "until_ms": c.until_ms}


def retire_check(counts: TrailingCounts, *, min_vetoes: int, alpha: float, below: float | None = None
                 ) -> RetireCheck:
    """The one retire predicate (the live pipeline and the scorecard both call it; module docstring).

    The p-value is P(X ≥ vetoes that lost) for X ~ Binomial(vetoes, base loss rate of the window): how often
    vetoes at random, at the window's base rate, would catch as many losers.
    """
    prec, base = counts.precision, counts.base
    p_value = binom_sf(counts.veto_lost, counts.vetoes, base) if prec is not None and base is not None else None
    failed: list[str] = []
    if counts.vetoes >= min_vetoes and prec is not None and base is not None and p_value is not None:
        if prec < base:
            failed.append("below_base")
        if p_value > alpha:
            failed.append("not_significant")
        if below is not None and prec < below:
            failed.append("below_floor")
    return RetireCheck(counts, min_vetoes, alpha, below, p_value, tuple(failed))
