"""Strategy base: a ``Params`` model plus one method from closed history to ``Signal | None``."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engine.ports import History
from engine.types import Side, Signal

__all__ = ["AtrParams", "StrategyBase", "prior"]


def prior(a: np.ndarray) -> np.ndarray:
    """The series one bar earlier (NaN at the first bar): for ``candidates`` masks."""
    out = np.empty_like(a, dtype=np.float64)
    out[:1] = np.nan
    out[1:] = a[:-1]
    return out


class AtrParams(BaseModel):
    """Parameters every bundled strategy shares: ATR-based stop and reward:risk target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    atr_period: int = Field(14, ge=2, description="ATR period (Wilder).")
    atr_stop: float = Field(2.0, gt=0, description="Stop distance in ATRs from the entry reference.")
    rr: float = Field(2.0, gt=0, description="Target distance as a multiple of the stop distance.")
    size_hint: float = Field(0.1, gt=0, le=1, description="Fraction of equity (notional) to commit.")


class StrategyBase:
    """Subclass, set ``Params`` and ``style``, implement ``evaluate``; call ``self.signal`` to emit."""

    Params: ClassVar[type[BaseModel]] = AtrParams
    style: ClassVar[str] = "other"  # trend | breakout | mean_reversion: the rules reviewer reads it

    def __init__(self, id: str, params: BaseModel | dict[str, Any] | None = None, *,
                 symbols: tuple[str, ...] | None = None, timeframe: str = "5m") -> None:
        self.id = id
        self.params = params if isinstance(params, BaseModel) else self.Params(**(params or {}))
        self.symbols = symbols
        self.timeframe = timeframe

    def evaluate(self, history: History) -> Signal | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def candidates(self, history: Any) -> np.ndarray | None:
        """Optional, for finite replays: given a preloaded history (``SymbolHistory.series`` / ``column``),
        a boolean mask over its whole series that is True wherever ``evaluate`` *may* return a signal.
        The pipeline then calls ``evaluate`` only there; the decision itself is still ``evaluate``'s, from
        causal data. Must never be False where evaluate would fire. None = evaluate on every bar."""
        return None

    def signal(self, history: History, side: Side, *, atr: float, tags: tuple[str, ...] = ()) -> Signal | None:
        """A signal at the last close with an ATR stop and an R-multiple target; None if degenerate."""
        p = self.params
        bar = history.last
        entry = bar.close
        dist = p.atr_stop * atr  # type: ignore[attr-defined]
        if not dist > 0 or dist >= entry:
            return None
        sign = side.sign
        stop = entry - sign * dist
        target = entry + sign * dist * p.rr  # type: ignore[attr-defined]
        if target <= 0:
            return None
        return Signal(
            id=f"{self.id}:{history.symbol}:{bar.close_ms}",
            strategy_id=self.id,
            symbol=history.symbol,
            side=side,
            created_ms=bar.close_ms,
            entry=entry,
            stop_loss=stop,
            take_profit=target,
            size_hint=p.size_hint,  # type: ignore[attr-defined]
            timeframe=self.timeframe,
            tags=(f"style:{self.style}", *tags),
        )
