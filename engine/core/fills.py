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
_MAX_MS = 2**62  # beyond any close time: a time stop that never comes


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


@dataclass(frozen=True, slots=True)
class ExitSeries:
    """One symbol's whole preloaded series, as ``first_exit`` reads it.

    ``lows`` is ``fmin(open, low)`` and ``highs`` is ``fmax(open, high)``: ``lows[i] <= x`` holds exactly when
    ``open <= x or low <= x`` does (a NaN compares false either way), so one comparison per side covers both
    the gap and the intra-bar test of ``check_exit``.
    """

    close_ms: np.ndarray  # int64, strictly increasing
    lows: np.ndarray
    highs: np.ndarray

    @classmethod
    def of(cls, close_ms: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray) -> ExitSeries:
        return cls(np.asarray(close_ms, dtype=np.int64), np.fmin(open_, low), np.fmax(open_, high))


def first_exit(series: ExitSeries, start: int, side: Side, stop: float, target: float, opened_ms: int,
               max_bars_held: int, timeframe_ms: int) -> int | None:
    """Index of the first bar at or after ``start`` at which ``check_exit`` returns a hit for a position
    opened at ``opened_ms`` (None: no exit before the series ends).

    The time stop is the first bar with ``(close_ms - opened_ms) // timeframe_ms >= max_bars_held``, i.e.
    ``close_ms >= opened_ms + max_bars_held * timeframe_ms`` (integers, ``timeframe_ms > 0``); stop and target
    are searched before it in chunks that grow fourfold, so a short trade never scans the whole tail.
    """
    cms = series.close_ms
    n = len(cms)
    until = int(np.searchsorted(cms, min(opened_ms + max_bars_held * timeframe_ms, _MAX_MS), side="left"))
    end = min(max(until, start), n)
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
