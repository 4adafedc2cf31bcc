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

Computation. The scorecard is counted over arrays, one per fact of the reviewed signals (``SignalColumns``:
the signals and their outcomes, shared by every reviewer a backtest compares; ``VerdictColumns``: one
reviewer's verdicts and decisions). Counts are exact; every float sum is accumulated one term at a time in
review order (``np.bincount`` with weights, ``np.add.at``), which is the order the per-signal loop this
replaced added them in, so the figures are the same doubles (tests/test_scoring_columns.py holds that loop).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress
from operator import attrgetter
from typing import Any

import numpy as np

from engine.types import (
    ContextPack,
    Event,
    Outcome,
    OutcomeKind,
    ReviewRecord,
    Signal,
    TierAttempt,
    Trade,
    VerdictKind,
    ms_to_dt,
)

__all__ = [
    "Rate",
    "Scorecard",
    "SignalColumns",
    "VerdictColumns",
    "counterfactual_series",
    "gc_paused",
    "hypergeom_range",
    "hypergeom_sf",
    "percentile",
    "rolling_series",
    "score",
    "score_columns",
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
    """What a rolling window needs of one reviewed signal (``rolling_series``; the scorecard reads columns)."""

    created_ms: int
    verdict: str
    scored: bool  # finished, unambiguous shadow trade
    lost: bool  # the shadow trade lost (meaningful when scored)
    live: bool  # answered by the reviewer at all (source != "off")
    through: bool  # not answered by the first enabled tier
    fallback: bool


def _finished(o: Outcome | None) -> bool:
    return o is not None and o.filled and o.exit_reason not in ("", "end")


def _facts(r: ReviewRecord, shadow: Outcome | None) -> _Facts:
    v = r.verdict
    finished = _finished(shadow)
    amb = finished and shadow.ambiguous  # type: ignore[union-attr]
    return _Facts(created_ms=r.pack.signal.created_ms, verdict=str(v.verdict), scored=finished and not amb,
                  lost=finished and shadow.pnl_pct < 0,  # type: ignore[union-attr]
                  live=v.source != "off", through=v.source == "fallback" or any(not a.ok for a in v.attempts),
                  fallback=v.source == "fallback")


_PACK, _VERDICT, _DECISION = attrgetter("pack"), attrgetter("verdict"), attrgetter("decision")
_OF_PACK = attrgetter("signal", "equity", "regime.tag")
_OF_SIGNAL = attrgetter("id", "created_ms", "strategy_id", "symbol", "size_hint")
_OF_VERDICT = attrgetter("verdict", "source", "tier", "latency_ms", "input_tokens", "output_tokens", "cached_tokens",
                         "cost_usd", "attempts")
_OF_DECISION = attrgetter("action", "size_pct")
_OF_OUTCOME = attrgetter("filled", "pnl_pct", "exit_reason", "ambiguous")
_OF_REALIZED = attrgetter("filled", "pnl_pct")
_OF_ATTEMPT = attrgetter("tier", "ok", "kind", "latency_ms")
_OK = attrgetter("ok")
_NO_OUTCOME = (False, 0.0, "", False)  # a missing shadow outcome's facts (masked out by ``shadow_known``)
_NOT_CALLS = ("cache", "breaker_open", "deadline", "cancelled")  # attempts that say nothing of a tier's speed


def _transpose(rows: Iterable[tuple[Any, ...]], width: int) -> list[tuple[Any, ...]]:
    cols = list(zip(*rows, strict=True))
    return cols if cols else [()] * width


def _floats(xs: Sequence[Any]) -> np.ndarray:
    return np.array(xs, dtype=np.float64)


def _bools(xs: Iterable[Any], n: int) -> np.ndarray:
    """Truth values of ``xs`` (bool() of each)."""
    return np.fromiter(map(bool, xs), dtype=np.bool_, count=n)


def _ints(xs: Sequence[Any]) -> np.ndarray:
    """Integer counters as int64; anything else (a float where an int belongs) is summed as float, like Python."""
    a = np.array(xs)
    if not a.size:
        return np.zeros(0, dtype=np.int64)
    return a if a.dtype.kind in "iu" else np.array(xs, dtype=np.float64)


def _shown(values: Sequence[Any]) -> list[str]:
    """``[str(v) for v in values]``, with str() called once per distinct value."""
    shown = {v: str(v) for v in dict.fromkeys(values)}
    return list(map(shown.__getitem__, values))


def _group_codes(values: Sequence[Any]) -> tuple[np.ndarray, dict[Any, int]]:
    """Each value's group number (groups numbered in order of first appearance) and the groups."""
    index = {v: i for i, v in enumerate(dict.fromkeys(values))}
    return np.fromiter(map(index.__getitem__, values), dtype=np.intp, count=len(values)), index


def _where(values: Sequence[Any], test: Callable[[Any], bool]) -> np.ndarray:
    """``[bool(test(v)) for v in values]``, calling ``test`` once per distinct value."""
    return _Groups(values).where(test)


class _Groups:
    """The distinct values of a column (in order of first appearance) and each row's group number."""

    __slots__ = ("codes", "index")

    def __init__(self, values: Sequence[Any]) -> None:
        self.codes, self.index = _group_codes(values)

    def where(self, test: Callable[[Any], bool]) -> np.ndarray:
        """Each row's ``bool(test(value))``, with ``test`` called once per distinct value."""
        if not self.index:
            return np.zeros(0, dtype=np.bool_)
        return np.array([bool(test(v)) for v in self.index], dtype=np.bool_)[self.codes]

    def counts(self, label: Callable[[Any], Any] = lambda v: v) -> dict[Any, int]:
        """``dict(Counter(values))``: counts in order of first appearance."""
        counts = np.bincount(self.codes, minlength=len(self.index)).tolist()
        return {label(v): counts[i] for v, i in self.index.items()}


@dataclass(frozen=True)
class SignalColumns:
    """The reviewed signals and their outcomes as scoring reads them: one array per fact, in review order.

    Independent of the reviewer: a backtest builds it once and scores every reviewer column against it
    (``score_columns``). Build it with ``of``, or with ``build`` from the outcomes' facts.
    """

    n: int
    ids: list[str]
    created_ms: np.ndarray
    strategies: list[str]
    symbols: list[str]
    regimes: list[str]
    weight: np.ndarray  # size_hint × equity at the signal time / 100: quote amount per 1 % of shadow pnl
    shadow_known: np.ndarray  # a shadow outcome exists
    shadow_filled: np.ndarray  # ... and filled ("end" marks included: the counterfactual counts them)
    shadow_pnl: np.ndarray
    finished: np.ndarray  # filled and finished by stop, target or time (not marked out at the end)
    ambiguous: np.ndarray  # finished and flagged ambiguous
    lost: np.ndarray  # finished and lost
    realized_known: np.ndarray  # a realized outcome exists
    realized_filled: np.ndarray
    realized_pnl: np.ndarray  # 0.0 where not filled

    @functools.cached_property
    def groups(self) -> dict[str, _Groups]:
        """The breakdown dimensions that depend on the signal alone, grouped once for every column."""
        return {"strategy": _Groups(self.strategies), "regime": _Groups(self.regimes), "symbol": _Groups(self.symbols)}

    @classmethod
    def of(cls, packs: Sequence[ContextPack], outcomes: Iterable[Outcome]) -> SignalColumns:
        """From each reviewed signal's pack (signal, equity, regime tag) and the run's outcomes."""
        shadow, realized = _split(outcomes)
        signals, equities, regimes = _transpose(map(_OF_PACK, packs), 3)
        return cls.build(signals, equities, regimes, {k: _OF_OUTCOME(o) for k, o in shadow.items()},
                         {k: _OF_REALIZED(o) for k, o in realized.items()})

    @classmethod
    def build(cls, signals: Sequence[Signal], equities: Sequence[float], regimes: Sequence[Any],
              shadow: Mapping[str, Sequence[Any]], realized: Mapping[str, Sequence[Any]]) -> SignalColumns:
        """From the signals with their packs' equity and regime tag (shown with str()) and, by signal id, the
        shadow outcomes as (filled, pnl_pct, exit_reason, ambiguous) and the realized ones as (filled, pnl_pct)."""
        n = len(signals)
        ids, created, strategies, symbols, size_hints = _transpose(map(_OF_SIGNAL, signals), 5)
        ids = list(ids)
        shadows = list(map(shadow.get, ids))
        known = np.fromiter((o is not None for o in shadows), dtype=np.bool_, count=n)
        filled, pnl, exit_reason, amb = _transpose((_NO_OUTCOME if o is None else o for o in shadows), 4)
        shadow_filled = known & _bools(filled, n)
        shadow_pnl = _floats(pnl)
        finished = shadow_filled & _where(exit_reason, lambda e: e not in ("", "end"))
        with np.errstate(invalid="ignore"):
            lost = finished & (shadow_pnl < 0)
        reals = list(map(realized.get, ids))
        realized_known = np.fromiter((o is not None for o in reals), dtype=np.bool_, count=n)
        realized_filled = realized_known & _bools((o is not None and o[0] for o in reals), n)
        return cls(
            n=n, ids=ids, created_ms=np.array(created, dtype=np.int64), strategies=list(strategies),
            symbols=list(symbols), regimes=_shown(regimes),
            weight=_floats(size_hints) * _floats(equities) / 100.0,
            shadow_known=known, shadow_filled=shadow_filled, shadow_pnl=shadow_pnl, finished=finished,
            ambiguous=finished & _bools(amb, n), lost=lost, realized_known=realized_known,
            realized_filled=realized_filled,
            realized_pnl=_floats([o[1] if f else 0.0 for o, f in zip(reals, realized_filled.tolist(), strict=True)]),
        )


@dataclass(frozen=True)
class VerdictColumns:
    """One reviewer's verdicts and the clamp's decisions as scoring reads them, one list per field, in review order.

    Field by field what ``Verdict`` and ``Decision`` hold (``kinds``: ``Verdict.verdict``, ``attempts``:
    tuples of ``TierAttempt``). Build it with ``of``, or straight from stored rows.
    """

    kinds: Sequence[Any]
    sources: Sequence[str]
    tiers: Sequence[str]
    latency_ms: Sequence[float]
    input_tokens: Sequence[int]
    output_tokens: Sequence[int]
    cached_tokens: Sequence[int]
    cost_usd: Sequence[float]
    attempts: Sequence[tuple[TierAttempt, ...]]
    actions: Sequence[Any]  # Decision.action
    size_pct: Sequence[float]  # Decision.size_pct

    @classmethod
    def of(cls, reviews: Sequence[ReviewRecord]) -> VerdictColumns:
        kinds, sources, tiers, latency, tin, tout, tcached, cost, attempts = _transpose(
            map(_OF_VERDICT, map(_VERDICT, reviews)), 9)
        actions, sizes = _transpose(map(_OF_DECISION, map(_DECISION, reviews)), 2)
        return cls(kinds, sources, tiers, latency, tin, tout, tcached, cost, attempts, actions, sizes)

    def __len__(self) -> int:
        return len(self.kinds)


@dataclass(slots=True)
class _Columns:
    """Every fact scoring counts of every reviewed signal, as arrays in review order.

    The figures are sums and counts over these: integer counts are exact whatever the order, and every
    float sum is accumulated one term at a time in review order (``np.bincount`` with weights), so each
    figure is the same double that adding the terms signal by signal gives, to the last bit.
    """

    n: int
    created_ms: np.ndarray
    groups: dict[str, _Groups]  # breakdown dimension → each signal's group (tier, strategy, regime, symbol)
    kinds: _Groups  # the verdicts (accept, modify, veto)
    sources: _Groups  # who answered (a tier, cache, fallback, off)
    scored: np.ndarray  # finished, unambiguous shadow trade
    lost: np.ndarray  # finished shadow trade that lost
    ambiguous: np.ndarray  # finished shadow trade flagged ambiguous
    veto: np.ndarray  # str(verdict) == "veto" (and accept, modify likewise)
    accept: np.ndarray
    modify: np.ndarray
    executed: np.ndarray
    weight: np.ndarray
    has_shadow_pnl: np.ndarray
    shadow_pnl: np.ndarray
    has_effect: np.ndarray
    effect: np.ndarray  # the decision's own pnl % per unit of signal size (realized or estimated)
    modified: np.ndarray  # an acted-on modification with a finished shadow trade and a known effect
    modify_delta: np.ndarray  # effect − shadow pnl (meaningful where ``modified``)
    live: np.ndarray  # answered by the reviewer at all (source != "off")
    through: np.ndarray  # not answered by the first enabled tier
    fallback: np.ndarray
    cached: np.ndarray
    latency_ms: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    cached_tokens: np.ndarray
    cost_usd: np.ndarray


def _columns(s: SignalColumns, v: VerdictColumns, estimate: bool) -> _Columns:
    n = s.n
    if len(v) != n:
        raise ValueError(f"scoring: {len(v)} verdicts for {n} reviewed signals")
    executed = _where(v.actions, lambda a: a.value == "execute")
    size = np.where(executed, _floats(v.size_pct), 0.0)
    # The decision's own pnl % per unit of signal size: the realized trade scaled by its size, or, in a
    # backtest (no realized trades), the shadow trade scaled by the clamped size — a modified stop is then
    # not simulated (that needs bars). An entry that never filled earned nothing; a missing outcome (still
    # open) is left out.
    if estimate:
        base, base_known, base_filled = s.shadow_pnl, s.shadow_known, s.shadow_filled
    else:
        base, base_known, base_filled = s.realized_pnl, s.realized_known, s.realized_filled
    with np.errstate(all="ignore"):
        scaled = size / 100.0 * base
    effect = np.where(executed & base_filled, scaled, 0.0)
    has_effect = ~executed | base_known
    modified = (np.fromiter((k is VerdictKind.MODIFY for k in v.kinds), dtype=np.bool_, count=n) & executed
                & s.finished & has_effect & (True if estimate else base_filled))
    with np.errstate(all="ignore"):
        delta = effect - s.shadow_pnl
    kinds, sources = _Groups(v.kinds), _Groups(v.sources)
    is_fallback = sources.where(lambda x: x == "fallback")
    return _Columns(
        n=n, created_ms=s.created_ms,
        groups={"tier": _Groups([t or x for t, x in zip(v.tiers, v.sources, strict=True)]), **s.groups},
        kinds=kinds, sources=sources,
        scored=s.finished & ~s.ambiguous, lost=s.lost, ambiguous=s.ambiguous,
        veto=kinds.where(lambda k: str(k) == "veto"), accept=kinds.where(lambda k: str(k) == "accept"),
        modify=kinds.where(lambda k: str(k) == "modify"), executed=executed, weight=s.weight,
        has_shadow_pnl=s.shadow_filled, shadow_pnl=s.shadow_pnl, has_effect=has_effect, effect=effect,
        modified=modified, modify_delta=delta, live=sources.where(lambda x: x != "off"),
        through=is_fallback | np.fromiter((not all(map(_OK, a)) for a in v.attempts), dtype=np.bool_, count=n),
        fallback=is_fallback, cached=sources.where(lambda x: x == "cache"),
        latency_ms=_floats(v.latency_ms), input_tokens=_ints(v.input_tokens), output_tokens=_ints(v.output_tokens),
        cached_tokens=_ints(v.cached_tokens), cost_usd=_floats(v.cost_usd),
    )


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

    def __init__(self, c: _Columns, codes: np.ndarray, groups: int) -> None:
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
        has = c.has_shadow_pnl
        with np.errstate(all="ignore"):
            self.gate_only = total(has, c.shadow_pnl * c.weight)
            self.reviewed_est = total(c.has_effect, c.effect * c.weight)
        # each group's latencies of live reviews, sorted (only their order statistics are reported)
        lat, lat_codes = c.latency_ms[live], codes[live]
        order = np.lexsort((lat, lat_codes))
        bounds = np.concatenate(([0], np.cumsum(np.bincount(lat_codes, minlength=groups))))
        sorted_lat = lat[order]
        self.latencies = [sorted_lat[bounds[i]:bounds[i + 1]] for i in range(groups)]

    # ------------------------------------------------------------------------------------- figures
    def veto_rate(self, i: int) -> Rate:
        return Rate(self.veto_k[i], self.veto_n[i])

    def base(self, i: int) -> Rate:
        return Rate(self.base_k[i], self.base_n[i])

    def random_veto(self, i: int) -> dict[str, Any]:
        N, K, n, k = self.base_n[i], self.base_k[i], self.veto_n[i], self.veto_k[i]
        if n == 0 or N == 0:
            return {"expected": K / N if N else None, "range95": None, "veto_rate": 0.0 if N else None,
                    "p_value": None, "method": "hypergeometric"}
        lo, hi = hypergeom_range(N, K, n)
        return {"expected": K / N, "range95": [lo / n, hi / n], "veto_rate": n / N, "p_value": hypergeom_sf(k, N, K, n),
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
            "p_value": self.random_veto(i)["p_value"],
            "accept_precision": Rate(self.accept_k[i], self.accept_n[i]).to_dict(),
            "ambiguous": self.amb_n[i], "modify_net_pct": self.mod_avoided[i] - self.mod_given_up[i],
            "fallthrough": Rate(self.through[i], self.live[i]).to_dict(),
            "fallback": Rate(self.fallback[i], self.live[i]).to_dict(),
            "latency_p50_ms": _sorted_percentile(lat, 50), "latency_p95_ms": _sorted_percentile(lat, 95),
            "input_tokens": self.in_tokens[i], "output_tokens": self.out_tokens[i], "cost_usd": self.cost[i],
            "gate_only_pnl": self.gate_only[i], "reviewed_est_pnl": self.reviewed_est[i],
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
        return score_columns(SignalColumns.of(list(map(_PACK, reviews)), outcomes), VerdictColumns.of(reviews),
                             trades, signals=signals, starting_equity=starting_equity, events=events,
                             window_days=window_days, modify_estimate=modify_estimate)


def score_columns(reviewed: SignalColumns, verdicts: VerdictColumns, trades: Sequence[Trade], *, signals: int,
                  starting_equity: float, events: Sequence[Event] = (), window_days: float = 14.0,
                  modify_estimate: bool = False) -> Scorecard:
    """``score`` of reviews given as columns: the reviewed signals with their outcomes (``SignalColumns``,
    shared by every reviewer a backtest compares) and one reviewer's verdicts and decisions, in the same order.
    """
    with gc_paused():
        return _score(_columns(reviewed, verdicts, modify_estimate), verdicts, trades, signals=signals,
                      starting_equity=starting_equity, events=events, window_days=window_days,
                      modify_estimate=modify_estimate)


def _score(c: _Columns, v: VerdictColumns, trades: Sequence[Trade], *, signals: int, starting_equity: float,
           events: Sequence[Event], window_days: float, modify_estimate: bool) -> Scorecard:
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
    mod = total.modify(0)
    sc.modify_loss_avoided_pct, sc.modify_gain_given_up_pct = mod["loss_avoided_pct"], mod["gain_given_up_pct"]
    sc.modify = {"n": mod["n"], "losers": mod["losers"], "winners": mod["winners"],
                 "method": "estimate: clamped size × shadow pnl (modified stops not simulated)" if modify_estimate
                 else "realized: size × realized pnl against the shadow trade",
                 "unit": "pnl % points per unit of signal size, summed"}
    sc.success_rate = Rate(total.live[0] - total.fallback[0], total.live[0])
    sc.fallthrough_rate = Rate(total.through[0], total.live[0])
    sc.fallback_rate = Rate(total.fallback[0], total.live[0])
    lat = total.latencies[0]
    sc.latency = {"p50_ms": _sorted_percentile(lat, 50), "p95_ms": _sorted_percentile(lat, 95), "n": len(lat)}
    sc.cost = {"usd": total.cost[0], "input_tokens": total.in_tokens[0], "output_tokens": total.out_tokens[0],
               "cached_tokens": total.cached_tokens[0], "cache_hits": int(np.count_nonzero(c.cached))}
    sc.tiers = _tiers(c, v)
    sc.pnl = _pnl(trades, starting_equity)
    sc.counterfactual = _counterfactual(total, c, sc.pnl, starting_equity, modify_estimate)
    sc.trailing = _trailing(c, window_days)
    sc.retire = [{"at_ms": e.at_ms, "at": ms_to_dt(e.at_ms).isoformat(), "message": e.message,
                  "data": {k: v for k, v in e.data}} for e in events if e.kind == "retire"]
    sc.events = dict(sorted(Counter(e.kind for e in events).items()))
    sc.breakdown = breakdown
    return sc


def _tiers(c: _Columns, v: VerdictColumns) -> dict[str, dict[str, Any]]:
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



def _counterfactual(total: _Tally, c: _Columns, pnl: dict[str, Any], starting_equity: float,
                    estimate: bool) -> dict[str, Any]:
    filled = int(np.count_nonzero(c.has_shadow_pnl))
    gate_only, reviewed_est = total.gate_only[0], total.reviewed_est[0]

    def ret(x: float | None) -> float | None:
        return None if x is None or not starting_equity else x / starting_equity * 100

    realized = None if estimate else pnl.get("pnl")
    return {
        "gate_only_pnl": gate_only, "gate_only_return_pct": ret(gate_only),
        "reviewed_est_pnl": reviewed_est, "reviewed_est_return_pct": ret(reviewed_est),
        "reviewer_value_est": reviewed_est - gate_only,
        "realized_pnl": realized, "realized_return_pct": ret(realized),
        "signals": c.n, "shadow_filled": filled,
        "convention": "shadow pnl % × size_hint × equity at the signal time, per signal, no compounding; "
                      + ("decisions estimated as clamped size × shadow pnl" if estimate
                         else "reviewed_est: realized pnl % × size_hint × size % × equity at the signal time"),
    }


def _trailing(c: _Columns, window_days: float) -> dict[str, Any]:
    if not c.n:
        return {"window_days": window_days, "since_ms": None, "veto_precision": Rate(0, 0).to_dict(),
                "base_loss_rate": Rate(0, 0).to_dict()}
    end = int(c.created_ms.max())
    since = end - int(window_days * _DAY_MS)
    inside = (c.created_ms > since) & c.scored
    vetoes = inside & c.veto
    vk, vn = int(np.count_nonzero(vetoes & c.lost)), int(np.count_nonzero(vetoes))
    bk, bn = int(np.count_nonzero(inside & c.lost)), int(np.count_nonzero(inside))
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
    facts = [(t, _facts(r, shadow.get(r.pack.signal.id))) for t, r in rows]
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
