"""Scoring's columns: the reviewed signals with their outcomes, and one reviewer's verdicts and decisions, as arrays.

``SignalColumns`` (the signals and their outcomes, shared by every reviewer a backtest compares) and
``VerdictColumns`` (one reviewer's verdicts and decisions) are what the scorecard counts over; ``columns``
joins them into every fact it needs, one array per fact, in review order. Which outcome is scored is
``engine.core.scored``'s predicate.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import numpy as np

from engine.core.scored import is_finished, is_scored
from engine.types import (
    ContextPack,
    Outcome,
    OutcomeKind,
    PackRef,
    ReviewRecord,
    Signal,
    TierAttempt,
    Verdict,
    VerdictKind,
)

__all__ = ["Columns", "Groups", "SignalColumns", "VerdictColumns", "columns", "gc_paused", "split_outcomes"]


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



_PACK, _VERDICT, _DECISION = attrgetter("pack"), attrgetter("verdict"), attrgetter("decision")
_OF_PACK = attrgetter("signal", "equity", "regime_tag")
_OF_VERDICT = attrgetter("verdict", "source", "tier", "latency_ms", "input_tokens", "output_tokens", "cached_tokens",
                         "cost_usd", "attempts")
_OF_DECISION = attrgetter("action", "size_pct")
_OF_OUTCOME = attrgetter("filled", "pnl_pct", "exit_reason", "ambiguous", "closed_ms")
_OF_REALIZED = attrgetter("filled", "pnl_pct")
_OF_ATTEMPT = attrgetter("tier", "ok", "kind", "latency_ms")
_OK = attrgetter("ok")
_NOT_NONE = functools.partial(operator.is_not, None)  # x is not None, as a C call
_NO_OUTCOME = (False, 0.0, "", False, None)  # a missing shadow outcome's facts (masked out by ``shadow_known``)
_NOT_CALLS = ("cache", "breaker_open", "budget", "deadline", "cancelled")  # attempts that say nothing of a tier's speed



def split_outcomes(outcomes: Iterable[Outcome]) -> tuple[dict[str, Outcome], dict[str, Outcome]]:
    """Outcomes → (shadow by signal id, realized by signal id)."""
    shadow: dict[str, Outcome] = {}
    realized: dict[str, Outcome] = {}
    for o in outcomes:
        (shadow if o.kind is OutcomeKind.SHADOW else realized)[o.signal_id] = o
    return shadow, realized


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
    return Groups(values).where(test)


class Groups:
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
    shadow_closed_ms: np.ndarray  # when the shadow trade closed (-1 where it has not)
    finished: np.ndarray  # filled and finished by stop, target or time (engine.core.scored.is_finished)
    scored: np.ndarray  # finished and not ambiguous (engine.core.scored.is_scored)
    ambiguous: np.ndarray  # finished and flagged ambiguous
    lost: np.ndarray  # finished and lost
    realized_known: np.ndarray  # a realized outcome exists
    realized_filled: np.ndarray
    realized_pnl: np.ndarray  # 0.0 where not filled

    @functools.cached_property
    def groups(self) -> dict[str, Groups]:
        """The breakdown dimensions that depend on the signal alone, grouped once for every column."""
        return {"strategy": Groups(self.strategies), "regime": Groups(self.regimes), "symbol": Groups(self.symbols)}

    @classmethod
    def of(cls, packs: Sequence[ContextPack | PackRef], outcomes: Iterable[Outcome]) -> SignalColumns:
        """From each reviewed signal's pack (signal, equity, regime tag) and the run's outcomes."""
        shadow, realized = split_outcomes(outcomes)
        signals, equities, regimes = _transpose(map(_OF_PACK, packs), 3)
        return cls.build(signals, equities, regimes, {k: _OF_OUTCOME(o) for k, o in shadow.items()},
                         {k: _OF_REALIZED(o) for k, o in realized.items()})

    @classmethod
    def build(cls, signals: Sequence[Signal], equities: Sequence[float], regimes: Sequence[Any],
              shadow: Mapping[str, Sequence[Any]], realized: Mapping[str, Sequence[Any]]) -> SignalColumns:
        """From the signals with their packs' equity and regime tag (shown with str()) and, by signal id, the
        shadow outcomes as (filled, pnl_pct, exit_reason, ambiguous, closed_ms) and the realized ones as
        (filled, pnl_pct)."""
        n = len(signals)
        # one pass per field (a C loop each), not a tuple per signal transposed
        ids, created, strategies, symbols, size_hints = (list(map(attrgetter(f), signals)) for f in
                                                         ("id", "created_ms", "strategy_id", "symbol", "size_hint"))
        shadows = list(map(shadow.get, ids))
        known = np.fromiter(map(_NOT_NONE, shadows), dtype=np.bool_, count=n)
        filled, pnl, exit_reason, amb, closed = _transpose((_NO_OUTCOME if o is None else o for o in shadows), 5)
        shadow_filled = known & _bools(filled, n)
        shadow_pnl = _floats(pnl)
        facts = list(zip(map(bool, filled), exit_reason, map(bool, amb), strict=True))
        finished = known & _where(facts, lambda f: is_finished(f[0], f[1]))
        scored = known & _where(facts, lambda f: is_scored(*f))
        with np.errstate(invalid="ignore"):
            lost = finished & (shadow_pnl < 0)
        reals = list(map(realized.get, ids))
        realized_known = np.fromiter(map(_NOT_NONE, reals), dtype=np.bool_, count=n)
        realized_filled = realized_known & _bools((o is not None and o[0] for o in reals), n)
        return cls(
            n=n, ids=ids, created_ms=np.array(created, dtype=np.int64), strategies=list(strategies),
            symbols=list(symbols), regimes=_shown(regimes),
            weight=_floats(size_hints) * _floats(equities) / 100.0,
            shadow_known=known, shadow_filled=shadow_filled, shadow_pnl=shadow_pnl,
            shadow_closed_ms=np.array([-1 if c is None else c for c in closed], dtype=np.int64), finished=finished,
            scored=scored, ambiguous=finished & _bools(amb, n), lost=lost, realized_known=realized_known,
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
        actions, sizes = _transpose(map(_OF_DECISION, map(_DECISION, reviews)), 2)
        return cls.decided(list(map(_VERDICT, reviews)), actions, sizes)

    @classmethod
    def decided(cls, verdicts: Sequence[Verdict], actions: Sequence[Any], sizes: Sequence[float]) -> VerdictColumns:
        """From the verdicts and, in the same order, their clamped decisions' actions and sizes."""
        kinds, sources, tiers, latency, tin, tout, tcached, cost, attempts = _transpose(map(_OF_VERDICT, verdicts), 9)
        return cls(kinds, sources, tiers, latency, tin, tout, tcached, cost, attempts, actions, sizes)

    def __len__(self) -> int:
        return len(self.kinds)


