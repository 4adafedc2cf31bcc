"""The scorecard: recorded reviews, outcomes, trades and events → every figure of DESIGN §4, and a run's scorecard.

Conventions (the figures are only as good as these; each is also stated where it is computed):

- A reviewed signal is **scored** when its shadow trade (the signal simulated as emitted) filled and
  finished by stop, target or time — not marked out at the end of the data — and was not **ambiguous**
  (a bar touched both stop and target; the stop is assumed first). Ambiguous outcomes are reported apart.
- **Veto precision** = scored vetoes whose shadow trade lost, net of fees / scored vetoes, with a Wilson
  95 % interval. It is a property of the verdict: a low-confidence veto that the clamp turned into the
  gate decision, or a veto given in shadow mode, still counts.
- **Base loss rate** = scored reviewed signals that lost / scored reviewed signals (same population).
- **Lift** (the headline) = veto precision − base loss rate, with Newcombe's hybrid score interval (from the
  two Wilson intervals; conservative, the vetoes being part of the base) and the exact one-sided p-value of
  the random-veto test below.
- **Random veto** at the same veto rate: vetoing n of the N scored signals at random catches a
  hypergeometric number of the K losers. Its expectation is the base loss rate; the p-value is the exact
  one-sided P(X ≥ k) of catching at least as many losers as the reviewer did ("vetoed signals lose more
  often than all reviewed signals").
- **Reviewer value in money** comes from real replays of the run (``engine.recorded.value``, ``tradevet value``):
  the reviewer-off replay and random-reviewer replays, stored as counterfactual runs of this one. The scorecard
  reports them (``value``; ``counterfactual`` holds the reviewer-off replay) when they exist. The old "gate-only"
  sum of shadow trades — no position limits, no buying power, no compounding; not a possible run — is gone.
- Cost and tokens count real calls only: a verdict served from the cache cost nothing this time.

Computation. The scorecard is counted over arrays, one per fact of the reviewed signals (``SignalColumns``:
the signals and their outcomes, shared by every reviewer a backtest compares; ``VerdictColumns``: one
reviewer's verdicts and decisions). Counts are exact; every float sum is accumulated one term at a time in
review order (``np.bincount`` with weights, ``np.add.at``), which is the order the per-signal loop this
replaced added them in, so the figures are the same doubles (tests/test_scoring_columns.py holds that loop).
"""


from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress
from typing import Any

import numpy as np

from engine.config import stored_value
from engine.core.scored import TrailingCounts, retire_check, trailing_at_columns
from engine.ports import RunReader
from engine.recorded.columns import (
    _NOT_CALLS,
    _OF_ATTEMPT,
    _PACK,
    Columns,
    SignalColumns,
    VerdictColumns,
    _bools,
    _floats,
    _transpose,
    _where,
    columns,
    gc_paused,
)
from engine.recorded.gatewarn import gate_summary, gate_warnings
from engine.recorded.stored import StoredRun, load_stored
from engine.recorded.value import max_drawdown_pct, value_summary
from engine.stats import bootstrap_mean, hypergeom_range, hypergeom_sf, newcombe_diff, wilson
from engine.types import Event, Outcome, ReviewRecord, Trade, ms_to_dt

__all__ = ["Rate", "RetireParams", "Scorecard", "run_scorecard", "score", "score_columns"]

