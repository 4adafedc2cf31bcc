"""Fill rules, shared by the paper executor and the shadow simulator: bar + order/position → fill price.

Written intra-bar rules: entries fill at the next bar's open ± adverse slippage; when a bar touches both
stop and target the stop is assumed first and the exit is flagged ``ambiguous``; a gap through the stop
fills at the bar's open; a gap through the target fills at the open too (a resting limit order gets the
better price); the time stop exits at the close of the ``max_bars_held``-th bar.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.types import Bar, ExitReason, Side

__all__ = ["ExitHit", "check_exit", "entry_blocked", "slip"]


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
