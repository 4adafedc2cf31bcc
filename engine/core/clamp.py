"""Clamp policy: Signal + Verdict → Decision. The LLM suggests; the clamp decides.

No number the reviewer wrote reaches the executor unbounded: size stays within [min_size_pct,
max_size_pct] of the signal's own size, a stop may only tighten, low confidence means "gate decision".
Every bound applied is written down in ``Decision.clamps``.
"""

from __future__ import annotations

import math
from typing import Any

from engine.config import PolicyConfig
from engine.types import Action, Decision, Side, Signal, Verdict, VerdictKind

__all__ = ["as_decision", "clamp"]


def _number(x: Any) -> float | None:
    """A finite real number, or None (bools, strings, NaN and infinities are not numbers here)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    try:
        f = float(x)
    except OverflowError:  # an int beyond float range, e.g. from a long digit string in a reply
        return None
    return f if math.isfinite(f) else None


def as_decision(signal: Signal, reason: str, clamps: tuple[str, ...] = ()) -> Decision:
    """The gate decision: execute the signal exactly as the strategy emitted it."""
    return Decision(signal.id, Action.EXECUTE, 100.0, signal.stop_loss, signal.take_profit, clamps, reason)


def clamp(signal: Signal, verdict: Verdict, policy: PolicyConfig, mode: str = "active") -> Decision:
    """Turn a verdict into a bounded decision. Never raises, whatever the verdict holds."""
    if mode == "off":
        return as_decision(signal, "reviewer off")
    if mode == "shadow":
        return as_decision(signal, "shadow mode: gate decision")
    kind = verdict.verdict
    if not isinstance(kind, VerdictKind):
        try:
            kind = VerdictKind(str(kind))
        except ValueError:
            return as_decision(signal, "unreadable verdict: gate decision", (f"verdict {kind!r} not understood",))
    conf = _number(verdict.confidence)
    if conf is None or conf < policy.min_confidence:
        shown = "missing" if conf is None else f"{conf:.2f}"
        return as_decision(signal, f"low confidence ({shown} < {policy.min_confidence}): gate decision")
    if kind is VerdictKind.VETO:
        return Decision(signal.id, Action.SKIP, 0.0, signal.stop_loss, signal.take_profit, (), "veto")
    if kind is VerdictKind.ACCEPT:
        return as_decision(signal, "accept")

    notes: list[str] = []
    size = _number(verdict.modified_size_pct)
    if size is None:
        if verdict.modified_size_pct is not None:
            notes.append(f"size {verdict.modified_size_pct!r} is not a number: kept {policy.max_size_pct:g} %")
        size = policy.max_size_pct
    elif size < policy.min_size_pct:
        notes.append(f"size {size:g} % raised to the minimum {policy.min_size_pct:g} %")
        size = policy.min_size_pct
    elif size > policy.max_size_pct:
        notes.append(f"size {size:g} % lowered to the maximum {policy.max_size_pct:g} %")
        size = policy.max_size_pct

    stop = signal.stop_loss
    new_sl = _number(verdict.modified_sl)
    if new_sl is None:
        if verdict.modified_sl is not None:
            notes.append(f"stop {verdict.modified_sl!r} is not a number: dropped")
    else:
        tighter = (
            signal.stop_loss <= new_sl < signal.entry if signal.side is Side.LONG
            else signal.entry < new_sl <= signal.stop_loss
        )
        if tighter:
            stop = new_sl
        else:
            notes.append(
                f"stop {new_sl:.8g} would not tighten {signal.stop_loss:.8g} (entry {signal.entry:.8g}): dropped"
            )
    return Decision(signal.id, Action.EXECUTE, size, stop, signal.take_profit, tuple(notes), "modify")
