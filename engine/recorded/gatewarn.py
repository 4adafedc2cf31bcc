"""Gate figures of a recorded run: recorded gate results → per gate how many signals reached it and how many it
blocked, and a one-line warning for every gate that blocked nearly all of them (a threshold in the wrong units
is the usual cause: 1,000,000 of a BTC quote is not 1,000,000 dollars).
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable
from typing import Any

from engine.core.account import ACCOUNT_GATE
from engine.types import GateResult

__all__ = ["BLOCK_WARN_SHARE", "gate_summary", "gate_warnings"]

BLOCK_WARN_SHARE = 0.95  # a gate that blocks at least this share of the signals that reached it gets a warning line

# what MinVolume writes: "24h quote volume 41 BTC < 15 BTC ..." (pass: "≥"); figures as engine.core.gates._money
_VOLUME = re.compile(r"24h quote volume (?P<qv>[\d.]+[kMB]?)(?: (?P<quote>[A-Z0-9]+))?"
                     r"(?: (?P<op>[<≥]) (?P<need>[\d.]+[kMB]?))?")
_SCALE = {"k": 1e3, "M": 1e6, "B": 1e9}


def _amount(text: str) -> float:
    return float(text[:-1]) * _SCALE[text[-1]] if text[-1] in _SCALE else float(text)


def _shown(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.4g}"


def gate_summary(results: Iterable[tuple[str, GateResult]], signals: int | None = None) -> dict[str, dict[str, Any]]:
    """Per gate (in order of first appearance): signals that reached it, signals it blocked, its most common
    block reason (numbers kept), and for ``min_volume`` the thresholds it applied and the volumes it saw.

    ``signals``: all the run's signals. The account's rules (``engine.core.account``) judge every signal but
    record only their refusals, so every signal reached them."""
    out: dict[str, dict[str, Any]] = {}
    reasons: dict[str, Counter[str]] = {}
    volumes: dict[str, list[float]] = {}
    needs: dict[str, Counter[tuple[str, str]]] = {}
    for _, r in results:
        g = out.setdefault(r.gate, {"reached": 0, "blocked": 0})
        g["reached"] += 1
        if not r.passed:
            g["blocked"] += 1
            reasons.setdefault(r.gate, Counter())[r.reason] += 1
        if r.gate == "min_volume":
            m = _VOLUME.match(r.reason)
            if m:
                volumes.setdefault(r.gate, []).append(_amount(m["qv"]))
                if m["need"] and not r.passed:
                    needs.setdefault(r.gate, Counter())[(m["need"], m["quote"] or "")] += 1
    if signals is not None and ACCOUNT_GATE in out:
        out[ACCOUNT_GATE]["reached"] = max(signals, out[ACCOUNT_GATE]["blocked"])
    for gate, g in out.items():
        top = reasons.get(gate)
        g["top_reason"] = top.most_common(1)[0][0] if top else None
        if gate in volumes:
            g["median_quote_volume_24h"] = statistics.median(volumes[gate])
        if gate in needs:
            (need, quote), _ = needs[gate].most_common(1)[0]
            g["threshold"], g["quote"] = _amount(need), quote
    return out


def gate_warnings(summary: dict[str, dict[str, Any]], share: float = BLOCK_WARN_SHARE) -> list[str]:
    """One line per gate that blocked at least ``share`` of the signals that reached it, e.g.
    ``min_volume blocked 4,472 of 4,472 signals (threshold 1,000,000 BTC per 24 h; median 24h quote volume here
    41 BTC)``."""
    lines = []
    for gate, g in summary.items():
        n, b = g["reached"], g["blocked"]
        if not n or b / n < share:
            continue
        if "threshold" in g:
            q = f" {g['quote']}" if g.get("quote") else ""
            detail = f"threshold {_shown(g['threshold'])}{q} per 24 h"
            if "median_quote_volume_24h" in g:
                detail += f"; median 24h quote volume here {_shown(g['median_quote_volume_24h'])}{q}"
        else:
            detail = f"most often: {g['top_reason']}" if g.get("top_reason") else "no reason recorded"
        lines.append(f"{gate} blocked {b:,} of {n:,} signals ({detail})")
    return lines