_DAY_MS = 86_400_000


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
    counterfactual: dict[str, Any] = field(default_factory=dict)  # the reviewer-off replay (``value``), if run
    trailing: dict[str, Any] = field(default_factory=dict)  # the retire rule's window, as of the last signal
    retire: list[dict[str, Any]] = field(default_factory=list)  # retire events: when and why
    events: dict[str, int] = field(default_factory=dict)  # timeline events by kind
    spend: dict[str, Any] = field(default_factory=dict)  # cost per day and tier, budget use, budget events
    account: dict[str, Any] = field(default_factory=dict)  # netting | hedging, market type per symbol
    # --- gates of a recorded run (run_scorecard; a backtest re-reviews reviewed signals only): per gate the
    # signals that reached it and those it blocked, and a warning line per gate that blocked ≥ 95 % of them
    gates: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    lift: dict[str, Any] = field(default_factory=dict)  # precision − base, interval, exact p: the headline
    retire_rule: dict[str, Any] = field(default_factory=dict)  # the retire check on the window as of the end
    value: dict[str, Any] = field(default_factory=dict)  # reviewer-off and random-reviewer replays (``value``)

    @property
    def veto_pvalue(self) -> float | None:
        return self.random_veto.get("p_value")

    @property
    def retired(self) -> bool:
        return bool(self.retire)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lift": self.lift, "retire_rule": self.retire_rule, "value": self.value,
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
            "tiers": self.tiers, "latency": self.latency, "cost": self.cost, "spend": self.spend, "pnl": self.pnl,
            "counterfactual": self.counterfactual, "trailing": self.trailing,
            "retire": self.retire, "retired": self.retired, "events": self.events,
            "account": self.account, "breakdown": self.breakdown, "gates": self.gates, "warnings": self.warnings,
        }



def _sorted_percentile(xs: Sequence[float], q: float) -> float | None:
    """``percentile`` of values already sorted."""
    if not len(xs):
        return None
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    a, b = float(xs[lo]), float(xs[hi])
    return a + (b - a) * (pos - lo)


