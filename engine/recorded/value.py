"""Reviewer value in money: a recorded run against real replays of itself with the reviewer replaced.

DESIGN §4. The real run is compared with replays of the same run — the same stored config, data and seed; gates,
limits, sizing and fills exactly as in the real run — in which the reviewer is replaced:

- **reviewer off**: every reviewed signal accepted as emitted (the gate decision). A possible run: position limits,
  buying power, exchange minimums and compounding all apply, unlike the old "gate-only" sum of shadow trades;
- **random reviewers** (``SampledReviewer``): N replays, each answering every signal with a verdict drawn from the
  real run's own verdicts (``VerdictMix``: the accept/modify/veto rates, confidences, modified sizes and stops, as
  recorded). A modified stop is carried over as a fraction of the signal's own stop distance. The draw for a
  signal is a hash of (seed, replay index, signal id): independent of the order signals arrive in, so the same seed
  gives the same replays, bit for bit, wherever they run. No LLM is called.

Each run is summarised by ``RunMetrics`` (PnL, max drawdown, Sharpe, profit factor, from its trades), and the real
run is placed in the random distribution (``compare``): its percentile (the share of random runs it beats, ties
half) and an empirical one-sided p-value, (1 + random runs at least as good) / (N + 1).

The replays themselves are run by the composition root (``engine.value``, on Dask); this module knows the
``Reviewer`` port and value types only.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.stats import percentile
from engine.types import ContextPack, Event, ReviewRecord, Trade, Verdict, VerdictKind

__all__ = ["METRICS", "RunMetrics", "SampledReviewer", "VerdictMix", "VerdictShape", "compare", "counterfactual_label",
           "fingerprint", "max_drawdown_pct", "value_summary"]

_HOUR_MS = 3_600_000
# (name, higher is better)
METRICS: tuple[tuple[str, bool], ...] = (("pnl", True), ("max_drawdown_pct", False), ("sharpe", True),
                                         ("profit_factor", True))


# ------------------------------------------------------------------------------------ the random reviewer


@dataclass(frozen=True, slots=True)
class VerdictShape:
    """One recorded verdict, as a random reviewer replays it on another signal."""

    kind: str  # accept | modify | veto
    confidence: float
    size_pct: float | None = None  # modified_size_pct as the reviewer wrote it
    stop_frac: float | None = None  # the modified stop's distance from entry / the signal's stop distance


@dataclass(frozen=True)
class VerdictMix:
    """The real reviewer's verdicts, in review order: what a random reviewer draws from."""

    shapes: tuple[VerdictShape, ...]

    @classmethod
    def of(cls, reviews: Iterable[ReviewRecord]) -> VerdictMix:
        out: list[VerdictShape] = []
        for r in reviews:
            v, sig = r.verdict, r.pack.signal
            frac = None
            if v.verdict is VerdictKind.MODIFY and v.modified_sl is not None and sig.entry != sig.stop_loss:
                frac = (sig.entry - v.modified_sl) / (sig.entry - sig.stop_loss)
            out.append(VerdictShape(str(v.verdict.value), float(v.confidence),
                                    None if v.verdict is not VerdictKind.MODIFY else v.modified_size_pct, frac))
        return cls(tuple(out))

    def rates(self) -> dict[str, Any]:
        n = len(self.shapes)
        counts = {k: sum(1 for s in self.shapes if s.kind == k) for k in ("accept", "modify", "veto")}
        sizes = [s.size_pct for s in self.shapes if s.kind == "modify" and s.size_pct is not None]
        stops = [s.stop_frac for s in self.shapes if s.kind == "modify" and s.stop_frac is not None]
        return {"n": n, **{k: (c / n if n else None) for k, c in counts.items()},
                "modified_size_pct_p50": percentile(sizes, 50), "modified_stops": len(stops),
                "modified_stop_frac_p50": percentile(stops, 50)}


