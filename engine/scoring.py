"""Scoring: recorded reviews, outcomes, trades and events → the scorecard (DESIGN §4 definitions).

Conventions (the figures are only as good as these; each is also stated where it is computed):

- A reviewed signal is **scored** when its shadow trade (the signal simulated as emitted) filled and
  finished by stop, target or time — not marked out at the end of the data — and was not **ambiguous**
  (a bar touched both stop and target; the stop is assumed first). Ambiguous outcomes are reported apart.
- **Veto precision** = scored vetoes whose shadow trade lost, net of fees / scored vetoes, with a Wilson
  95 % interval. It is a property of the verdict: a low-confidence veto that the clamp turned into the
  gate decision, or a veto given in shadow mode, still counts.
- **Base loss rate** = scored reviewed signals that lost / scored reviewed signals (same population).
- **Random veto** at the same veto rate: vetoing n of the N scored signals at random catches a
  hypergeometric number of the K losers. Its expectation is the base loss rate; the p-value is the exact
  one-sided P(X ≥ k) of catching at least as many losers as the reviewer did ("vetoed signals lose more
  often than all reviewed signals").
- **Gate-only counterfactual** (reviewer off: every reviewed signal executed as emitted) =
  Σ shadow pnl % / 100 × signal size_hint × equity at the signal time (the pack's ``equity``) — the
  executor's own sizing rule (notional = equity × size_hint × size %), applied to each signal
  independently: no compounding, no buying-power cuts, no exchange minimums, and the gates' view is the
  recorded one. The realized side is shown both as booked (trades) and in the same convention, so the
  reviewer's value is read off like for like.
- Cost and tokens count real calls only: a verdict served from the cache cost nothing this time.
"""

from __future__ import annotations

import contextlib
import gc
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.types import Event, Outcome, OutcomeKind, ReviewRecord, Trade, VerdictKind, ms_to_dt

__all__ = [
    "Rate",
    "Scorecard",
    "counterfactual_series",
    "gc_paused",
    "hypergeom_range",
    "hypergeom_sf",
    "percentile",
    "rolling_series",
    "score",
    "verdict_mix_series",
    "wilson",
]

_Z95 = 1.959963984540054
_DAY_MS = 86_400_000


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (nesting is fine).

    Loading and scoring a large run build 100,000s of small objects without reference cycles; the
    collector would rescan all of them again and again for nothing (1.5 s of a 100,000-signal load).
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# ------------------------------------------------------------------------------------------ statistics


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


def _log_comb(a: int, b: int) -> float:
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)


_TINY = 1e-300  # pmf terms this far below the mode's cannot move a double-precision sum