class _Tally:
    """Running tallies of every group of one breakdown dimension (or of the whole run: one group)."""

    def __init__(self, c: Columns, codes: np.ndarray, groups: int) -> None:
        def count(mask: np.ndarray) -> list[int]:
            return np.bincount(codes[mask], minlength=groups).tolist()

        def total(mask: np.ndarray, values: np.ndarray) -> list[Any]:
            # in review order, one term at a time: the same double as ``x += term`` per signal
            if values.dtype.kind == "f":
                sums = np.bincount(codes[mask], weights=values[mask], minlength=groups)
                return sums.astype(np.float64, copy=False).tolist()  # no terms at all: bincount gives ints
            out = np.zeros(groups, dtype=values.dtype)
            np.add.at(out, codes[mask], values[mask])
            return out.tolist()

        self._random: dict[int, tuple[int, int, float]] = {}  # group → random_veto's range and p-value
        scored, lost, veto = c.scored, c.lost, c.veto
        amb, mod, live, paid = c.ambiguous, c.modified, c.live, c.live & ~c.cached
        self.reviewed = np.bincount(codes, minlength=groups).tolist()
        self.vetoes, self.accepts, self.modifies = count(veto), count(c.accept), count(c.modify)
        self.base_n, self.base_k = count(scored), count(scored & lost)
        self.veto_n, self.veto_k = count(scored & veto), count(scored & veto & lost)
        accepted = scored & ~veto & c.accept & live
        self.accept_n, self.accept_k = count(accepted), count(accepted & ~lost)
        self.amb_n, self.amb_lost = count(amb), count(amb & lost)
        self.amb_vetoes, self.amb_veto_lost = count(amb & veto), count(amb & veto & lost)
        mod_lost = mod & lost  # a modification counts only with a finished shadow trade
        mod_won = mod & ~mod_lost
        self.mod_losers, self.mod_winners = count(mod_lost), count(mod_won)
        self.mod_avoided = total(mod_lost, c.modify_delta)
        self.mod_given_up = total(mod_won, -c.modify_delta)  # 0.0 - d1 - d2 ... is 0.0 + (-d1) + (-d2) ...
        self.live, self.through, self.fallback = count(live), count(live & c.through), count(live & c.fallback)
        self.in_tokens, self.out_tokens = total(paid, c.input_tokens), total(paid, c.output_tokens)
        self.cached_tokens, self.cost = total(paid, c.cached_tokens), total(paid, c.cost_usd)
        # each group's latencies of live reviews, sorted (only their order statistics are reported)
        lat, lat_codes = c.latency_ms[live], codes[live]
        order = np.lexsort((lat, lat_codes))
        bounds = np.concatenate(([0], np.cumsum(np.bincount(lat_codes, minlength=groups))))
        sorted_lat = lat[order]
        self.latencies = [sorted_lat[bounds[i]:bounds[i + 1]] for i in range(groups)]

    # ------------------------------------------------------------------------------------- figures
    def lift(self, i: int) -> dict[str, Any]:
        """Veto precision − base loss rate, its interval and the exact one-sided p-value (module docstring)."""
        prec, base = self.veto_rate(i), self.base(i)
        value = None if prec.value is None or base.value is None else prec.value - base.value
        ci = newcombe_diff(prec.k, prec.n, base.k, base.n)
        return {"value": value, "ci95": list(ci) if ci is not None else None,
                "p_value": self.random_veto(i)["p_value"], "precision": prec.value, "base": base.value,
                "vetoes": prec.n, "scored": base.n,
                "method": "precision − base; Newcombe hybrid score interval; exact hypergeometric p (one-sided)"}

    def veto_rate(self, i: int) -> Rate:
        return Rate(self.veto_k[i], self.veto_n[i])

    def base(self, i: int) -> Rate:
        return Rate(self.base_k[i], self.base_n[i])

    def random_veto(self, i: int) -> dict[str, Any]:
        N, K, n, k = self.base_n[i], self.base_k[i], self.veto_n[i], self.veto_k[i]
        if n == 0 or N == 0:
            return {"expected": K / N if N else None, "range95": None, "veto_rate": 0.0 if N else None,
                    "p_value": None, "method": "hypergeometric"}
        found = self._random.get(i)
        if found is None:  # asked for by the figures and by the lift: computed once
            found = self._random[i] = (*hypergeom_range(N, K, n), hypergeom_sf(k, N, K, n))
        lo, hi, p = found
        return {"expected": K / N, "range95": [lo / n, hi / n], "veto_rate": n / N, "p_value": p,
                "method": "hypergeometric"}

    def modify(self, i: int) -> dict[str, Any]:
        return {"n": self.mod_losers[i] + self.mod_winners[i], "losers": self.mod_losers[i],
                "winners": self.mod_winners[i], "loss_avoided_pct": self.mod_avoided[i],
                "gain_given_up_pct": self.mod_given_up[i], "net_pct": self.mod_avoided[i] - self.mod_given_up[i]}

    def ambiguous(self, i: int) -> dict[str, Any]:
        with_amb = Rate(self.veto_k[i] + self.amb_veto_lost[i], self.veto_n[i] + self.amb_vetoes[i])
        return {"reviewed": self.amb_n[i], "lost": self.amb_lost[i], "vetoes": self.amb_vetoes[i],
                "vetoes_lost": self.amb_veto_lost[i], "veto_precision_with_ambiguous": with_amb.to_dict()}

    def figures(self, i: int) -> dict[str, Any]:
        """Every figure of group ``i``, as plain data."""
        lat = self.latencies[i]
        return {
            "reviewed": self.reviewed[i], "vetoes": self.vetoes[i], "modifies": self.modifies[i],
            "accepts": self.accepts[i],
            "veto_precision": self.veto_rate(i).to_dict(), "base_loss_rate": self.base(i).to_dict(),
            "p_value": self.random_veto(i)["p_value"], "lift": self.lift(i)["value"],
            "accept_precision": Rate(self.accept_k[i], self.accept_n[i]).to_dict(),
            "ambiguous": self.amb_n[i], "modify_net_pct": self.mod_avoided[i] - self.mod_given_up[i],
            "fallthrough": Rate(self.through[i], self.live[i]).to_dict(),
            "fallback": Rate(self.fallback[i], self.live[i]).to_dict(),
            "latency_p50_ms": _sorted_percentile(lat, 50), "latency_p95_ms": _sorted_percentile(lat, 95),
            "input_tokens": self.in_tokens[i], "output_tokens": self.out_tokens[i], "cost_usd": self.cost[i],
        }



# -------------------------------------------------------------------------------------------- score


