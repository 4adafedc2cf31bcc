"""The scorer as it was before it was vectorised: one ``_Facts`` per reviewed signal, added up signal by signal.

Kept only as the oracle of tests/test_scoring_columns.py: ``engine.recorded.scorecard.score`` must give exactly the
scorecard this gives (the same JSON text: same keys in the same order, same doubles to the last bit).
Copied from engine/scoring.py at commit 8156b09 (what that change left untouched is imported, not copied);
do not "improve" it. (Figures added since — lift, the retire check, the per-trade modify improvement — are
written out plainly here too, as their oracle.)
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.scored import TrailingCounts, is_finished, retire_check
from engine.recorded.columns import split_outcomes as _split

# the pieces the vectorisation left as they were
from engine.recorded.scorecard import _DAY_MS, Rate, RetireParams, Scorecard, _pnl, account_of
from engine.stats import bootstrap_mean, hypergeom_range, hypergeom_sf, newcombe_diff, percentile
from engine.types import Event, Outcome, ReviewRecord, Trade, VerdictKind, ms_to_dt


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
    shadow_closed_ms: int  # -1 while the shadow trade is open
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


def _facts(r: ReviewRecord, shadow: Outcome | None, realized: Outcome | None, estimate: bool) -> _Facts:
    sig, v, d = r.pack.signal, r.verdict, r.decision
    finished = shadow is not None and is_finished(shadow.filled, shadow.exit_reason)
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
        strategy=sig.strategy_id, regime=r.pack.regime_tag, symbol=sig.symbol,
        scored=finished and not amb, lost=finished and shadow.pnl_pct < 0, ambiguous=amb,  # type: ignore[union-attr]
        executed=executed, size_pct=size, weight=sig.size_hint * r.pack.equity / 100.0,
        shadow_pnl_pct=s_pnl, shadow_closed_ms=-1 if shadow is None or shadow.closed_ms is None else shadow.closed_ms,
        effect_pct=effect, modify_delta=delta,
        live=v.source != "off", through=v.source == "fallback" or any(not a.ok for a in attempts),
        fallback=v.source == "fallback", cached=v.source == "cache", latency_ms=v.latency_ms,
        input_tokens=v.input_tokens, output_tokens=v.output_tokens, cached_tokens=v.cached_tokens,
        cost_usd=v.cost_usd,
    )


class _Acc:
    """Running tallies for one group of reviewed signals (the whole run, or one tier/strategy/regime/symbol)."""

    __slots__ = ("accept_k", "accept_n", "amb_lost", "amb_n", "amb_veto_lost", "amb_vetoes", "base_k", "base_n",
                 "cached_tokens", "cost", "fallback", "in_tokens", "latencies", "live", "mod_avoided",
                 "mod_deltas", "mod_given_up", "mod_losers", "mod_winners", "out_tokens", "reviewed",
                 "through", "verdicts", "veto_k", "veto_n")

    def __init__(self) -> None:
        self.reviewed = 0
        self.verdicts: Counter[str] = Counter()
        self.veto_k = self.veto_n = self.base_k = self.base_n = self.accept_k = self.accept_n = 0
        self.amb_n = self.amb_lost = self.amb_vetoes = self.amb_veto_lost = 0
        self.mod_avoided = self.mod_given_up = 0.0
        self.mod_losers = self.mod_winners = 0
        self.mod_deltas: list[float] = []
        self.live = self.through = self.fallback = 0
        self.latencies: list[float] = []
        self.in_tokens = self.out_tokens = self.cached_tokens = 0
        self.cost = 0.0

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
            self.mod_deltas.append(delta)
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

    def lift(self) -> dict[str, Any]:
        prec, base = self.veto, self.base
        value = None if prec.value is None or base.value is None else prec.value - base.value
        ci = newcombe_diff(prec.k, prec.n, base.k, base.n)
        return {"value": value, "ci95": list(ci) if ci is not None else None,
                "p_value": self.random_veto()["p_value"], "precision": prec.value, "base": base.value,
                "vetoes": prec.n, "scored": base.n,
                "method": "precision − base; Newcombe hybrid score interval; exact hypergeometric p (one-sided)"}

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
            "p_value": self.random_veto()["p_value"], "lift": self.lift()["value"],
            "accept_precision": Rate(self.accept_k, self.accept_n).to_dict(),
            "ambiguous": self.amb_n, "modify_net_pct": self.mod_avoided - self.mod_given_up,
            "fallthrough": Rate(self.through, self.live).to_dict(),
            "fallback": Rate(self.fallback, self.live).to_dict(),
            "latency_p50_ms": percentile(lat, 50), "latency_p95_ms": percentile(lat, 95),
            "input_tokens": self.in_tokens, "output_tokens": self.out_tokens, "cost_usd": self.cost,
        }


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
    return _score(reviews, outcomes, trades, signals=signals, starting_equity=starting_equity, events=events,
                  window_days=window_days, modify_estimate=modify_estimate)


def _score(reviews: Sequence[ReviewRecord], outcomes: Iterable[Outcome], trades: Sequence[Trade], *,
           signals: int, starting_equity: float, events: Sequence[Event], window_days: float,
           modify_estimate: bool, retire: RetireParams | None = None) -> Scorecard:
    retire = retire or RetireParams()
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
    sc.lift = total.lift()
    mod = total.modify()
    sc.modify_loss_avoided_pct, sc.modify_gain_given_up_pct = mod["loss_avoided_pct"], mod["gain_given_up_pct"]
    sc.modify = {"n": mod["n"], "losers": mod["losers"], "winners": mod["winners"],
                 "method": "estimate: clamped size × shadow pnl (modified stops not simulated)" if modify_estimate
                 else "realized: size × realized pnl against the shadow trade",
                 "unit": "pnl % points per unit of signal size, summed",
                 "improvement": {"n": len(total.mod_deltas),
                                 "mean_pct": math.fsum(total.mod_deltas) / len(total.mod_deltas)
                                 if total.mod_deltas else None,
                                 "ci95": (lambda ci: list(ci) if ci is not None else None)(
                                     bootstrap_mean(total.mod_deltas, seed=len(total.mod_deltas))),
                                 "method": "per-trade mean of (modified pnl − as-emitted pnl), percentile bootstrap, "
                                           "2000 resamples"}}
    sc.success_rate = Rate(total.live - total.fallback, total.live)
    sc.fallthrough_rate = Rate(total.through, total.live)
    sc.fallback_rate = Rate(total.fallback, total.live)
    sc.latency = {"p50_ms": percentile(total.latencies, 50), "p95_ms": percentile(total.latencies, 95),
                  "n": len(total.latencies)}
    sc.cost = {"usd": total.cost, "input_tokens": total.in_tokens, "output_tokens": total.out_tokens,
               "cached_tokens": total.cached_tokens, "cache_hits": sum(1 for f in facts if f.cached)}
    sc.tiers = _tiers(reviews)
    sc.pnl = _pnl(trades, starting_equity)
    retires = [e for e in events if e.kind == "retire"]
    end = max([f.created_ms for f in facts] + [f.shadow_closed_ms for f in facts] + [e.at_ms for e in retires],
              default=None)
    sc.trailing = _trailing(facts, window_days, end)
    sc.retire_rule = _check(facts, window_days, end, retire)
    sc.retire = [{"at_ms": e.at_ms, "at": ms_to_dt(e.at_ms).isoformat(), "message": e.message,
                  "data": {k: v for k, v in e.data},
                  "window": {**_trailing(facts, window_days, e.at_ms),
                             "check": _check(facts, window_days, e.at_ms, retire)}}
                 for e in retires]
    sc.events = dict(sorted(Counter(e.kind for e in events).items()))
    sc.account = account_of(events)  # a description of the run's account, not a figure: the same reader
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


def _check(facts: Sequence[_Facts], window_days: float, end: int | None, retire: RetireParams) -> dict[str, Any]:
    t = _trailing(facts, window_days, end)
    vp, base = t["veto_precision"], t["base_loss_rate"]
    counts = TrailingCounts(t["since_ms"] or 0, t.get("until_ms", 0), vp["k"], vp["n"], base["k"], base["n"])
    check = retire_check(counts, min_vetoes=retire.min_vetoes, alpha=retire.alpha, below=retire.below)
    return {**check.to_dict(), "window_days": window_days,
            "message": check.message(window_days) if check.retire else None}


def _trailing(facts: Sequence[_Facts], window_days: float, end: int | None) -> dict[str, Any]:
    # (the retire rule's window, restated when it became one definition with the live rule: signals created in
    # (end − window, end] whose scored shadow trade had closed by end; written out plainly, as the oracle)
    if not facts or end is None:
        return {"window_days": window_days, "since_ms": None, "veto_precision": Rate(0, 0).to_dict(),
                "base_loss_rate": Rate(0, 0).to_dict()}
    since = end - int(window_days * _DAY_MS)
    vk = vn = bk = bn = 0
    for f in facts:
        if since < f.created_ms <= end and f.scored and f.shadow_closed_ms <= end:
            bn += 1
            bk += f.lost
            if f.verdict == "veto":
                vn += 1
                vk += f.lost
    return {"window_days": window_days, "since_ms": since, "until_ms": end,
            "veto_precision": Rate(vk, vn).to_dict(), "base_loss_rate": Rate(bk, bn).to_dict()}
