"""Mean reversion: RSI leaving oversold (long) or overbought (short)."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, model_validator

from engine.ports import History
from engine.types import Side, Signal
from strategies.base import AtrParams, StrategyBase, prior

__all__ = ["RsiReversion"]


class RsiParams(AtrParams):
    period: int = Field(14, ge=2, description="RSI period (Wilder).")
    lower: float = Field(30, gt=0, lt=100, description="Oversold threshold.")
    upper: float = Field(70, gt=0, lt=100, description="Overbought threshold.")

    @model_validator(mode="after")
    def _order(self) -> RsiParams:
        if self.lower >= self.upper:
            raise ValueError(f"lower must be < upper (got lower={self.lower}, upper={self.upper})")
        return self


class RsiReversion(StrategyBase):
    Params = RsiParams
    style = "mean_reversion"

    def evaluate(self, history: History) -> Signal | None:
        p: RsiParams = self.params  # type: ignore[assignment]
        rsi, rsi0, atr = history.rsi(p.period), history.prev("rsi", p.period), history.atr(p.atr_period)
        if rsi is None or rsi0 is None or atr is None:
            return None
        if rsi0 < p.lower <= rsi:
            return self.signal(history, Side.LONG, atr=atr, tags=("rsi_oversold_exit",))
        if rsi0 > p.upper >= rsi:
            return self.signal(history, Side.SHORT, atr=atr, tags=("rsi_overbought_exit",))
        return None

    def candidates(self, history: Any) -> np.ndarray:
        p: RsiParams = self.params  # type: ignore[assignment]
        rsi = history.series("rsi", p.period)
        rsi0 = prior(rsi)
        with np.errstate(invalid="ignore"):
            return ((rsi0 < p.lower) & (p.lower <= rsi)) | ((rsi0 > p.upper) & (p.upper >= rsi))
