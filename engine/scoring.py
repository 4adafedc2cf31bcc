"""Scoring: recorded reviews, outcomes and trades → the scorecard (DESIGN §4 definitions).

Veto precision = vetoed signals whose shadow trade lost, net of fees / vetoed signals with a finished
shadow trade — shown with a Wilson 95 % interval and beside the base loss rate (the share of all reviewed
signals whose as-emitted trade lost), which is what vetoing at random would score.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.types import Outcome, OutcomeKind, ReviewRecord, Trade, VerdictKind

__all__ = ["Rate", "Scorecard", "percentile", "score", "wilson"]

_Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when there are no trials."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Rate:
    k: int
    n: int

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.k, self.n)

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.interval
        return {"k": self.k, "n": self.n, "value": self.value, "ci95": [lo, hi] if self.n else None}


@dataclass
class Scorecard:
    signals: int = 0
    blocked: int = 0
    reviewed: int = 0
    executed: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    veto_precision: Rate = Rate(0, 0)
    base_loss_rate: Rate = Rate(0, 0)
    accept_precision: Rate = Rate(0, 0)
    ambiguous_vetoes: int = 0
    modify_loss_avoided_pct: float = 0.0
    modify_gain_given_up_pct: float = 0.0
    success_rate: Rate = Rate(0, 0)
    fallthrough_rate: Rate = Rate(0, 0)
    fallback_rate: Rate = Rate(0, 0)
    tiers: dict[str, dict[str, Any]] = field(default_factory=dict)
    pnl: dict[str, Any] = field(default_factory=dict)
    breakdown: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "signals": self.signals, "blocked": self.blocked, "reviewed": self.reviewed, "executed": self.executed,
            "verdicts": self.verdicts, "sources": self.sources,
            "veto_precision": self.veto_precision.to_dict(), "base_loss_rate": self.base_loss_rate.to_dict(),
            "random_veto_baseline": self.base_loss_rate.value,
            "accept_precision": self.accept_precision.to_dict(), "ambiguous_vetoes": self.ambiguous_vetoes,
            "modify": {"loss_avoided_pct": self.modify_loss_avoided_pct,
                       "gain_given_up_pct": self.modify_gain_given_up_pct,
                       "net_pct": self.modify_loss_avoided_pct - self.modify_gain_given_up_pct},
            "rates": {"success": self.success_rate.to_dict(), "fallthrough": self.fallthrough_rate.to_dict(),
                      "fallback": self.fallback_rate.to_dict()},
            "tiers": self.tiers, "pnl": self.pnl, "breakdown": self.breakdown,
        }


def _finished(o: Outcome | None) -> bool:
    return o is not None and o.filled and o.exit_reason not in ("", "end")


def score(reviews: Sequence[ReviewRecord], outcomes: Iterable[Outcome], trades: Sequence[Trade], *,
          signals: int, starting_equity: float, first_tier: str | None = None) -> Scorecard:
    """Compute the scorecard from what was recorded (nothing is recomputed from market data)."""
    shadow: dict[str, Outcome] = {}
    realized: dict[str, Outcome] = {}
    for o in outcomes:
        (shadow if o.kind is OutcomeKind.SHADOW else realized)[o.signal_id] = o
    sc = Scorecard(signals=signals, reviewed=len(reviews), blocked=signals - len(reviews))
    sc.executed = sum(1 for r in reviews if r.decision.action.value == "execute")
    sc.verdicts = dict(Counter(str(r.verdict.verdict) for r in reviews))
    sc.sources = dict(Counter(r.verdict.source for r in reviews))

    def precision_parts(rows: Iterable[ReviewRecord]) -> tuple[Rate, Rate, int]:
        vk = vn = bk = bn = amb = 0
        for r in rows:
            o = shadow.get(r.pack.signal.id)
            if not _finished(o):
                continue
            assert o is not None
            bn += 1
            bk += o.lost
            if r.verdict.verdict is VerdictKind.VETO:
                if o.ambiguous:
                    amb += 1
                    continue
                vn += 1
                vk += o.lost
        return Rate(vk, vn), Rate(bk, bn), amb

    sc.veto_precision, sc.base_loss_rate, sc.ambiguous_vetoes = precision_parts(reviews)
    ak = an = 0
    for r in reviews:
        o = shadow.get(r.pack.signal.id)
        if r.verdict.verdict is VerdictKind.ACCEPT and _finished(o):
            an += 1
            ak += not o.lost  # type: ignore[union-attr]
    sc.accept_precision = Rate(ak, an)

    # Modify improvement, per unit of the signal's own size: realized effect = size % × realized pnl %.
    avoided = given_up = 0.0
    for r in reviews:
        if r.verdict.verdict is not VerdictKind.MODIFY or r.decision.action.value != "execute":
            continue
        s, z = shadow.get(r.pack.signal.id), realized.get(r.pack.signal.id)
        if not (_finished(s) and z is not None and z.filled):
            continue
        assert s is not None
        effect = r.decision.size_pct / 100.0 * z.pnl_pct
        if s.pnl_pct < 0:
            avoided += effect - s.pnl_pct
        else:
            given_up += s.pnl_pct - effect
    sc.modify_loss_avoided_pct, sc.modify_gain_given_up_pct = avoided, given_up

    live = [r for r in reviews if r.verdict.source != "off"]
    n = len(live)
    fallback = sum(1 for r in live if r.verdict.source == "fallback")
    through = sum(1 for r in live if any(not a.ok for a in r.verdict.attempts) or r.verdict.source == "fallback")
    sc.success_rate = Rate(n - fallback, n)
    sc.fallthrough_rate = Rate(through, n)
    sc.fallback_rate = Rate(fallback, n)

    per_tier: dict[str, dict[str, Any]] = defaultdict(lambda: {"answered": 0, "latencies_ms": [], "failures": Counter(),
                                                               "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0})
    for r in live:
        v = r.verdict
        for a in v.attempts:
            t = per_tier[a.tier]
            if not a.ok:
                t["failures"][a.kind] += 1
        if v.tier and v.source != "fallback":
            t = per_tier[v.tier]
            t["answered"] += 1
            t["latencies_ms"].append(v.latency_ms)
            t["input_tokens"] += v.input_tokens
            t["output_tokens"] += v.output_tokens
            t["cost_usd"] += v.cost_usd
    sc.tiers = {
        name: {"answered": t["answered"], "failures": dict(t["failures"]),
               "latency_p50_ms": percentile(t["latencies_ms"], 50), "latency_p95_ms": percentile(t["latencies_ms"], 95),
               "input_tokens": t["input_tokens"], "output_tokens": t["output_tokens"], "cost_usd": t["cost_usd"]}
        for name, t in sorted(per_tier.items())
    }

    pnl_total = sum(t.pnl for t in trades)
    wins = sum(1 for t in trades if t.pnl > 0)
    equity, peak, max_dd = starting_equity, starting_equity, 0.0
    for t in sorted(trades, key=lambda x: (x.closed_ms, x.signal_id)):
        equity += t.pnl
        peak = max(peak, equity)
        max_dd = max(max_dd, (peak - equity) / peak * 100 if peak > 0 else 0.0)
    sc.pnl = {
        "trades": len(trades), "wins": wins, "win_rate": wins / len(trades) if trades else None,
        "pnl": pnl_total, "return_pct": pnl_total / starting_equity * 100 if starting_equity else None,
        "fees": sum(t.fees for t in trades), "max_drawdown_pct": max_dd,
        "ambiguous_exits": sum(1 for t in trades if t.ambiguous),
        "final_equity": starting_equity + pnl_total,
    }

    def group(key_fn: Any) -> dict[str, dict[str, Any]]:
        buckets: dict[str, list[ReviewRecord]] = defaultdict(list)
        for r in reviews:
            buckets[str(key_fn(r))].append(r)
        out = {}
        for k in sorted(buckets):
            rows = buckets[k]
            vp, base, _ = precision_parts(rows)
            out[k] = {"reviewed": len(rows), "vetoes": sum(1 for r in rows if r.verdict.verdict is VerdictKind.VETO),
                      "modifies": sum(1 for r in rows if r.verdict.verdict is VerdictKind.MODIFY),
                      "veto_precision": vp.to_dict(), "base_loss_rate": base.to_dict()}
        return out

    sc.breakdown = {
        "tier": group(lambda r: r.verdict.tier or r.verdict.source),
        "strategy": group(lambda r: r.pack.signal.strategy_id),
        "regime": group(lambda r: r.pack.regime.tag),
        "symbol": group(lambda r: r.pack.signal.symbol),
    }
    return sc
