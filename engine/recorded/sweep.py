"""A sweep's read side: walk-forward windows, each trial's figures per span, the out-of-sample leaderboard.

A sweep runs every trial (a config variant) as one replay over the whole data; its figures per span are read
back from what the replay recorded. A signal's figures belong to the span its signal was created in (its shadow
outcome is known later, and counted only when scored, by ``engine.core.scored``, as in the scorecard); a trade's
to the span it closed in. Nothing a strategy, gate or reviewer saw at a signal depends on a later span, so the
figures of a span are those of a run that had stopped there.

Walk-forward: window k trains on ``[start + k·test, start + k·test + train)`` and tests on the ``test`` that
follows. In each window the trial with the best train lift (veto precision − base loss rate; ties: the lower
trial number) is chosen and reported on that window's test span only. The leaderboard lists every trial's pooled
out-of-sample figures (all test spans) with two corrections for the number of trials tried:

- lift: the exact one-sided p-value of "vetoes lose more often than the base rate" (as the retire rule), adjusted
  across trials by Holm (family-wise) and Benjamini–Hochberg (false discovery rate);
- PnL: the deflated Sharpe ratio of the per-trade returns, against the best Sharpe ratio that that many trials of
  zero skill would show by luck.

A winner is a trial whose Holm-adjusted lift p-value is at most ``alpha`` — otherwise the table says that no
trial beats chance after the search.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.scored import RetireCheck, TrailingCounts, is_scored, retire_check
from engine.recorded.columns import split_outcomes
from engine.recorded.value import RunMetrics
from engine.stats import benjamini_hochberg, deflated_sharpe, holm, newcombe_diff
from engine.types import OutcomeKind, ReviewRecord, Trade, VerdictKind

__all__ = ["Leaderboard", "SpanFigures", "Window", "leaderboard", "span_figures", "walk_forward"]


@dataclass(frozen=True)
class Window:
    index: int
    train: tuple[int, int]  # [start, end) in ms
    test: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "train_ms": list(self.train), "test_ms": list(self.test)}


def walk_forward(start_ms: int, end_ms: int, n: int, *, train_ms: int | None = None,
                 test_ms: int | None = None) -> list[Window]:
    """``n`` consecutive (train, test) windows over ``[start_ms, end_ms)``. Without lengths, the data is cut into
    ``n + 1`` equal spans: train on one, test on the next. Raises: ValueError when they do not fit in the data."""
    span = end_ms - start_ms
    if n < 1:
        raise ValueError(f"expected at least 1 window (got {n})")
    if train_ms is None and test_ms is None:
        train_ms = test_ms = span // (n + 1)
    elif train_ms is None:
        assert test_ms is not None
        train_ms = span - n * test_ms
    elif test_ms is None:
        test_ms = (span - train_ms) // n
    if train_ms <= 0 or test_ms <= 0 or train_ms + n * test_ms > span:
        need = (train_ms or 0) + n * (test_ms or 0)
        raise ValueError(f"{n} windows of train {_days(train_ms)} + test {_days(test_ms)} need {_days(need)} of data; "
                         f"the data holds {_days(span)}")
    return [Window(k, (start_ms + k * test_ms, start_ms + k * test_ms + train_ms),
                   (start_ms + k * test_ms + train_ms, start_ms + (k + 1) * test_ms + train_ms)) for k in range(n)]


def _days(ms: int | None) -> str:
    return "—" if ms is None else f"{ms / 86_400_000:.2f} days"


@dataclass(frozen=True)
class SpanFigures:
    """One trial's figures over a set of spans: verdict quality of the signals created there, money of the trades
    closed there."""

    reviewed: int
    verdicts: dict[str, int]
    vetoes: int
    vetoes_lost: int
    scored: int
    lost: int
    metrics: RunMetrics
    returns: tuple[float, ...]  # per-trade returns (PnL / equity before the trade), for the deflated Sharpe ratio

    @property
    def counts(self) -> TrailingCounts:
        return TrailingCounts(0, 0, self.vetoes_lost, self.vetoes, self.lost, self.scored)

    @property
    def lift(self) -> float | None:
        return _test(self.counts).lift

    @property
    def p_value(self) -> float | None:
        return _test(self.counts).p_value

    def to_dict(self) -> dict[str, Any]:
        return {"reviewed": self.reviewed, "verdicts": self.verdicts, **_quality(self.counts),
                **self.metrics.to_dict()}


def _test(c: TrailingCounts) -> RetireCheck:
    """The retire rule's own test of these counts (its exact one-sided binomial p-value and the lift)."""
    return retire_check(c, min_vetoes=1, alpha=1.0)


def _quality(c: TrailingCounts) -> dict[str, Any]:
    """Verdict quality of pooled counts: precision, base, lift with its interval, the exact p-value."""
    check, ci = _test(c), newcombe_diff(c.veto_lost, c.vetoes, c.lost, c.scored)
    return {"vetoes": c.vetoes, "vetoes_lost": c.veto_lost, "scored": c.scored, "lost": c.lost,
            "veto_precision": c.precision, "base_loss_rate": c.base, "lift": check.lift,
            "lift_ci": None if ci is None else list(ci), "p_value": check.p_value}