def score(reviews: Sequence[ReviewRecord], outcomes: Iterable[Outcome], trades: Sequence[Trade], *,
          signals: int, starting_equity: float, first_tier: str | None = None, events: Sequence[Event] = (),
          window_days: float = 14.0, modify_estimate: bool = False, retire: RetireParams | None = None
          ) -> Scorecard:
    """Compute the scorecard from what was recorded (nothing is recomputed from market data).

    ``modify_estimate``: there are no realized trades for these decisions (a backtest): a decision's
    effect is estimated as its clamped size × the shadow trade. ``window_days``: the trailing window
    (the retire rule's) reported in ``trailing``. ``first_tier`` is accepted for compatibility; the
    fallthrough rate reads the recorded tier attempts instead.
    """
    del first_tier
    with gc_paused():
        return score_columns(SignalColumns.of(list(map(_PACK, reviews)), outcomes), VerdictColumns.of(reviews),
                             trades, signals=signals, starting_equity=starting_equity, events=events,
                             window_days=window_days, modify_estimate=modify_estimate, retire=retire)


@dataclass(frozen=True)
class RetireParams:
    """The retire rule's settings the scorecard judges the trailing window with (``scoring.retire``)."""

    min_vetoes: int = 50
    alpha: float = 0.05
    below: float | None = None

    @classmethod
    def stored(cls, config_json: str) -> RetireParams:
        """From a run's stored config; a run recorded before ``alpha`` existed judged with the floor it had."""
        below = stored_value(config_json, "scoring.retire.below", None)
        return cls(int(stored_value(config_json, "scoring.retire.min_vetoes", 50)),
                   float(stored_value(config_json, "scoring.retire.alpha", 0.05)),
                   None if below is None else float(below))


def score_columns(reviewed: SignalColumns, verdicts: VerdictColumns, trades: Sequence[Trade], *, signals: int,
                  starting_equity: float, events: Sequence[Event] = (), window_days: float = 14.0,
                  modify_estimate: bool = False, retire: RetireParams | None = None,
                  pending: list[Callable[[], None]] | None = None) -> Scorecard:
    """``score`` of reviews given as columns: the reviewed signals with their outcomes (``SignalColumns``,
    shared by every reviewer a backtest compares) and one reviewer's verdicts and decisions, in the same order.

    ``pending``: the caller finishes the card — the modify improvement's bootstrap, which may still be running
    on its own thread, is put in when the caller calls what is appended there (a backtest scores its next column
    meanwhile). Without it the card is complete on return.
    """
    with gc_paused():
        return _score(columns(reviewed, verdicts, modify_estimate), verdicts, trades, signals=signals,
                      starting_equity=starting_equity, events=events, window_days=window_days,
                      modify_estimate=modify_estimate, retire=retire or RetireParams(), pending=pending)


