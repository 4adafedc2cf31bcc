"""How figures are shown to people — a share, a rate with its interval, a p-value — alike in the terminal
(``tradevet score``, ``backtest``) and on the report's page."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["pct", "pvalue", "rate"]


def pct(x: float | None, digits: int = 1) -> str:
    """A share as a percentage: ``0.123`` → ``12.3 %``; ``—`` when there is none."""
    return "—" if x is None else f"{x * 100:.{digits}f} %"


def rate(r: Mapping[str, Any] | None) -> str:
    """A rate (``Rate.to_dict()``) with its Wilson interval and counts: ``62.5 % [40.9–80.0] (10/16)``."""
    if not r or not r.get("n"):
        return "— (n = 0)"
    lo, hi = r["ci95"]
    return f"{r['value'] * 100:.1f} % [{lo * 100:.1f}–{hi * 100:.1f}] ({r['k']}/{r['n']})"


def pvalue(p: float | None) -> str:
    """A p-value at the precision that matters: ``< 0.0001``, four decimals below 0.01, else three."""
    if p is None:
        return "—"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"
