"""Series for the report: a run's reviews and outcomes → trailing-window figures, verdict mix, equity paths."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.scored import is_finished, is_scored, trailing_at
from engine.recorded.columns import split_outcomes
from engine.recorded.scorecard import Rate
from engine.stats import percentile
from engine.types import Outcome, ReviewRecord, Trade

__all__ = ["band_series", "realized_series", "rolling_series", "verdict_mix_series"]


@dataclass(slots=True)
class _Facts:
    """What a rolling window needs of one reviewed signal (``rolling_series``; the scorecard reads columns)."""

    created_ms: int
    verdict: str
    scored: bool  # finished, unambiguous shadow trade
    lost: bool  # the shadow trade lost (meaningful when scored)
    live: bool  # answered by the reviewer at all (source != "off")
    through: bool  # not answered by the first enabled tier
    fallback: bool


def _facts(r: ReviewRecord, shadow: Outcome | None) -> _Facts:
    v = r.verdict
    finished = shadow is not None and is_finished(shadow.filled, shadow.exit_reason)
    scored = shadow is not None and is_scored(shadow.filled, shadow.exit_reason, shadow.ambiguous)
    return _Facts(created_ms=r.pack.signal.created_ms, verdict=str(v.verdict), scored=scored,
                  lost=finished and shadow.pnl_pct < 0,  # type: ignore[union-attr]
                  live=v.source != "off", through=v.source == "fallback" or any(not a.ok for a in v.attempts),
                  fallback=v.source == "fallback")



def _grid(start_ms: int, end_ms: int, points: int) -> list[int]:
    points = max(2, points)
    span = max(1, end_ms - start_ms)
    return [start_ms + round(span * i / (points - 1)) for i in range(points)]


def rolling_series(reviews: Sequence[ReviewRecord], outcomes: Iterable[Outcome], *, window_ms: int,
                   points: int = 120) -> list[dict[str, Any]]:
    """Trailing-window figures at ``points`` instants across the run, by signal time (t − window, t].

    Each point: veto precision and base loss rate over the retire rule's window (``engine.core.scored``: the
    scored shadow outcomes known at t, so each point is what the rule saw then), fallthrough and fallback rates
    and the number of reviews in the window. O((reviews + points) log reviews).
    """
    if not reviews:
        return []
    shadow, _ = split_outcomes(outcomes)
    rows = sorted(((r.pack.signal.created_ms, r) for r in reviews), key=lambda x: x[0])
    facts = [(t, _facts(r, shadow.get(r.pack.signal.id))) for t, r in rows]
    grid = _grid(facts[0][0], facts[-1][0], points)
    trailing = trailing_at(grid, window_ms, (
        (shadow[r.pack.signal.id].closed_ms, t, f.verdict == "veto", f.lost)  # type: ignore[misc]
        for (t, r), (_, f) in zip(rows, facts, strict=True) if f.scored))
    counts = [0] * 3  # live, through, fallback
    out: list[dict[str, Any]] = []
    head = tail = 0

    def apply(f: _Facts, sign: int) -> None:
        if f.live:
            counts[0] += sign
            counts[1] += sign * f.through
            counts[2] += sign * f.fallback

    for t, w in zip(grid, trailing, strict=True):
        while head < len(facts) and facts[head][0] <= t:
            apply(facts[head][1], 1)
            head += 1
        while tail < head and facts[tail][0] <= t - window_ms:
            apply(facts[tail][1], -1)
            tail += 1
        out.append({"t_ms": t, "reviews": head - tail,
                    "veto_precision": Rate(w.veto_lost, w.vetoes).to_dict(),
                    "base_loss_rate": Rate(w.lost, w.scored).to_dict(),
                    "fallthrough": Rate(counts[1], counts[0]).to_dict(),
                    "fallback": Rate(counts[2], counts[0]).to_dict()})
    return out


def verdict_mix_series(reviews: Sequence[ReviewRecord], *, buckets: int = 60) -> list[dict[str, Any]]:
    """Verdict counts per time bucket (by signal time): [{start_ms, end_ms, accept, modify, veto}]."""
    if not reviews:
        return []
    times = [r.pack.signal.created_ms for r in reviews]
    start, end = min(times), max(times) + 1
    width = max(1, -(-(end - start) // max(1, buckets)))
    n = -(-(end - start) // width)
    out = [{"start_ms": start + i * width, "end_ms": start + (i + 1) * width, "accept": 0, "modify": 0, "veto": 0}
           for i in range(n)]
    for r, t in zip(reviews, times, strict=True):
        out[(t - start) // width][str(r.verdict.verdict)] += 1
    return out


def realized_series(trades: Sequence[Trade], starting_equity: float) -> list[tuple[int, float]]:
    """The realized equity path: (close ms, equity) steps in time order, from ``starting_equity``."""
    eq, out = starting_equity, []
    for t, d in sorted(((t.closed_ms, t.pnl) for t in trades), key=lambda x: x[0]):
        eq += d
        out.append((t, eq))
    return out


def band_series(paths: Sequence[Sequence[tuple[int, float]]], start_ms: int, end_ms: int, starting_equity: float,
                *, points: int = 200, mass: float = 0.9) -> list[tuple[int, float, float, float]]:
    """Pointwise (t, low, median, high) of several equity step paths on a grid of ``points`` times: the central
    ``mass`` of the random replays' equity at each time (the report's random band)."""
    import bisect

    if not paths or end_ms <= start_ms:
        return []
    tail = (1 - mass) / 2 * 100
    keys = [[t for t, _ in p] for p in paths]
    out = []
    for i in range(points + 1):
        t = start_ms + (end_ms - start_ms) * i // points
        vals = []
        for p, k in zip(paths, keys, strict=True):
            j = bisect.bisect_right(k, t)
            vals.append(p[j - 1][1] if j else starting_equity)
        lo, mid, hi = percentile(vals, tail), percentile(vals, 50), percentile(vals, 100 - tail)
        out.append((t, float(lo or 0.0), float(mid or 0.0), float(hi or 0.0)))
    return out
