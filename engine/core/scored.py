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
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["UNFINISHED_EXITS", "TrailingCounts", "TrailingWindow", "is_finished", "is_scored", "trailing_at"]

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
