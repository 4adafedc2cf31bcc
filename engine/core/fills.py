"""Fill rules, shared by the paper executor and the shadow simulator: bar + order/position → fill price.

Written intra-bar rules: entries fill at the next bar's open ± adverse slippage; when a bar touches both
stop and target the stop is assumed first and the exit is flagged ``ambiguous``; a gap through the stop
fills at the bar's open; a gap through the target fills at the open too (a resting limit order gets the
better price); the time stop exits at the close of the ``max_bars_held``-th bar.

``first_exit`` finds, over a preloaded series (a finite replay), the first bar at which ``check_exit`` would
hit: the same comparisons on the same floats, vectorised, so the executor can skip the bars that cannot exit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.types import Bar, ExitReason, Side

__all__ = ["ExitHit", "ExitSeries", "check_exit", "entry_blocked", "first_exit", "slip"]

_FIRST_CHUNK = 32  # bars searched first; each further chunk is four times longer


def slip(price: float, side: Side, buying: bool, slippage_bps: float) -> float:
    """Adverse slippage: buys fill higher, sells lower."""
    f = slippage_bps / 10_000.0
    return price * (1.0 + f) if buying else price * (1.0 - f)


@dataclass(frozen=True, slots=True)
class ExitHit:
    reason: ExitReason
    requested_price: float
    fill_price: float
    ambiguous: bool = False
    gap: bool = False


def entry_blocked(side: Side, open_price: float, stop: float, target: float) -> str | None:
    """Why an entry at this open must not happen (the open is already beyond the stop or target)."""
    if side is Side.LONG:
        if open_price <= stop:
            return f"open {open_price:.8g} gapped through the stop {stop:.8g}"
        if open_price >= target:
            return f"open {open_price:.8g} gapped through the target {target:.8g}"
    else:
        if open_price >= stop:
            return f"open {open_price:.8g} gapped through the stop {stop:.8g}"
        if open_price <= target:
            return f"open {open_price:.8g} gapped through the target {target:.8g}"
    return None


def check_exit(side: Side, stop: float, target: float, bar: Bar, bars_held: int, max_bars_held: int,
               slippage_bps: float) -> ExitHit | None:
    """The exit this bar triggers for a position, or None. ``bars_held`` counts this bar."""
    closing_buy = side is Side.SHORT  # closing a short buys
    if side is Side.LONG:
        if bar.open <= stop:
            return ExitHit(ExitReason.STOP, stop, slip(bar.open, side, False, slippage_bps), gap=True)
        if bar.open >= target:
            return ExitHit(ExitReason.TARGET, target, bar.open, gap=True)
        hit_stop, hit_target = bar.low <= stop, bar.high >= target
    else:
        if bar.open >= stop:
            return ExitHit(ExitReason.STOP, stop, slip(bar.open, side, True, slippage_bps), gap=True)
        if bar.open <= target:
            return ExitHit(ExitReason.TARGET, target, bar.open, gap=True)
        hit_stop, hit_target = bar.high >= stop, bar.low <= target
    if hit_stop:
        return ExitHit(ExitReason.STOP, stop, slip(stop, side, closing_buy, slippage_bps), ambiguous=hit_target)
    if hit_target:
        return ExitHit(ExitReason.TARGET, target, target)
    if bars_held >= max_bars_held:
        return ExitHit(ExitReason.TIME, bar.close, slip(bar.close, side, closing_buy, slippage_bps))
    return None


class ExitSeries:
    """One symbol's whole preloaded series, as ``first_exit`` reads it.

    ``lows`` is ``fmin(open, low)`` and ``highs`` is ``fmax(open, high)``: ``lows[i] <= x`` holds exactly when
    ``open <= x or low <= x`` does (a NaN compares false either way), so one comparison per side covers both
    the gap and the intra-bar test of ``check_exit``. Close times on a regular grid (no holes) are found by
    arithmetic, others by binary search.
    """

    __slots__ = ("close_ms", "first_ms", "grid_ms", "highs", "last_ms", "lows", "n", "times")

    def __init__(self, close_ms: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray) -> None:
        self.close_ms = np.asarray(close_ms, dtype=np.int64)
        self.lows = np.fmin(open_, low)
        self.highs = np.fmax(open_, high)
        self.n = n = len(self.close_ms)
        self.times = memoryview(self.close_ms)  # indexing gives Python ints
        self.first_ms = int(self.close_ms[0]) if n else 0
        self.last_ms = int(self.close_ms[-1]) if n else -1
        step = (self.last_ms - self.first_ms) // (n - 1) if n > 1 else 0
        regular = n > 1 and step > 0 and bool((np.diff(self.close_ms) == step).all())
        self.grid_ms = step if regular else 0  # 0: not a regular grid

    def index(self, close_ms: int) -> int | None:
        """Index of the bar closing at ``close_ms`` (None: no such bar)."""
        if not self.first_ms <= close_ms <= self.last_ms:
            return None
        if self.grid_ms:
            i, rest = divmod(close_ms - self.first_ms, self.grid_ms)
            return None if rest else i
        i = int(np.searchsorted(self.close_ms, close_ms))
        return i if self.times[i] == close_ms else None

    def first_at_or_after(self, t: int) -> int:
        """Index of the first bar closing at or after ``t`` (``n``: none)."""
        if t > self.last_ms:
            return self.n
        if t <= self.first_ms:
            return 0
        if self.grid_ms:
            return -((self.first_ms - t) // self.grid_ms)  # ceil((t - first) / grid)
        return int(np.searchsorted(self.close_ms, t, side="left"))


def first_exit(series: ExitSeries, start: int, side: Side, stop: float, target: float, opened_ms: int,
               max_bars_held: int, timeframe_ms: int) -> int | None:
    """Index of the first bar at or after ``start`` at which ``check_exit`` returns a hit for a position
    opened at ``opened_ms`` (None: no exit before the series ends).

    The time stop is the first bar with ``(close_ms - opened_ms) // timeframe_ms >= max_bars_held``, i.e.
    ``close_ms >= opened_ms + max_bars_held * timeframe_ms`` (integers, ``timeframe_ms > 0``); stop and target
    are searched before it in chunks that grow fourfold, so a short trade never scans the whole tail.
    """
    n = series.n
    end = min(max(series.first_at_or_after(opened_ms + max_bars_held * timeframe_ms), start), n)
    below, above = series.lows, series.highs
    lo_level, hi_level = (stop, target) if side is Side.LONG else (target, stop)
    k, size = start, _FIRST_CHUNK
    while k < end:
        e = min(end, k + size)
        hit = (below[k:e] <= lo_level) | (above[k:e] >= hi_level)
        i = int(hit.argmax())
        if hit[i]:
            return k + i
        k, size = e, size * 4
    return end if end < n else None