@dataclass(slots=True)
class Columns:
    """Every fact scoring counts of every reviewed signal, as arrays in review order.

    The figures are sums and counts over these: integer counts are exact whatever the order, and every
    float sum is accumulated one term at a time in review order (``np.bincount`` with weights), so each
    figure is the same double that adding the terms signal by signal gives, to the last bit.
    """

    n: int
    created_ms: np.ndarray
    groups: dict[str, Groups]  # breakdown dimension → each signal's group (tier, strategy, regime, symbol)
    kinds: Groups  # the verdicts (accept, modify, veto)
    sources: Groups  # who answered (a tier, cache, fallback, off)
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
    shadow_closed_ms: np.ndarray
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


def columns(s: SignalColumns, v: VerdictColumns, estimate: bool) -> Columns:
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
    kinds, sources = Groups(v.kinds), Groups(v.sources)
    is_fallback = sources.where(lambda x: x == "fallback")
    return Columns(
        n=n, created_ms=s.created_ms,
        groups={"tier": Groups([t or x for t, x in zip(v.tiers, v.sources, strict=True)]), **s.groups},
        kinds=kinds, sources=sources,
        scored=s.scored, lost=s.lost, ambiguous=s.ambiguous,
        veto=kinds.where(lambda k: str(k) == "veto"), accept=kinds.where(lambda k: str(k) == "accept"),
        modify=kinds.where(lambda k: str(k) == "modify"), executed=executed, weight=s.weight,
        has_shadow_pnl=s.shadow_filled, shadow_pnl=s.shadow_pnl, shadow_closed_ms=s.shadow_closed_ms,
        has_effect=has_effect, effect=effect,
        modified=modified, modify_delta=delta, live=sources.where(lambda x: x != "off"),
        through=is_fallback | np.fromiter((not all(map(_OK, a)) for a in v.attempts), dtype=np.bool_, count=n),
        fallback=is_fallback, cached=sources.where(lambda x: x == "cache"),
        latency_ms=_floats(v.latency_ms), input_tokens=_ints(v.input_tokens), output_tokens=_ints(v.output_tokens),
        cached_tokens=_ints(v.cached_tokens), cost_usd=_floats(v.cost_usd),
    )
