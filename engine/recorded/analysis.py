"""Feature analysis: a recorded run's context packs and shadow outcomes → which context fields predict outcomes.

For every context field (regime tag, volatility percentile quintile, loss streak, win rate, correlated
same-side exposure, news category present/absent, each gate's note, signal side, strategy style) the reviewed
signals are put in buckets; each bucket shows the shadow trade's loss rate (Wilson 95 % interval, counts) and
mean R multiple, per strategy style and overall. Per field, a test of association between bucket and "the
shadow trade lost": the chi-square statistic of the bucket × lost table, its p-value from seeded label
permutations (exact in the limit, valid for small cells), and Benjamini–Hochberg q-values across the fields of
one scope, so that "informative" (q ≤ alpha) controls the false discovery rate.

Scored means what the scorecard means (``engine.core.scored.is_scored``): ambiguous outcomes are counted apart,
never in a loss rate. Nothing is recomputed from market data: the stored packs are what the reviewer saw.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.config import stored_value
from engine.core.scored import is_finished, is_scored
from engine.ports import RunReader
from engine.stats import benjamini_hochberg, wilson
from engine.types import RunInfo

if TYPE_CHECKING:
    from engine.recorded.stored import StoredRun

__all__ = [
    "Analysis",
    "Bucket",
    "FieldTest",
    "SignalFacts",
    "analyze",
    "analyze_facts",
    "analyze_runs",
    "benjamini_hochberg",
    "facts_of_pack",
    "permutation_chi2",
]

_CORR_THRESHOLD = 0.6  # |corr| at which an open position counts as the same risk (the rules tier's default)
_MAX_LEVELS = 6  # a gate note with more distinct texts than this is binned by its first number
# a number, not one naming a period ("24h quote volume ...")
_NUMBER = re.compile(r"[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?!\d|[.,]\d|h\b)")
_ALL = "all"


@dataclass(frozen=True, slots=True)
class SignalFacts:
    """One reviewed signal as the analysis reads it: its context fields (field → bucket label) and its outcome."""

    fields: Mapping[str, str]
    style: str
    scored: bool  # finished and not ambiguous
    ambiguous: bool  # finished and ambiguous: reported apart
    lost: bool
    r_multiple: float
    stratum: int = 0  # pooled runs (analyze_runs): which run; labels are permuted within a stratum only


@dataclass(frozen=True, slots=True)
class Bucket:
    label: str
    reviewed: int
    scored: int
    lost: int
    ambiguous: int
    mean_r: float | None

    @property
    def loss_rate(self) -> float | None:
        return self.lost / self.scored if self.scored else None

    def to_dict(self) -> dict[str, Any]:
        lo, hi = wilson(self.lost, self.scored)
        return {"label": self.label, "reviewed": self.reviewed, "scored": self.scored, "lost": self.lost,
                "ambiguous": self.ambiguous, "loss_rate": self.loss_rate,
                "ci95": [lo, hi] if self.scored else None, "mean_r": self.mean_r}


@dataclass(frozen=True, slots=True)
class FieldTest:
    field: str
    scope: str  # "all" or a strategy style
    levels: int  # buckets with scored signals
    scored: int
    chi2: float | None
    p_value: float | None  # None: fewer than two buckets with scored signals (nothing to test)
    q_value: float | None
    informative: bool

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "scope": self.scope, "levels": self.levels, "scored": self.scored,
                "chi2": self.chi2, "p_value": self.p_value, "q_value": self.q_value,
                "informative": self.informative}


@dataclass
class Analysis:
    reviewed: int
    scored: int
    ambiguous: int
    alpha: float
    permutations: int
    seed: int
    buckets: dict[str, dict[str, list[Bucket]]] = field(default_factory=dict)  # scope → field → buckets
    tests: list[FieldTest] = field(default_factory=list)
    run_id: int | None = None
    run: str = ""
    runs: list[tuple[int, str]] = field(default_factory=list)  # pooled: every run, in stratum order

    def informative(self, scope: str = _ALL) -> list[str]:
        return [t.field for t in self.tests if t.scope == scope and t.informative]

    def test(self, field_name: str, scope: str = _ALL) -> FieldTest | None:
        return next((t for t in self.tests if t.field == field_name and t.scope == scope), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "run": self.run, "reviewed": self.reviewed, "scored": self.scored,
            "ambiguous": self.ambiguous, "alpha": self.alpha, "permutations": self.permutations, "seed": self.seed,
            "method": "chi-square of bucket × lost, p from seeded label permutations"
                      + (" within each run (pooled runs: a run's own loss rate is not evidence about a field)"
                         if self.runs else "")
                      + ", Benjamini–Hochberg q across the fields of each scope; ambiguous outcomes apart",
            **({"runs": [{"run_id": i, "run": n} for i, n in self.runs]} if self.runs else {}),
            "tests": [t.to_dict() for t in self.tests],
            "buckets": {scope: {f: [b.to_dict() for b in bs] for f, bs in fields.items()}
                        for scope, fields in self.buckets.items()},
        }


# ------------------------------------------------------------------------------------------ buckets


def _quintile(pct: Any) -> str:
    if pct is None or not isinstance(pct, (int, float)) or not math.isfinite(pct):
        return "unknown"
    lo = min(80, int(max(0.0, float(pct)) // 20) * 20)
    if pct == lo and lo > 0:  # bins are (lo, lo + 20], the first [0, 20]
        lo -= 20
    return f"{lo}–{lo + 20}"


def _streak(n: int) -> str:
    return str(n) if n < 3 else ("3–4" if n < 5 else "5+")


def _win_rate(wr: Any) -> str:
    if wr is None:
        return "no trades"
    for cut, label in ((0.3, "0–30 %"), (0.45, "30–45 %"), (0.6, "45–60 %")):
        if wr < cut:
            return label
    return "60–100 %"


def _exposure(pct: float) -> str:
    if pct <= 0:
        return "0"
    if pct <= 15:
        return "0–15 %"
    if pct <= 35:
        return "15–35 %"
    return ">35 %"


def _style(tags: Sequence[str]) -> str:
    for t in tags:
        if t.startswith("style:"):
            return t[len("style:"):]
    return "none"


def facts_of_pack(pack: Mapping[str, Any], gate_names: Sequence[str], outcome: tuple[Any, ...] | None,
                  news_categories: Sequence[str] = ()) -> SignalFacts:
    """A stored pack's dict (``ContextPack.to_dict``) and its shadow outcome (filled, pnl_pct, r_multiple,
    exit_reason, ambiguous) → the facts the analysis buckets. Gate notes keep their raw text here (binned later)."""
    sig = pack["signal"]
    side = str(sig["side"])
    regime = pack["regime"]
    stats = pack["trade_stats"]
    exposure = 0.0
    for c in pack.get("correlated_positions", ()):
        corr = c.get("corr")
        if corr is None or not math.isfinite(corr) or abs(corr) < _CORR_THRESHOLD:
            continue
        if (c["side"] == side) == (corr > 0):
            exposure += float(c["size_pct_equity"])
    present = {str(n["category"]) for n in pack.get("news", ())}
    fields: dict[str, str] = {
        "regime_tag": str(regime["tag"]),
        "vol_percentile": _quintile(regime.get("vol_percentile")),
        "loss_streak": _streak(int(stats["loss_streak"])),
        "win_rate": _win_rate(stats.get("win_rate")),
        "correlated_exposure": _exposure(exposure),
        "news_any": "present" if present else "absent",
        "side": side,
        "style": _style(sig.get("tags", ())),
    }
    for cat in news_categories:
        fields[f"news:{cat}"] = "present" if cat in present else "absent"
    notes = [n for n in str(pack.get("gate_note", "")).split("; ") if n]
    if notes and notes != ["no gates"]:
        names = list(gate_names) if len(gate_names) == len(notes) else [f"gate{i + 1}" for i in range(len(notes))]
        for name, note in zip(names, notes, strict=True):
            fields[f"gate:{name}"] = note
    if outcome is None:
        scored = ambiguous = lost = False
        r = math.nan
    else:
        filled, pnl, r_mult, exit_reason, amb = outcome
        finished = is_finished(filled, exit_reason)
        scored = is_scored(filled, exit_reason, amb)
        ambiguous = finished and bool(amb)
        lost = finished and pnl < 0
        r = float(r_mult) if finished else math.nan
    return SignalFacts(fields, fields["style"], scored, ambiguous, lost, r)


def _bin_notes(facts: list[SignalFacts]) -> list[SignalFacts]:
    """Gate notes with many distinct texts (they carry numbers) → quintiles of their first number in this run.

    Pooled runs (several strata): each run's notes are binned on their own (their numbers may be in another
    unit: a volume in BTC, in USD) and labelled by fifth, so that a bucket means the same in every run."""
    strata = sorted({x.stratum for x in facts})
    if len(strata) > 1:
        out: dict[int, SignalFacts] = {}
        for k in strata:
            idx = [i for i, x in enumerate(facts) if x.stratum == k]
            for i, x in zip(idx, _bin_notes_one([facts[i] for i in idx], by_fifth=True), strict=True):
                out[i] = x
        return [out[i] for i in range(len(facts))]
    return _bin_notes_one(facts)


def _bin_notes_one(facts: list[SignalFacts], by_fifth: bool = False) -> list[SignalFacts]:
    gate_fields = sorted({f for x in facts for f in x.fields if f.startswith("gate:")})
    relabel: dict[str, Callable[[str], str]] = {}
    for g in gate_fields:
        texts = {x.fields[g] for x in facts if g in x.fields}
        if len(texts) <= _MAX_LEVELS:
            continue
        nums = {t: _first_number(t) for t in texts}
        values = sorted(v for v in nums.values() if v is not None)
        if not values:
            continue
        cuts = sorted(set(np.quantile(values, [0.2, 0.4, 0.6, 0.8]).tolist()))

        def label(t: str, nums: dict[str, float | None] = nums, cuts: list[float] = cuts,
                  by_fifth: bool = by_fifth) -> str:
            v = nums[t]
            if v is None:
                return "no number"
            i = int(np.searchsorted(cuts, v, side="left"))
            if by_fifth:
                return f"fifth {i + 1} of {len(cuts) + 1}"
            lo = "" if i == 0 else f"{cuts[i - 1]:g}"
            hi = "" if i == len(cuts) else f"{cuts[i]:g}"
            return f"≤ {hi}" if not lo else (f"> {lo}" if not hi else f"{lo}–{hi}")

        relabel[g] = label
    if not relabel:
        return facts
    out = []
    for x in facts:
        fields = dict(x.fields)
        for g, fn in relabel.items():
            if g in fields:
                fields[g] = fn(fields[g])
        out.append(dataclasses.replace(x, fields=fields))
    return out


def _first_number(text: str) -> float | None:
    m = _NUMBER.search(text)
    if not m:
        return None
    raw = m.group(0).replace(",", "")
    mult = {"k": 1e3, "M": 1e6, "B": 1e9}.get(text[m.end():m.end() + 1], 1.0)
    try:
        return float(raw) * mult
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------- tests


def _chi2(counts: np.ndarray, lost: np.ndarray) -> np.ndarray:
    """Chi-square statistic of a levels × {lost, won} table; ``lost`` may be a batch (B × levels)."""
    n_total = counts.sum()
    k_total = lost.sum(axis=-1, keepdims=True)
    e1 = counts * k_total / n_total
    e0 = counts - e1
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(e1 > 0, (lost - e1) ** 2 / e1, 0.0)
        t0 = np.where(e0 > 0, ((counts - lost) - e0) ** 2 / e0, 0.0)
    return (t1 + t0).sum(axis=-1)


def permutation_chi2(codes: np.ndarray, lost: np.ndarray, perms: np.ndarray) -> tuple[float, float]:
    """(chi-square, permutation p-value) of bucket ``codes`` against ``lost`` (both over scored signals).

    ``perms``: B × n permuted copies of ``lost`` (shared by every field of a scope). p = (1 + #{χ²_perm ≥ χ²})
    / (B + 1), which is never 0 and is exact for the permutation null.
    """
    levels = int(codes.max()) + 1
    onehot = np.zeros((codes.shape[0], levels))
    onehot[np.arange(codes.shape[0]), codes] = 1.0
    counts = onehot.sum(axis=0)
    observed = float(_chi2(counts, lost.astype(float) @ onehot))
    null = _chi2(counts, perms @ onehot)
    exceed = int(np.count_nonzero(null >= observed * (1 - 1e-9)))
    return observed, (1 + exceed) / (perms.shape[0] + 1)


def _buckets(facts: Sequence[SignalFacts], name: str) -> list[Bucket]:
    groups: dict[str, list[SignalFacts]] = {}
    for x in facts:
        groups.setdefault(x.fields.get(name, "n/a"), []).append(x)
    out = []
    for label in sorted(groups, key=_label_key):
        xs = groups[label]
        rs = [x.r_multiple for x in xs if x.scored and math.isfinite(x.r_multiple)]
        out.append(Bucket(label, len(xs), sum(x.scored for x in xs), sum(x.scored and x.lost for x in xs),
                          sum(x.ambiguous for x in xs), math.fsum(rs) / len(rs) if rs else None))
    return out


def _label_key(label: str) -> tuple[float, str]:
    """Numeric buckets in numeric order ("≤ 3" before "3–5" before "> 5"), then the others by name."""
    if not (label[:1].isdigit() or label[:1] in "<>≤≥"):
        return (math.inf, label)
    v = _first_number(label)
    if v is None:
        return (math.inf, label)
    return (v - 1e-9 if label[:1] in "<≤" else v + 1e-9 if label[:1] in ">≥" else v, label)


def analyze_facts(facts: Sequence[SignalFacts], *, alpha: float = 0.05, permutations: int = 2000,
                  seed: int = 0) -> Analysis:
    """Buckets and tests over the given signals' facts (overall and per strategy style). Deterministic for a seed."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) (got {alpha})")
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1 (got {permutations})")
    facts = _bin_notes(list(facts))
    out = Analysis(reviewed=len(facts), scored=sum(x.scored for x in facts),
                   ambiguous=sum(x.ambiguous for x in facts), alpha=alpha, permutations=permutations, seed=seed)
    names = sorted({f for x in facts for f in x.fields})
    styles = sorted({x.style for x in facts})
    scopes: list[tuple[str, list[SignalFacts]]] = [(_ALL, list(facts))]
    if len(styles) > 1:
        scopes += [(s, [x for x in facts if x.style == s]) for s in styles]
    for s_i, (scope, xs) in enumerate(scopes):
        fields = [f for f in names if not (scope != _ALL and f == "style")]
        out.buckets[scope] = {f: _buckets(xs, f) for f in fields}
        scored = [x for x in xs if x.scored]
        lost = np.array([x.lost for x in scored], dtype=bool)
        rng = np.random.default_rng([seed, s_i])
        perms = np.empty((permutations, len(scored)))
        strata = np.array([x.stratum for x in scored], dtype=np.intp)
        groups = [np.flatnonzero(strata == k) for k in np.unique(strata)]
        for b in range(permutations):
            if len(groups) <= 1:
                perms[b] = rng.permutation(lost)
            else:  # pooled runs: each run keeps its own losses; only who lost within it is shuffled
                for g in groups:
                    perms[b, g] = rng.permutation(lost[g])
        raw: list[tuple[str, int, float | None, float | None]] = []
        for f in fields:
            labels = [x.fields.get(f, "n/a") for x in scored]
            index = {lab: i for i, lab in enumerate(dict.fromkeys(labels))}
            if len(index) < 2 or lost.all() or not lost.any():
                raw.append((f, len(index), None, None))
                continue
            codes = np.fromiter((index[lab] for lab in labels), dtype=np.intp, count=len(labels))
            chi2, p = permutation_chi2(codes, lost, perms)
            raw.append((f, len(index), chi2, p))
        tested = [r for r in raw if r[3] is not None]
        qs = dict(zip([r[0] for r in tested], benjamini_hochberg([r[3] for r in tested]), strict=True))  # type: ignore[misc]
        for f, levels, chi2, p in raw:
            q = qs.get(f)
            out.tests.append(FieldTest(f, scope, levels, len(scored), chi2, p, q, q is not None and q <= alpha))
    return out


# ------------------------------------------------------------------------------------------ a run


def analyze(reader: RunReader, run_id: int, *, alpha: float = 0.05, permutations: int = 2000,
            seed: int = 0, stored: StoredRun | None = None) -> Analysis:
    """The feature analysis of a recorded run, from its stored packs and shadow outcomes.

    ``stored``: the run as the caller already read it (``load_stored(..., keep_json=True)``). Raises: StorageError.
    """
    run = reader.get_run(run_id)
    out = analyze_facts(_facts(reader, run, stored), alpha=alpha, permutations=permutations, seed=seed)
    out.run_id, out.run = run.id, run.name
    return out


def analyze_runs(reader: RunReader, run_ids: Sequence[int], *, alpha: float = 0.05, permutations: int = 2000,
                 seed: int = 0) -> Analysis:
    """The feature analysis of several runs pooled (e.g. one per data set): buckets over every run's reviewed
    signals, and each field's test with the labels permuted within each run — so a field counts as informative
    only if it predicts outcomes *within* runs, not because one run's signals both sit in one bucket and lose
    more (a market's own loss rate is not evidence about a field). One run: ``analyze``."""
    if len(set(run_ids)) != len(run_ids):
        raise ValueError(f"runs to pool must differ (got {list(run_ids)})")
    if len(run_ids) == 1:
        return analyze(reader, run_ids[0], alpha=alpha, permutations=permutations, seed=seed)
    facts: list[SignalFacts] = []
    runs = []
    for k, rid in enumerate(run_ids):
        run = reader.get_run(rid)
        runs.append((run.id, run.name))
        facts += [dataclasses.replace(f, stratum=k) for f in _facts(reader, run, None)]
    out = analyze_facts(facts, alpha=alpha, permutations=permutations, seed=seed)
    out.run = " + ".join(name for _, name in runs)
    out.runs = runs
    return out


def _facts(reader: RunReader, run: RunInfo, stored: StoredRun | None) -> list[SignalFacts]:
    from engine.recorded.stored import load_stored

    if stored is None or any(not p.json for p in stored.packs):
        stored = load_stored(reader, run.id, keep_json=True)
    c = stored.stored_outcomes.columns
    shadow = {sid: (f, p, r, e, a) for sid, kind, f, p, r, e, a in zip(
        c["signal_id"], c["kind"], c["filled"], c["pnl_pct"], c["r_multiple"], c["exit_reason"], c["ambiguous"],
        strict=True) if kind == "shadow"}
    gates = stored_value(run.config_json, "gates", []) or []
    gate_names = [str(g.get("kind", f"gate{i + 1}")) for i, g in enumerate(gates) if isinstance(g, dict)]
    packs = [json.loads(p.json) for p in stored.packs]
    categories = sorted({str(n["category"]) for d in packs for n in d.get("news", ())})
    return [facts_of_pack(d, gate_names, shadow.get(d["signal"]["id"]), categories) for d in packs]
