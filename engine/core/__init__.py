"""The single code path of ``Pipeline.step``: closed bars → market state, strategies' signals, gates, the
context pack, the reviewer's verdict, the clamp's decision, paper fills, the portfolio — and what is scored.
"""

from __future__ import annotations

from engine import lazy

_EXPORTS = {
    "Pipeline": "pipeline", "StepStats": "pipeline",
    "MarketState": "market", "SymbolHistory": "market",
    "GATES": "gates", "GateView": "gates", "build_gates": "gates", "evaluate_gates": "gates",
    "ContextBuilder": "context", "regime_of": "context",
    "clamp": "clamp",
    "PaperExecutor": "executor", "ShadowBook": "executor",
    "Portfolio": "portfolio",
    "TrailingCounts": "scored", "TrailingWindow": "scored", "is_finished": "scored", "is_scored": "scored",
    "trailing_at": "scored",
    "sanitize_headline": "headlines", "symbol_matches": "headlines",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy(__name__, _EXPORTS)