def _score(c: Columns, v: VerdictColumns, trades: Sequence[Trade], *, signals: int, starting_equity: float,
           events: Sequence[Event], window_days: float, modify_estimate: bool, retire: RetireParams,
           pending: list[Callable[[], None]] | None = None) -> Scorecard:
    improvement = _modify_improvement_started(c)
    total = _Tally(c, np.zeros(c.n, dtype=np.intp), 1)
    breakdown: dict[str, dict[str, dict[str, Any]]] = {}
    for dim, groups in c.groups.items():
        tally = _Tally(c, groups.codes, len(groups.index))
        breakdown[dim] = {k: tally.figures(groups.index[k]) for k in sorted(groups.index)}

    sc = Scorecard(signals=signals, reviewed=c.n, blocked=signals - c.n)
    sc.executed = int(np.count_nonzero(c.executed))
    sc.verdicts = c.kinds.counts(str)
    sc.sources = c.sources.counts()
    sc.veto_precision, sc.base_loss_rate = total.veto_rate(0), total.base(0)
    sc.accept_precision = Rate(total.accept_k[0], total.accept_n[0])
    sc.ambiguous_vetoes = total.amb_vetoes[0]
    sc.ambiguous = total.ambiguous(0)
    sc.random_veto = total.random_veto(0)
    sc.lift = total.lift(0)
    mod = total.modify(0)
    sc.modify_loss_avoided_pct, sc.modify_gain_given_up_pct = mod["loss_avoided_pct"], mod["gain_given_up_pct"]
    sc.modify = {"n": mod["n"], "losers": mod["losers"], "winners": mod["winners"],
                 "method": "estimate: clamped size × shadow pnl (modified stops not simulated)" if modify_estimate
                 else "realized: size × realized pnl against the shadow trade",
                 "unit": "pnl % points per unit of signal size, summed",
                 "improvement": improvement() if pending is None else None}
    sc.success_rate = Rate(total.live[0] - total.fallback[0], total.live[0])
    sc.fallthrough_rate = Rate(total.through[0], total.live[0])
    sc.fallback_rate = Rate(total.fallback[0], total.live[0])
    lat = total.latencies[0]
    sc.latency = {"p50_ms": _sorted_percentile(lat, 50), "p95_ms": _sorted_percentile(lat, 95), "n": len(lat)}
    sc.cost = {"usd": total.cost[0], "input_tokens": total.in_tokens[0], "output_tokens": total.out_tokens[0],
               "cached_tokens": total.cached_tokens[0], "cache_hits": int(np.count_nonzero(c.cached))}
    sc.tiers = _tiers(c, v)
    sc.pnl = _pnl(trades, starting_equity)
    retires = [e for e in events if e.kind == "retire"]
    if c.n:
        # as of the end of what was recorded: the last signal, or the last shadow trade to close after it
        end = max(int(c.created_ms.max()), int(c.shadow_closed_ms.max()), *(e.at_ms for e in retires))
        *at_retire, at_end = _trailing(c, window_days, [*sorted(e.at_ms for e in retires), end])
        sc.trailing = _trailing_dict(at_end, window_days)
        sc.retire_rule = _check_dict(at_end, retire, window_days)
    else:
        at_retire = []
        sc.trailing = {"window_days": window_days, "since_ms": None, "veto_precision": Rate(0, 0).to_dict(),
                       "base_loss_rate": Rate(0, 0).to_dict()}
        sc.retire_rule = _check_dict(TrailingCounts(0, 0, 0, 0, 0, 0), retire, window_days)
    # each retire event beside the window recomputed from the stored rows at its time, and the same check
    recomputed = {t.until_ms: {**_trailing_dict(t, window_days), "check": _check_dict(t, retire, window_days)}
                  for t in at_retire}
    sc.retire = [{"at_ms": e.at_ms, "at": ms_to_dt(e.at_ms).isoformat(), "message": e.message,
                  "data": {k: v for k, v in e.data},
                  "window": recomputed.get(e.at_ms, {**sc.trailing, "check": sc.retire_rule})}
                 for e in retires]
    sc.events = dict(sorted(Counter(e.kind for e in events).items()))
    sc.account = account_of(events)
    sc.breakdown = breakdown
    if pending is not None:
        pending.append(lambda: sc.modify.__setitem__("improvement", improvement()))
    return sc


def account_of(events: Sequence[Event]) -> dict[str, Any]:
    """The account rules a run traded under, from its ``account`` event (recorded when its ledger opened)."""
    for e in events:
        if e.kind == "account":
            data = dict(e.data)
            return {"account": data.get("account", e.subject),
                    "market_types": {str(k): str(v) for k, v in data.get("market_types", ())},
                    "summary": e.message}
    return {"account": "hedging", "market_types": {},
            "summary": "not recorded (the run predates execution.account): positions per signal, shorts allowed"}