def _hypergeom_terms(N: int, K: int, n: int) -> tuple[int, float, list[float]]:
    """(first value, pmf at the mode, pmf / pmf at the mode for first, first + 1, ...) of Hypergeom(N, K, n).

    Walks out from the mode by the ratio recurrence (one multiplication per value, no log-gamma) and stops
    where the terms vanish, so a run with 100,000 signals costs a few thousand steps, not its whole support.
    """
    if not (0 <= K <= N and 0 <= n <= N):
        raise ValueError(f"hypergeometric needs 0 <= K <= N and 0 <= n <= N (got N={N}, K={K}, n={n})")
    lo, hi = max(0, n - (N - K)), min(n, K)
    mode = min(hi, max(lo, (n + 1) * (K + 1) // (N + 2)))
    peak = math.exp(_log_comb(K, mode) + _log_comb(N - K, n - mode) - _log_comb(N, n))
    up: list[float] = []
    w, i = 1.0, mode
    while i < hi:  # pmf(i + 1) / pmf(i)
        w *= (K - i) * (n - i) / ((i + 1) * (N - K - n + i + 1))
        if w < _TINY:
            break
        up.append(w)
        i += 1
    down: list[float] = []
    w, i = 1.0, mode
    while i > lo:  # pmf(i - 1) / pmf(i)
        w *= i * (N - K - n + i) / ((K - i + 1) * (n - i + 1))
        if w < _TINY:
            break
        down.append(w)
        i -= 1
    return mode - len(down), peak, [*reversed(down), 1.0, *up]


def hypergeom_sf(k: int, N: int, K: int, n: int) -> float:
    """P(X ≥ k) for X ~ Hypergeom(N, K, n): exact up to floating point (relative 1e-12 or so)."""
    first, peak, w = _hypergeom_terms(N, K, n)
    if k <= first:  # every term that matters is in the tail (those cut below ``first`` are < 1e-300 each)
        return 1.0
    if k >= first + len(w):
        return 0.0
    return min(1.0, peak * math.fsum(w[k - first:]))


def hypergeom_range(N: int, K: int, n: int, mass: float = 0.95) -> tuple[int, int]:
    """Central ``mass`` range (lo, hi) of X ~ Hypergeom(N, K, n): P(X < lo) ≤ α/2 and P(X > hi) ≤ α/2."""
    first, _, w = _hypergeom_terms(N, K, n)
    total = math.fsum(w)
    tail = (1 - mass) / 2 * total
    acc, lo = 0.0, first
    for i, x in enumerate(w):
        if acc + x > tail:
            lo = first + i
            break
        acc += x
    acc, hi = 0.0, first + len(w) - 1
    for i in range(len(w) - 1, -1, -1):
        if acc + w[i] > tail:
            hi = first + i
            break
        acc += w[i]
    return lo, hi


# -------------------------------------------------------------------------------------------- types


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
    # --- added with the complete scorecard (DESIGN §4); every key above keeps its meaning
    random_veto: dict[str, Any] = field(default_factory=dict)  # expectation, 95 % range, p-value
    ambiguous: dict[str, Any] = field(default_factory=dict)
    modify: dict[str, Any] = field(default_factory=dict)  # counts, method (realized | estimate), quote amounts
    latency: dict[str, Any] = field(default_factory=dict)  # whole-cascade latency of live reviews
    cost: dict[str, Any] = field(default_factory=dict)  # tokens and USD of real calls (cache hits are free)
    counterfactual: dict[str, Any] = field(default_factory=dict)  # gate-only vs realized
    trailing: dict[str, Any] = field(default_factory=dict)  # the retire rule's window, as of the last signal
    retire: list[dict[str, Any]] = field(default_factory=list)  # retire events: when and why
    events: dict[str, int] = field(default_factory=dict)  # timeline events by kind

    @property
    def veto_pvalue(self) -> float | None:
        return self.random_veto.get("p_value")

    @property
    def retired(self) -> bool:
        return bool(self.retire)

    def to_dict(self) -> dict[str, Any]:
        return {
            "signals": self.signals, "blocked": self.blocked, "reviewed": self.reviewed, "executed": self.executed,
            "verdicts": self.verdicts, "sources": self.sources,
            "veto_precision": self.veto_precision.to_dict(), "base_loss_rate": self.base_loss_rate.to_dict(),
            "random_veto_baseline": self.base_loss_rate.value,
            "random_veto": self.random_veto,
            "accept_precision": self.accept_precision.to_dict(), "ambiguous_vetoes": self.ambiguous_vetoes,
            "ambiguous": self.ambiguous,
            "modify": {"loss_avoided_pct": self.modify_loss_avoided_pct,
                       "gain_given_up_pct": self.modify_gain_given_up_pct,
                       "net_pct": self.modify_loss_avoided_pct - self.modify_gain_given_up_pct, **self.modify},
            "rates": {"success": self.success_rate.to_dict(), "fallthrough": self.fallthrough_rate.to_dict(),
                      "fallback": self.fallback_rate.to_dict()},
            "tiers": self.tiers, "latency": self.latency, "cost": self.cost, "pnl": self.pnl,
            "counterfactual": self.counterfactual, "trailing": self.trailing,
            "retire": self.retire, "retired": self.retired, "events": self.events,
            "breakdown": self.breakdown,
        }


# ------------------------------------------------------------------------------------------- facts


@dataclass(slots=True)
class _Facts:
    """What scoring needs of one reviewed signal, extracted once (the breakdowns reread it five times)."""

    created_ms: int
    verdict: str
    source: str
    tier: str
    strategy: str
    regime: str
    symbol: str
    scored: bool  # finished, unambiguous shadow trade
    lost: bool  # the shadow trade lost (meaningful when scored or ambiguous)
    ambiguous: bool  # finished shadow trade flagged ambiguous
    executed: bool
    size_pct: float
    weight: float  # size_hint × equity at the signal time: quote amount per 100 % of shadow pnl
    shadow_pnl_pct: float | None  # filled shadow trades, "end" marks included (for the counterfactual)
    effect_pct: float | None  # the decision's own pnl % per unit of signal size (realized or estimated)
    modify_delta: tuple[bool, float] | None  # (shadow lost, effect − shadow) of an acted-on modification
    live: bool  # answered by the reviewer at all (source != "off")
    through: bool  # not answered by the first enabled tier
    fallback: bool
    cached: bool
    latency_ms: float
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float


def _finished(o: Outcome | None) -> bool:
    return o is not None and o.filled and o.exit_reason not in ("", "end")


def _facts(r: ReviewRecord, shadow: Outcome | None, realized: Outcome | None, estimate: bool) -> _Facts:
    sig, v, d = r.pack.signal, r.verdict, r.decision
    finished = _finished(shadow)
    amb = finished and shadow.ambiguous  # type: ignore[union-attr]
    executed = d.action.value == "execute"
    size = d.size_pct if executed else 0.0
    s_pnl = shadow.pnl_pct if shadow is not None and shadow.filled else None
    # The decision's own pnl % per unit of signal size: the realized trade scaled by its size, or, in a
    # backtest (no realized trades), the shadow trade scaled by the clamped size — a modified stop is
    # then not simulated (that needs bars).
    # An entry that never filled earned nothing; a missing outcome (still open) is left out (None).
    effect: float | None = None
    if not executed:
        effect = 0.0
    elif estimate:
        effect = None if shadow is None else (0.0 if s_pnl is None else size / 100.0 * s_pnl)
    elif realized is not None:
        effect = size / 100.0 * realized.pnl_pct if realized.filled else 0.0
    delta = None
    if (v.verdict is VerdictKind.MODIFY and executed and finished and effect is not None
            and (estimate or (realized is not None and realized.filled))):
        delta = (shadow.pnl_pct < 0, effect - shadow.pnl_pct)  # type: ignore[union-attr]
    attempts = v.attempts
    return _Facts(
        created_ms=sig.created_ms, verdict=str(v.verdict), source=v.source, tier=v.tier or v.source,
        strategy=sig.strategy_id, regime=str(r.pack.regime.tag), symbol=sig.symbol,
        scored=finished and not amb, lost=finished and shadow.pnl_pct < 0, ambiguous=amb,  # type: ignore[union-attr]
        executed=executed, size_pct=size, weight=sig.size_hint * r.pack.equity / 100.0,
        shadow_pnl_pct=s_pnl, effect_pct=effect, modify_delta=delta,
        live=v.source != "off", through=v.source == "fallback" or any(not a.ok for a in attempts),
        fallback=v.source == "fallback", cached=v.source == "cache", latency_ms=v.latency_ms,
        input_tokens=v.input_tokens, output_tokens=v.output_tokens, cached_tokens=v.cached_tokens,
        cost_usd=v.cost_usd,
    )


class _Acc:
    """Running tallies for one group of reviewed signals (the whole run, or one tier/strategy/regime/symbol)."""

    __slots__ = ("accept_k", "accept_n", "amb_lost", "amb_n", "amb_veto_lost", "amb_vetoes", "base_k", "base_n",
                 "cached_tokens", "cost", "fallback", "gate_only", "in_tokens", "latencies", "live", "mod_avoided",
                 "mod_given_up", "mod_losers", "mod_winners", "out_tokens", "reviewed", "reviewed_est", "through",
                 "verdicts", "veto_k", "veto_n")

    def __init__(self) -> None:
        self.reviewed = 0
        self.verdicts: Counter[str] = Counter()
        self.veto_k = self.veto_n = self.base_k = self.base_n = self.accept_k = self.accept_n = 0
        self.amb_n = self.amb_lost = self.amb_vetoes = self.amb_veto_lost = 0
        self.mod_avoided = self.mod_given_up = 0.0
        self.mod_losers = self.mod_winners = 0
        self.live = self.through = self.fallback = 0
        self.latencies: list[float] = []
        self.in_tokens = self.out_tokens = self.cached_tokens = 0
        self.cost = 0.0
        self.gate_only = self.reviewed_est = 0.0

    def add(self, f: _Facts) -> None:
        self.reviewed += 1
        self.verdicts[f.verdict] += 1
        veto = f.verdict == "veto"
        if f.scored:
            self.base_n += 1
            self.base_k += f.lost
            if veto:
                self.veto_n += 1
                self.veto_k += f.lost
            elif f.verdict == "accept" and f.live:
                self.accept_n += 1
                self.accept_k += not f.lost
        elif f.ambiguous:
            self.amb_n += 1
            self.amb_lost += f.lost
            if veto:
                self.amb_vetoes += 1
                self.amb_veto_lost += f.lost
        if f.modify_delta is not None:
            shadow_lost, delta = f.modify_delta
            if shadow_lost:
                self.mod_losers += 1
                self.mod_avoided += delta
            else:
                self.mod_winners += 1
                self.mod_given_up -= delta
        if f.live:
            self.live += 1
            self.through += f.through
            self.fallback += f.fallback
            self.latencies.append(f.latency_ms)
            if not f.cached:
                self.in_tokens += f.input_tokens
                self.out_tokens += f.output_tokens
                self.cached_tokens += f.cached_tokens
                self.cost += f.cost_usd
        if f.shadow_pnl_pct is not None:
            self.gate_only += f.shadow_pnl_pct * f.weight
        if f.effect_pct is not None:
            self.reviewed_est += f.effect_pct * f.weight

    # ------------------------------------------------------------------------------------- figures
    @property
    def veto(self) -> Rate:
        return Rate(self.veto_k, self.veto_n)

    @property
    def base(self) -> Rate:
        return Rate(self.base_k, self.base_n)

    def random_veto(self) -> dict[str, Any]:
        N, K, n, k = self.base_n, self.base_k, self.veto_n, self.veto_k
        if n == 0 or N == 0:
            return {"expected": K / N if N else None, "range95": None, "veto_rate": 0.0 if N else None,
                    "p_value": None, "method": "hypergeometric"}
        lo, hi = hypergeom_range(N, K, n)
        return {"expected": K / N, "range95": [lo / n, hi / n], "veto_rate": n / N, "p_value": hypergeom_sf(k, N, K, n),
                "method": "hypergeometric"}

    def modify(self) -> dict[str, Any]:
        return {"n": self.mod_losers + self.mod_winners, "losers": self.mod_losers, "winners": self.mod_winners,
                "loss_avoided_pct": self.mod_avoided, "gain_given_up_pct": self.mod_given_up,
                "net_pct": self.mod_avoided - self.mod_given_up}

    def ambiguous(self) -> dict[str, Any]:
        with_amb = Rate(self.veto_k + self.amb_veto_lost, self.veto_n + self.amb_vetoes)
        return {"reviewed": self.amb_n, "lost": self.amb_lost, "vetoes": self.amb_vetoes,
                "vetoes_lost": self.amb_veto_lost, "veto_precision_with_ambiguous": with_amb.to_dict()}

    def figures(self) -> dict[str, Any]:
        """Every figure of this group, as plain data."""
        lat = self.latencies
        return {
            "reviewed": self.reviewed, "vetoes": self.verdicts.get("veto", 0),
            "modifies": self.verdicts.get("modify", 0), "accepts": self.verdicts.get("accept", 0),
            "veto_precision": self.veto.to_dict(), "base_loss_rate": self.base.to_dict(),
            "p_value": self.random_veto()["p_value"],
            "accept_precision": Rate(self.accept_k, self.accept_n).to_dict(),
            "ambiguous": self.amb_n, "modify_net_pct": self.mod_avoided - self.mod_given_up,
            "fallthrough": Rate(self.through, self.live).to_dict(),
            "fallback": Rate(self.fallback, self.live).to_dict(),
            "latency_p50_ms": percentile(lat, 50), "latency_p95_ms": percentile(lat, 95),
            "input_tokens": self.in_tokens, "output_tokens": self.out_tokens, "cost_usd": self.cost,
            "gate_only_pnl": self.gate_only, "reviewed_est_pnl": self.reviewed_est,
        }


# -------------------------------------------------------------------------------------------- score


def _split(outcomes: Iterable[Outcome]) -> tuple[dict[str, Outcome], dict[str, Outcome]]:
    shadow: dict[str, Outcome] = {}
    realized: dict[str, Outcome] = {}
    for o in outcomes:
        (shadow if o.kind is OutcomeKind.SHADOW else realized)[o.signal_id] = o
    return shadow, realized


def score(reviews: Sequence[ReviewRecord], outcomes: Iterable[Outcome], trades: Sequence[Trade], *,
          signals: int, starting_equity: float, first_tier: str | None = None, events: Sequence[Event] = (),
          window_days: float = 14.0, modify_estimate: bool = False) -> Scorecard:
    """Compute the scorecard from what was recorded (nothing is recomputed from market data).

    ``modify_estimate``: there are no realized trades for these decisions (a backtest): a decision's
    effect is estimated as its clamped size × the shadow trade. ``window_days``: the trailing window
    (the retire rule's) reported in ``trailing``. ``first_tier`` is accepted for compatibility; the
    fallthrough rate reads the recorded tier attempts instead.
    """
    del first_tier
    with gc_paused():
        return _score(reviews, outcomes, trades, signals=signals, starting_equity=starting_equity, events=events,
                      window_days=window_days, modify_estimate=modify_estimate)


def _score(reviews: Sequence[ReviewRecord], outcomes: Iterable[Outcome], trades: Sequence[Trade], *,
           signals: int, starting_equity: float, events: Sequence[Event], window_days: float,
           modify_estimate: bool) -> Scorecard:
    shadow, realized = _split(outcomes)
    facts = [_facts(r, shadow.get(r.pack.signal.id), realized.get(r.pack.signal.id), modify_estimate)
             for r in reviews]
    total = _Acc()
    dims: dict[str, Callable[[_Facts], str]] = {
        "tier": lambda f: f.tier, "strategy": lambda f: f.strategy, "regime": lambda f: f.regime,
        "symbol": lambda f: f.symbol,
    }
    groups: dict[str, dict[str, _Acc]] = {d: defaultdict(_Acc) for d in dims}
    for f in facts:
        total.add(f)
        groups["tier"][f.tier].add(f)
        groups["strategy"][f.strategy].add(f)
        groups["regime"][f.regime].add(f)
        groups["symbol"][f.symbol].add(f)

    sc = Scorecard(signals=signals, reviewed=len(reviews), blocked=signals - len(reviews))
    sc.executed = sum(1 for f in facts if f.executed)
    sc.verdicts = dict(total.verdicts)
    sc.sources = dict(Counter(f.source for f in facts))
    sc.veto_precision, sc.base_loss_rate = total.veto, total.base
    sc.accept_precision = Rate(total.accept_k, total.accept_n)
    sc.ambiguous_vetoes = total.amb_vetoes
    sc.ambiguous = total.ambiguous()
    sc.random_veto = total.random_veto()
    mod = total.modify()
    sc.modify_loss_avoided_pct, sc.modify_gain_given_up_pct = mod["loss_avoided_pct"], mod["gain_given_up_pct"]
    sc.modify = {"n": mod["n"], "losers": mod["losers"], "winners": mod["winners"],
                 "method": "estimate: clamped size × shadow pnl (modified stops not simulated)" if modify_estimate
                 else "realized: size × realized pnl against the shadow trade",
                 "unit": "pnl % points per unit of signal size, summed"}
    sc.success_rate = Rate(total.live - total.fallback, total.live)
    sc.fallthrough_rate = Rate(total.through, total.live)
    sc.fallback_rate = Rate(total.fallback, total.live)
    sc.latency = {"p50_ms": percentile(total.latencies, 50), "p95_ms": percentile(total.latencies, 95),
                  "n": len(total.latencies)}
    sc.cost = {"usd": total.cost, "input_tokens": total.in_tokens, "output_tokens": total.out_tokens,
               "cached_tokens": total.cached_tokens, "cache_hits": sum(1 for f in facts if f.cached)}
    sc.tiers = _tiers(reviews)
    sc.pnl = _pnl(trades, starting_equity)
    sc.counterfactual = _counterfactual(total, facts, sc.pnl, starting_equity, modify_estimate)
    sc.trailing = _trailing(facts, window_days)
    sc.retire = [{"at_ms": e.at_ms, "at": ms_to_dt(e.at_ms).isoformat(), "message": e.message,
                  "data": {k: v for k, v in e.data}} for e in events if e.kind == "retire"]
    sc.events = dict(sorted(Counter(e.kind for e in events).items()))
    sc.breakdown = {d: {k: g[k].figures() for k in sorted(g)} for d, g in groups.items()}
    return sc


def _tiers(reviews: Sequence[ReviewRecord]) -> dict[str, dict[str, Any]]:
    """Per tier: answers, cache hits, failures by kind, latency of real calls, tokens and cost of real calls."""
    per: dict[str, dict[str, Any]] = defaultdict(lambda: {"answered": 0, "cache_hits": 0, "calls": 0,
                                                          "latencies_ms": [], "failures": Counter(),
                                                          "input_tokens": 0, "output_tokens": 0,
                                                          "cached_tokens": 0, "cost_usd": 0.0})
    for r in reviews:
        v = r.verdict
        if v.source == "off":
            continue
        for a in v.attempts:
            t = per[a.tier]
            if not a.ok:
                t["failures"][a.kind] += 1
            # a refused call (open breaker) and a cache read say nothing about the tier's own speed
            if a.kind not in ("cache", "breaker_open", "deadline", "cancelled"):
                t["calls"] += 1
                t["latencies_ms"].append(a.latency_ms)
        if v.tier and v.source != "fallback":
            t = per[v.tier]
            t["answered"] += 1
            if v.source == "cache":
                t["cache_hits"] += 1
                continue
            if not v.attempts:  # verdicts recorded without attempts: the cascade latency is all there is
                t["calls"] += 1
                t["latencies_ms"].append(v.latency_ms)
            t["input_tokens"] += v.input_tokens
            t["output_tokens"] += v.output_tokens
            t["cached_tokens"] += v.cached_tokens
            t["cost_usd"] += v.cost_usd
    return {
        name: {"answered": t["answered"], "cache_hits": t["cache_hits"], "calls": t["calls"],
               "failures": dict(t["failures"]),
               "latency_p50_ms": percentile(t["latencies_ms"], 50), "latency_p95_ms": percentile(t["latencies_ms"], 95),
               "input_tokens": t["input_tokens"], "output_tokens": t["output_tokens"],
               "cached_tokens": t["cached_tokens"], "cost_usd": t["cost_usd"]}
        for name, t in sorted(per.items())
    }


def _pnl(trades: Sequence[Trade], starting_equity: float) -> dict[str, Any]:
    pnl_total = sum(t.pnl for t in trades)
    wins = sum(1 for t in trades if t.pnl > 0)
    equity, peak, max_dd = starting_equity, starting_equity, 0.0
    for t in sorted(trades, key=lambda x: (x.closed_ms, x.signal_id)):
        equity += t.pnl
        peak = max(peak, equity)
        max_dd = max(max_dd, (peak - equity) / peak * 100 if peak > 0 else 0.0)
    return {
        "trades": len(trades), "wins": wins, "win_rate": wins / len(trades) if trades else None,
        "pnl": pnl_total, "return_pct": pnl_total / starting_equity * 100 if starting_equity else None,
        "fees": sum(t.fees for t in trades), "max_drawdown_pct": max_dd,
        "ambiguous_exits": sum(1 for t in trades if t.ambiguous),
        "final_equity": starting_equity + pnl_total,
    }


def _counterfactual(total: _Acc, facts: Sequence[_Facts], pnl: dict[str, Any], starting_equity: float,
                    estimate: bool) -> dict[str, Any]:
    filled = sum(1 for f in facts if f.shadow_pnl_pct is not None)

    def ret(x: float | None) -> float | None:
        return None if x is None or not starting_equity else x / starting_equity * 100

    realized = None if estimate else pnl.get("pnl")
    return {
        "gate_only_pnl": total.gate_only, "gate_only_return_pct": ret(total.gate_only),
        "reviewed_est_pnl": total.reviewed_est, "reviewed_est_return_pct": ret(total.reviewed_est),
        "reviewer_value_est": total.reviewed_est - total.gate_only,
        "realized_pnl": realized, "realized_return_pct": ret(realized),
        "signals": len(facts), "shadow_filled": filled,
        "convention": "shadow pnl % × size_hint × equity at the signal time, per signal, no compounding; "
                      + ("decisions estimated as clamped size × shadow pnl" if estimate
                         else "reviewed_est: realized pnl % × size_hint × size % × equity at the signal time"),
    }


def _trailing(facts: Sequence[_Facts], window_days: float) -> dict[str, Any]:
    if not facts:
        return {"window_days": window_days, "since_ms": None, "veto_precision": Rate(0, 0).to_dict(),
                "base_loss_rate": Rate(0, 0).to_dict()}
    end = max(f.created_ms for f in facts)
    since = end - int(window_days * _DAY_MS)
    vk = vn = bk = bn = 0
    for f in facts:
        if f.created_ms > since and f.scored:
            bn += 1
            bk += f.lost
            if f.verdict == "veto":
                vn += 1
                vk += f.lost
    return {"window_days": window_days, "since_ms": since, "until_ms": end,
            "veto_precision": Rate(vk, vn).to_dict(), "base_loss_rate": Rate(bk, bn).to_dict()}


# --------------------------------------------------------------------------------- series (report)


def _grid(start_ms: int, end_ms: int, points: int) -> list[int]:
    points = max(2, points)
    span = max(1, end_ms - start_ms)
    return [start_ms + round(span * i / (points - 1)) for i in range(points)]


def rolling_series(reviews: Sequence[ReviewRecord], outcomes: Iterable[Outcome], *, window_ms: int,
                   points: int = 120) -> list[dict[str, Any]]:
    """Trailing-window figures at ``points`` instants across the run, by signal time (t − window, t].

    Each point: veto precision and base loss rate (Rate dicts with Wilson intervals), fallthrough and
    fallback rates, the number of reviews in the window. O(reviews + points): one sweep, two pointers.
    """
    if not reviews:
        return []
    shadow, _ = _split(outcomes)
    rows = sorted(((r.pack.signal.created_ms, r) for r in reviews), key=lambda x: x[0])
    facts = [(t, _facts(r, shadow.get(r.pack.signal.id), None, True)) for t, r in rows]
    grid = _grid(facts[0][0], facts[-1][0], points)
    counts = [0] * 7  # veto_k, veto_n, base_k, base_n, live, through, fallback
    out: list[dict[str, Any]] = []
    head = tail = 0

    def apply(f: _Facts, sign: int) -> None:
        if f.scored:
            counts[2] += sign * f.lost
            counts[3] += sign
            if f.verdict == "veto":
                counts[0] += sign * f.lost
                counts[1] += sign
        if f.live:
            counts[4] += sign
            counts[5] += sign * f.through
            counts[6] += sign * f.fallback

    for t in grid:
        while head < len(facts) and facts[head][0] <= t:
            apply(facts[head][1], 1)
            head += 1
        while tail < head and facts[tail][0] <= t - window_ms:
            apply(facts[tail][1], -1)
            tail += 1
        out.append({"t_ms": t, "reviews": head - tail,
                    "veto_precision": Rate(counts[0], counts[1]).to_dict(),
                    "base_loss_rate": Rate(counts[2], counts[3]).to_dict(),
                    "fallthrough": Rate(counts[5], counts[4]).to_dict(),
                    "fallback": Rate(counts[6], counts[4]).to_dict()})
    return out


def verdict_mix_series(reviews: Sequence[ReviewRecord], *, buckets: int = 60) -> list[dict[str, Any]]:
    """Verdict counts per time bucket (by signal time): [{start_ms, end_ms, accept, modify, veto}]."""
    if not reviews:
        return []
    times = [r.pack.signal.created_ms for r in reviews]
    start, end = min(times), max(times) + 1
    width = max(1, -(-(end - start) // max(1, buckets)))
    n = -(-(end - start) // width)
    out = [{"start_ms": start + i * width, "end_ms": start + (i + 1) * width, "accept": 0, "modify": 0, "veto": 0}
           for i in range(n)]
    for r, t in zip(reviews, times, strict=True):
        out[(t - start) // width][str(r.verdict.verdict)] += 1
    return out


def counterfactual_series(reviews: Sequence[ReviewRecord], outcomes: Iterable[Outcome], trades: Sequence[Trade],
                          starting_equity: float) -> dict[str, list[tuple[int, float]]]:
    """Equity paths: realized (booked trades) and gate-only (shadow trades, the scorecard's convention),
    each as (close ms, equity) steps in time order, starting at ``starting_equity``."""
    shadow, _ = _split(outcomes)
    steps: list[tuple[int, float]] = []
    for r in reviews:
        o = shadow.get(r.pack.signal.id)
        if o is not None and o.filled and o.closed_ms is not None:
            steps.append((o.closed_ms, o.pnl_pct / 100.0 * r.pack.signal.size_hint * r.pack.equity))
    steps.sort(key=lambda x: x[0])
    realized = sorted(((t.closed_ms, t.pnl) for t in trades), key=lambda x: x[0])

    def path(xs: list[tuple[int, float]]) -> list[tuple[int, float]]:
        eq, out = starting_equity, []
        for t, d in xs:
            eq += d
            out.append((t, eq))
        return out

    return {"realized": path(realized), "gate_only": path(steps)}