def _unit(seed: int, index: int, signal_id: str) -> float:
    """A uniform number in [0, 1) from (seed, replay index, signal id): the same everywhere, in any order."""
    h = hashlib.blake2b(f"{seed}:{index}:{signal_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


class SampledReviewer:
    """A ``Reviewer`` that answers each pack with a verdict drawn from ``mix`` (module docstring). Synchronous."""

    tiers: Sequence[Any] = ()
    cache = None

    def __init__(self, mix: VerdictMix, *, seed: int, index: int, mode: str = "active") -> None:
        if not mix.shapes:
            raise ValueError("a random reviewer needs at least one recorded verdict to draw from")
        self.mix, self.seed, self.index, self.mode = mix, seed, index, mode

    @property
    def synchronous(self) -> bool:
        return True

    def verdict(self, pack: ContextPack) -> Verdict:
        sig = pack.signal
        shapes = self.mix.shapes
        shape = shapes[min(len(shapes) - 1, int(_unit(self.seed, self.index, sig.id) * len(shapes)))]
        kind = VerdictKind(shape.kind)
        sl = None
        if kind is VerdictKind.MODIFY and shape.stop_frac is not None:
            sl = sig.entry - shape.stop_frac * (sig.entry - sig.stop_loss)
        return Verdict(kind, shape.confidence, "random reviewer (the real run's verdict mix)",
                       modified_size_pct=shape.size_pct if kind is VerdictKind.MODIFY else None, modified_sl=sl,
                       source="random", tier="random", model=f"mix seed {self.seed} #{self.index}")

    def review_many_sync(self, packs: Sequence[ContextPack]) -> list[Verdict]:
        return [self.verdict(p) for p in packs]

    async def review_many(self, packs: Sequence[ContextPack]) -> list[Verdict]:
        return self.review_many_sync(packs)

    def review_cached(self, hashes: Sequence[str]) -> list[Verdict | None]:
        return [None] * len(hashes)

    def drain_events(self) -> list[Event]:
        return []

    async def aclose(self) -> None:
        return None


# ------------------------------------------------------------------------------------------- metrics


@dataclass(frozen=True, slots=True)
class RunMetrics:
    """What a run made, from its closed trades (the equity curve steps at each trade's close).

    ``sharpe``: hourly returns of that realized equity curve from the first entry to the last exit, annualised by
    √8760 (a run of a few days still has enough points); None with fewer than two hours or no variation.
    ``profit_factor``: gross profit / gross loss; ``inf`` with profits and no loss, None without trades.
    """

    trades: int
    pnl: float
    max_drawdown_pct: float
    sharpe: float | None
    profit_factor: float | None

    @classmethod
    def of(cls, trades: Sequence[Trade], starting_equity: float) -> RunMetrics:
        ordered = sorted(trades, key=lambda t: (t.closed_ms, t.signal_id))
        max_dd = max_drawdown_pct(ordered, starting_equity)
        pnl = math.fsum(t.pnl for t in ordered)
        win = math.fsum(t.pnl for t in ordered if t.pnl > 0)
        loss = -math.fsum(t.pnl for t in ordered if t.pnl < 0)
        pf = None if not ordered else (win / loss if loss > 0 else (math.inf if win > 0 else None))
        return cls(len(ordered), pnl, max_dd, _sharpe(ordered, starting_equity), pf)

    def get(self, name: str) -> float | None:
        return getattr(self, name)  # type: ignore[no-any-return]

    def to_dict(self) -> dict[str, Any]:
        pf = self.profit_factor
        return {"trades": self.trades, "pnl": self.pnl, "max_drawdown_pct": self.max_drawdown_pct,
                "sharpe": self.sharpe, "profit_factor": None if pf is None or math.isinf(pf) else pf,
                "profit_factor_infinite": pf is not None and math.isinf(pf)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunMetrics:
        pf = math.inf if d.get("profit_factor_infinite") else d.get("profit_factor")
        return cls(int(d["trades"]), float(d["pnl"]), float(d["max_drawdown_pct"]), d.get("sharpe"), pf)


def max_drawdown_pct(trades: Sequence[Trade], starting_equity: float) -> float:
    """The largest fall of realized equity from its peak, % of the peak, stepping at each trade's close (in
    (close time, signal id) order)."""
    equity, peak, max_dd = starting_equity, starting_equity, 0.0
    for t in sorted(trades, key=lambda x: (x.closed_ms, x.signal_id)):
        equity += t.pnl
        peak = max(peak, equity)
        max_dd = max(max_dd, (peak - equity) / peak * 100 if peak > 0 else 0.0)
    return max_dd


def _sharpe(ordered: Sequence[Trade], starting_equity: float) -> float | None:
    if not ordered or starting_equity <= 0:
        return None
    first = min(t.opened_ms for t in ordered) // _HOUR_MS
    last = max(t.closed_ms for t in ordered) // _HOUR_MS
    hours = last - first + 1
    if hours < 2:
        return None
    pnl_by_hour = [0.0] * hours
    for t in ordered:
        pnl_by_hour[t.closed_ms // _HOUR_MS - first] += t.pnl
    equity, rets = starting_equity, []
    for x in pnl_by_hour:
        rets.append(x / equity if equity > 0 else 0.0)
        equity += x
    mean = math.fsum(rets) / hours
    var = math.fsum((r - mean) ** 2 for r in rets) / (hours - 1)
    return None if var <= 0 else mean / math.sqrt(var) * math.sqrt(8760)


# ------------------------------------------------------------------------------------------ compare


def compare(real: RunMetrics, baselines: Sequence[RunMetrics]) -> dict[str, Any]:
    """Per metric: the real run's value, the random distribution's summary, percentile and empirical p-value."""
    out: dict[str, Any] = {}
    for name, higher in METRICS:
        r = real.get(name)
        vals = [v for v in (b.get(name) for b in baselines) if v is not None]
        finite = [v for v in vals if not math.isinf(v)]
        summary = {"n": len(vals), "min": min(finite, default=None), "p5": percentile(finite, 5),
                   "p50": percentile(finite, 50), "p95": percentile(finite, 95), "max": max(finite, default=None)}
        if r is None or not vals:
            out[name] = {"real": _finite(r), "random": summary, "percentile": None, "p_value": None,
                         "higher_is_better": higher}
            continue
        better = sum(1 for v in vals if (v < r if higher else v > r))
        ties = sum(1 for v in vals if v == r)
        as_good = sum(1 for v in vals if (v >= r if higher else v <= r))
        out[name] = {"real": _finite(r), "random": summary, "percentile": 100.0 * (better + 0.5 * ties) / len(vals),
                     "p_value": (1 + as_good) / (len(vals) + 1), "higher_is_better": higher}
    return out


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isinf(x) else x


def fingerprint(metrics: Sequence[RunMetrics]) -> str:
    """A hash of a distribution, to check bit-for-bit reproducibility (floats by their exact repr)."""
    text = json.dumps([[m.trades, repr(m.pnl), repr(m.max_drawdown_pct), repr(m.sharpe), repr(m.profit_factor)]
                       for m in metrics])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------- from the stored replays


def counterfactual_label(config_json: str) -> dict[str, Any] | None:
    """What a counterfactual run's stored config says it is: ``{"of", "reviewer", "seed", "index"}``."""
    try:
        data = json.loads(config_json) if config_json else {}
    except ValueError:
        return None
    cf = data.get("counterfactual") if isinstance(data, dict) else None
    return cf if isinstance(cf, dict) else None


def value_summary(reader: Any, run_id: int, *, seed: int | None = None, real_trades: Sequence[Trade] | None = None,
                  curves: bool = False) -> dict[str, Any]:
    """The reviewer's value from the counterfactual runs stored for ``run_id`` (``tradevet value``): the real run's
    metrics, the reviewer-off replay's, and the random replays' of one seed (the latest used, unless ``seed``),
    compared (``compare``). ``{}`` when there are none. ``curves``: each run's realized equity steps too (the
    report's chart). ``reader`` is a ``RunReader``. Raises: StorageError.
    """
    run = reader.get_run(run_id)
    children = [c for c in reader.child_runs(run_id) if c.status == "finished"]
    labelled = [(c, counterfactual_label(c.config_json) or {}) for c in children]
    off = [c for c, lab in labelled if lab.get("reviewer") == "off"]
    randoms = [(c, lab) for c, lab in labelled if lab.get("reviewer") == "random"]
    if not off and not randoms:
        return {}
    if seed is None and randoms:
        seed = int(randoms[-1][1].get("seed", 0))
    chosen = sorted(((int(lab.get("index", 0)), c) for c, lab in randoms if int(lab.get("seed", -1)) == seed),
                    key=lambda x: x[0])
    real_trades = list(reader.records(run_id).load_trades()) if real_trades is None else list(real_trades)
    real = RunMetrics.of(real_trades, run.starting_equity)
    out: dict[str, Any] = {"real": real.to_dict(), "reviewer_off": None, "random": None,
                           "convention": "real replays of the run (same config, data, seed, gates, limits, sizing, "
                                         "fills); reviewer off = every reviewed signal accepted as emitted"}
    curve: dict[str, Any] = {}
    if curves:
        curve["real"] = _steps(real_trades, run.starting_equity)
    if off:
        c = off[-1]
        trades = reader.records(c.id).load_trades()
        m = RunMetrics.of(trades, run.starting_equity)
        out["reviewer_off"] = {"run_id": c.id, **m.to_dict(), "reviewer_value_pnl": real.pnl - m.pnl}
        if curves:
            curve["reviewer_off"] = _steps(trades, run.starting_equity)
    if chosen:
        metrics: list[RunMetrics] = []
        steps: list[list[tuple[int, float]]] = []
        for _, c in chosen:
            trades = reader.records(c.id).load_trades()
            metrics.append(RunMetrics.of(trades, run.starting_equity))
            if curves:
                steps.append(_steps(trades, run.starting_equity))
        mix = counterfactual_label(chosen[0][1].config_json) or {}
        out["random"] = {"n": len(metrics), "seed": seed, "run_ids": [c.id for _, c in chosen],
                         "mix": mix.get("mix"), "compare": compare(real, metrics), "fingerprint": fingerprint(metrics),
                         "metrics": [m.to_dict() for m in metrics]}
        if curves:
            curve["random"] = steps
    if curves:
        out["curves"] = curve
    return out


def _steps(trades: Sequence[Trade], starting_equity: float) -> list[tuple[int, float]]:
    equity, out = starting_equity, []
    for t in sorted(trades, key=lambda x: (x.closed_ms, x.signal_id)):
        equity += t.pnl
        out.append((t.closed_ms, equity))
    return out