def _tiers(c: Columns, v: VerdictColumns) -> dict[str, dict[str, Any]]:
    """Per tier: answers, cache hits, failures by kind, latency of real calls, tokens and cost of real calls.

    Tiers are named by the attempts of live reviews and by the tier of each verdict a tier answered (not
    a fallback). A cache hit costs nothing; a verdict recorded without attempts counts as one call whose
    latency is the whole cascade's.
    """
    live = c.live.tolist()
    attempts = list(chain.from_iterable(compress(v.attempts, live)))
    a_tier, a_ok, a_kind, a_latency = _transpose(map(_OF_ATTEMPT, attempts), 4)
    answering = c.live & ~c.fallback & _where(v.tiers, bool)
    ans = answering.tolist()
    index = {t: i for i, t in enumerate(dict.fromkeys(chain(a_tier, compress(v.tiers, ans))))}
    g = len(index)
    a_codes = np.fromiter(map(index.__getitem__, a_tier), dtype=np.intp, count=len(a_tier))
    v_codes = np.fromiter(map(index.__getitem__, compress(v.tiers, ans)), dtype=np.intp)
    cached, paid = c.cached[answering], (answering & ~c.cached)[answering]
    no_attempts = (np.fromiter(map(len, v.attempts), dtype=np.intp, count=c.n) == 0)[answering]
    # a refused call (open breaker) and a cache read say nothing about the tier's own speed
    is_call = _where(a_kind, lambda k: k not in _NOT_CALLS)
    whole = paid & no_attempts  # recorded without attempts: the cascade latency is all there is
    calls = np.bincount(a_codes[is_call], minlength=g) + np.bincount(v_codes[whole], minlength=g)
    lat_codes = np.concatenate((a_codes[is_call], v_codes[whole]))
    lat = np.concatenate((_floats(a_latency)[is_call], c.latency_ms[answering][whole]))
    order = np.lexsort((lat, lat_codes))
    bounds = np.concatenate(([0], np.cumsum(np.bincount(lat_codes, minlength=g)))).tolist()
    lat = lat[order]
    failures: list[dict[str, int]] = [{} for _ in range(g)]
    for i in np.flatnonzero(~_bools(a_ok, len(a_ok))).tolist():
        f = failures[a_codes[i]]
        f[a_kind[i]] = f.get(a_kind[i], 0) + 1

    def total(values: np.ndarray) -> list[Any]:
        out = np.zeros(g, dtype=values.dtype)
        np.add.at(out, v_codes[paid], values[answering][paid])  # one term at a time, in review order
        return out.tolist()

    answered, hits, calls_ = (np.bincount(v_codes, minlength=g).tolist(),
                              np.bincount(v_codes[cached], minlength=g).tolist(), calls.tolist())
    tin, tout, tcached, cost = (total(c.input_tokens), total(c.output_tokens), total(c.cached_tokens),
                                total(c.cost_usd))
    return {
        name: {"answered": answered[i], "cache_hits": hits[i], "calls": calls_[i], "failures": failures[i],
               "latency_p50_ms": _sorted_percentile(lat[bounds[i]:bounds[i + 1]], 50),
               "latency_p95_ms": _sorted_percentile(lat[bounds[i]:bounds[i + 1]], 95),
               "input_tokens": tin[i], "output_tokens": tout[i], "cached_tokens": tcached[i], "cost_usd": cost[i]}
        for name, i in sorted(index.items())
    }


def _pnl(trades: Sequence[Trade], starting_equity: float) -> dict[str, Any]:
    pnl_total = sum(t.pnl for t in trades)
    wins = sum(1 for t in trades if t.pnl > 0)
    max_dd = max_drawdown_pct(trades, starting_equity)
    return {
        "trades": len(trades), "wins": wins, "win_rate": wins / len(trades) if trades else None,
        "pnl": pnl_total, "return_pct": pnl_total / starting_equity * 100 if starting_equity else None,
        "fees": sum(t.fees for t in trades), "max_drawdown_pct": max_dd,
        "ambiguous_exits": sum(1 for t in trades if t.ambiguous),
        "final_equity": starting_equity + pnl_total,
    }



def _trailing(c: Columns, window_days: float, times: Sequence[int]) -> list[TrailingCounts]:
    """The retire rule's trailing window as of each of ``times`` (``engine.core.scored``: signals created in
    (t − window, t] whose scored shadow outcome had closed by t), from the stored rows."""
    s = c.scored
    return trailing_at_columns(times, int(window_days * _DAY_MS), c.shadow_closed_ms[s], c.created_ms[s], c.veto[s],
                               c.lost[s])


