"""Strategies: the registry of bundled kinds and the loader for ``"module:Class"`` user code."""

from __future__ import annotations

from strategies.base import AtrParams, StrategyBase
from strategies.donchian import DonchianBreakout
from strategies.rsi_reversion import RsiReversion
from strategies.sma_cross import SmaCross

__all__ = ["REGISTRY", "AtrParams", "DonchianBreakout", "RsiReversion", "SmaCross", "StrategyBase"]

REGISTRY: dict[str, type[StrategyBase]] = {
    "sma_cross": SmaCross,
    "donchian_breakout": DonchianBreakout,
    "rsi_reversion": RsiReversion,
}
