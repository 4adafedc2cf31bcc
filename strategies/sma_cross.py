"""Trend following: the fast SMA crossing the slow SMA → a signal in the cross's direction."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, model_validator

from engine.ports import History
from engine.types import Side, Signal
from strategies.base import AtrParams, StrategyBase, prior

__all__ = ["SmaCross"]


class SmaCrossParams(AtrParams):
    fast: int = Field(12, ge=1, description="Fast SMA period (bars).")
    slow: int = Field(48, ge=2, description="Slow SMA period (bars).")

    @model_validator(mode="after")
    def _order(self) -> SmaCrossParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast must be < slow (got fast={self.fast}, slow={self.slow})")
        return self


class SmaCross(StrategyBase):
    Params = SmaCrossParams
    style = "trend"

    def evaluate(self, history: History) -> Signal | None:
        p: SmaCrossParams = self.params  # type: ignore[assignment]
        fast, slow, atr = history.sma(p.fast), history.sma(p.slow), history.atr(p.atr_period)
        fast0, slow0 = history.prev("sma", p.fast), history.prev("sma", p.slow)
        if fast is None or slow is None or fast0 is None or slow0 is None or atr is None:
            return None
        if fast0 <= slow0 and fast > slow:
            return self.signal(history, Side.LONG, atr=atr, tags=("sma_cross_up",))
        if fast0 >= slow0 and fast < slow:
            return self.signal(history, Side.SHORT, atr=atr, tags=("sma_cross_down",))
        return None

    def candidates(self, history: Any) -> np.ndarray:
        p: SmaCrossParams = self.params  # type: ignore[assignment]
        fast, slow = history.series("sma", p.fast), history.series("sma", p.slow)
        fast0, slow0 = prior(fast), prior(slow)
        with np.errstate(invalid="ignore"):
            return ((fast0 <= slow0) & (fast > slow)) | ((fast0 >= slow0) & (fast < slow))