def span_figures(reviews: Sequence[ReviewRecord], outcomes: Sequence[Any], trades: Sequence[Trade],
                 spans: Sequence[tuple[int, int]], starting_equity: float) -> SpanFigures:
    """A trial's figures over ``spans`` (a signal by its creation time, a trade by its close)."""
    def inside(t: int) -> bool:
        return any(a <= t < b for a, b in spans)

    shadow, _ = split_outcomes(o for o in outcomes if o.kind is OutcomeKind.SHADOW)
    verdicts = {"accept": 0, "modify": 0, "veto": 0}
    reviewed = vetoes = vetoes_lost = scored = lost = 0
    for r in reviews:
        sig = r.pack.signal
        if not inside(sig.created_ms):
            continue
        reviewed += 1
        kind = r.verdict.verdict
        verdicts[kind.value] += 1
        o = shadow.get(sig.id)
        if o is None or not is_scored(o.filled, o.exit_reason, o.ambiguous):
            continue
        scored += 1
        lost += o.lost
        if kind is VerdictKind.VETO:
            vetoes += 1
            vetoes_lost += o.lost
    ordered = sorted(trades, key=lambda t: (t.closed_ms, t.signal_id))
    equity, returns, mine = starting_equity, [], []
    for t in ordered:
        if inside(t.closed_ms):
            mine.append(t)
            returns.append(t.pnl / equity if equity > 0 else 0.0)
        equity += t.pnl
    first = next((i for i, t in enumerate(ordered) if inside(t.closed_ms)), len(ordered))
    before = math.fsum(t.pnl for t in ordered[:first])
    return SpanFigures(reviewed, verdicts, vetoes, vetoes_lost, scored, lost,
                       RunMetrics.of(mine, starting_equity + before), tuple(returns))


@dataclass(frozen=True)
class Leaderboard:
    trials: list[dict[str, Any]]  # per trial: number, assignment, run id, out-of-sample figures and corrections
    windows: list[dict[str, Any]]  # per window: the trial chosen on train, its train and test figures
    winner: int | None  # the trial whose corrected lift beats chance, best first; None: no trial does
    alpha: float
    summary: str
    selected: dict[str, Any]  # the walk-forward selection pooled over its test spans: the honest figure

    def to_dict(self) -> dict[str, Any]:
        return {"trials": self.trials, "windows": self.windows, "winner": self.winner, "alpha": self.alpha,
                "summary": self.summary, "selected": self.selected}


def leaderboard(trials: Sequence[tuple[int, dict[str, Any], int]], figures: dict[int, dict[str, SpanFigures]],
                windows: Sequence[Window], *, alpha: float = 0.05) -> Leaderboard:
    """``trials``: (number, assignment, run id); ``figures[number]``: ``"train:k"``, ``"test:k"`` and ``"oos"`` (all
    test spans) figures of that trial."""
    numbers = [n for n, _, _ in trials]
    chosen_rows: list[dict[str, Any]] = []
    for w in windows:
        def key(n: int, k: int = w.index) -> tuple[float, int]:
            lift = figures[n][f"train:{k}"].lift
            return (-(lift if lift is not None else -math.inf), n)

        best = min(numbers, key=key)
        chosen_rows.append({**w.to_dict(), "chosen": best, "train": figures[best][f"train:{w.index}"].to_dict(),
                            "test": figures[best][f"test:{w.index}"].to_dict()})
    # the selection itself, out of sample: each window's test span with the trial its train span chose
    picked = [figures[c["chosen"]][f"test:{w.index}"] for w, c in zip(windows, chosen_rows, strict=True)]
    sel = TrailingCounts(0, 0, sum(f.vetoes_lost for f in picked), sum(f.vetoes for f in picked),
                         sum(f.lost for f in picked), sum(f.scored for f in picked))
    selected = {**_quality(sel), "pnl": math.fsum(f.metrics.pnl for f in picked),
                "trades": sum(f.metrics.trades for f in picked)}
    oos = [figures[n]["oos"] for n in numbers]
    pvals = [f.p_value for f in oos]
    holm_p, bh_q = holm(pvals), benjamini_hochberg(pvals)
    sharpes = [s for s in (deflated_sharpe(f.returns, [])["sharpe"] for f in oos) if s is not None]
    rows: list[dict[str, Any]] = []
    for (n, assignment, run_id), f, hp, q in zip(trials, oos, holm_p, bh_q, strict=True):
        ds = deflated_sharpe(f.returns, sharpes)
        rows.append({"trial": n, "params": assignment, "run_id": run_id, "oos": f.to_dict(), "lift_p_holm": hp,
                     "lift_q_bh": q, "deflated_sharpe": ds["dsr"], "sharpe_per_trade": ds["sharpe"],
                     "sharpe_luck_threshold": ds["sharpe0"],
                     "chosen_in": [w.index for w, c in zip(windows, chosen_rows, strict=True) if c["chosen"] == n]})
    rows.sort(key=lambda r: (-(r["oos"]["lift"] if r["oos"]["lift"] is not None else -math.inf), r["trial"]))
    winners = [r for r in rows if r["lift_p_holm"] is not None and r["lift_p_holm"] <= alpha
               and (r["oos"]["lift"] or 0) > 0]
    winner = winners[0]["trial"] if winners else None
    if winner is None:
        best = rows[0] if rows else None
        summary = (f"no trial beats chance after the search: the best out-of-sample lift "
                   f"{_pp(best['oos']['lift'])} (trial {best['trial']}) has a Holm-adjusted p of "
                   f"{_p(best['lift_p_holm'])} over {len(rows)} trials (alpha {alpha:g})" if best else "no trials")
    else:
        w = winners[0]
        summary = (f"trial {winner} beats chance after the search: out-of-sample lift {_pp(w['oos']['lift'])}, "
                   f"Holm-adjusted p {_p(w['lift_p_holm'])} over {len(rows)} trials (alpha {alpha:g}); deflated "
                   f"Sharpe {_p(w['deflated_sharpe'])}")
    summary += (f"; chosen on train and tested on the next window, the selection's own out-of-sample lift is "
                f"{_pp(selected['lift'])} (p {_p(selected['p_value'])}, {sel.vetoes} vetoes)")
    return Leaderboard(rows, chosen_rows, winner, alpha, summary, selected)


def _pp(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:+.1f} points"


def _p(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"
