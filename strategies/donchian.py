"""Breakout: the close beyond the prior N-bar high (long) or low (short)."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from engine.ports import History
from engine.types import Side, Signal
from strategies.base import AtrParams, StrategyBase, prior

__all__ = ["DonchianBreakout"]


class DonchianParams(AtrParams):
    period: int = Field(48, ge=2, description="Channel length: bars before the current one.")


class DonchianBreakout(StrategyBase):
    Params = DonchianParams
    style = "breakout"

    def evaluate(self, history: History) -> Signal | None:
        p: DonchianParams = self.params  # type: ignore[assignment]
        upper, lower, atr = history.highest(p.period), history.lowest(p.period), history.atr(p.atr_period)
        if upper is None or lower is None or atr is None:
            return None
        close, prev_close = history.last.close, history.prev_close
        if prev_close is None:
            return None
        # Only the first close beyond the channel fires (not every bar of a running breakout).
        prev_upper, prev_lower = history.prev("highest", p.period), history.prev("lowest", p.period)
        if close > upper and not (prev_upper is not None and prev_close > prev_upper):
            return self.signal(history, Side.LONG, atr=atr, tags=("donchian_high",))
        if close < lower and not (prev_lower is not None and prev_close < prev_lower):
            return self.signal(history, Side.SHORT, atr=atr, tags=("donchian_low",))
        return None

    def candidates(self, history: Any) -> np.ndarray:
        p: DonchianParams = self.params  # type: ignore[assignment]
        upper, lower = history.series("highest", p.period), history.series("lowest", p.period)
        close = history.column("close")
        prev_close, prev_upper, prev_lower = prior(close), prior(upper), prior(lower)
        with np.errstate(invalid="ignore"):
            # NaN compares False: "not (prev_upper known and prev_close > prev_upper)" is ~(prev_close > prev_upper)
            return ((close > upper) & ~(prev_close > prev_upper)) | ((close < lower) & ~(prev_close < prev_lower))