def _check_dict(t: TrailingCounts, retire: RetireParams, window_days: float) -> dict[str, Any]:
    check = retire_check(t, min_vetoes=retire.min_vetoes, alpha=retire.alpha, below=retire.below)
    return {**check.to_dict(), "window_days": window_days,
            "message": check.message(window_days) if check.retire else None}


_BOOTSTRAP_APART = 2_000  # modified trades from which the bootstrap runs on a thread of its own


def _modify_improvement_started(c: Columns) -> Callable[[], dict[str, Any]]:
    """``_modify_improvement(c)``, started: call the result for its answer. With many modified trades it runs on
    a thread while the caller counts the rest: its resampling is numpy work that releases the GIL (drawing,
    gathering, averaging), so a second core does it beside the counting. Its seeded generator is its own: the
    same interval either way."""
    if int(np.count_nonzero(c.modified)) < _BOOTSTRAP_APART:
        answer = _modify_improvement(c)
        return lambda: answer
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bootstrap")
    future = pool.submit(_modify_improvement, c)
    pool.shutdown(wait=False)

    def result() -> dict[str, Any]:
        return future.result()

    return result


def _modify_improvement(c: Columns) -> dict[str, Any]:
    """Per modified trade: mean of (loss avoided − return given up), pnl % points per unit of signal size, with a
    seeded percentile bootstrap interval (2,000 resamples; the same run gives the same interval)."""
    deltas = c.modify_delta[c.modified].tolist()
    mean = math.fsum(deltas) / len(deltas) if deltas else None
    ci = bootstrap_mean(deltas, seed=len(deltas))
    return {"n": len(deltas), "mean_pct": mean, "ci95": list(ci) if ci is not None else None,
            "method": "per-trade mean of (modified pnl − as-emitted pnl), percentile bootstrap, 2000 resamples"}


def _trailing_dict(t: TrailingCounts, window_days: float) -> dict[str, Any]:
    return {"window_days": window_days, "since_ms": t.since_ms, "until_ms": t.until_ms,
            "veto_precision": Rate(t.veto_lost, t.vetoes).to_dict(), "base_loss_rate": Rate(t.lost, t.scored).to_dict()}


def run_scorecard(reader: RunReader, run_id: int, *, stored: StoredRun | None = None,
                  trades: Sequence[Trade] | None = None, events: Sequence[Event] | None = None,
                  value: dict[str, Any] | None = None) -> Scorecard:
    """The scorecard of a recorded run, computed from its stored rows only (nothing is recomputed from market data).

    ``stored`` (``load_stored(..., realized=True)``), ``trades``, ``events`` and ``value`` (``value_summary``; its
    ``curves`` are left out of the card): what the caller has already read of this run (the report), so that it
    is not read twice. Raises: StorageError.
    """
    run = reader.get_run(run_id)
    records = reader.records(run_id)
    # Scoring reads a pack's signal, regime tag and equity, and a few verdict and decision columns: the
    # hash-checked stored reviews serve as columns, without building a review object per signal.
    if stored is None:
        stored = load_stored(reader, run_id, realized=True, lean=True)
    if events is None:
        events = records.load_events()
    trades = records.load_trades() if trades is None else trades
    card = score_columns(stored.signal_columns(), stored.recorded_columns(),
                         trades,
                         signals=reader.count_signals(run_id),  # blocked ones too: only their number
                         starting_equity=run.starting_equity,
                         events=events,
                         window_days=float(stored_value(run.config_json, "scoring.retire.window_days", 14.0)),
                         retire=RetireParams.stored(run.config_json))
    # the reviewer's value in money: the counterfactual replays stored for this run (``tradevet value``)
    if value is None:
        value = value_summary(reader, run_id, real_trades=trades)
    card.value = {k: v for k, v in value.items() if k != "curves"}
    card.counterfactual = dict(card.value.get("reviewer_off") or {}) if card.value else {
        "replayed": False, "how": f"tradevet value --run {run_id}"}
    from engine.recorded.spend import spend_summary

    card.spend = spend_summary(reader, run_id, run.config_json, events)
    card.gates = gate_summary(records.load_gate_results(), signals=card.signals)
    card.warnings = gate_warnings(card.gates)
    return card
