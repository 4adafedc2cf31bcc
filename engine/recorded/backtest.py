"""Backtest of verdict quality: a recorded run's stored packs + reviewer configs → side-by-side scorecards.

Every reviewer config re-reviews the run's reviewed signals from their STORED context packs (never rebuilt
from market data), its verdicts go through the same clamp policy, and each is scored against the SAME
stored shadow outcomes — a veto by whether the signal's recorded shadow trade lost. A modification cannot
be re-simulated without bars: its effect is estimated as the clamped size × the shadow trade (a tightened
stop is not simulated), for every column alike, the recorded reviewer included.

Speed (a run may hold 100,000 reviewed signals). Rebuilding a pack from JSON and re-checking its hash
costs ~0.5 ms, and one SQL round trip per verdict-cache lookup ~0.2 ms, so:
- the run is read by ``storage.bulk`` in one pass per table (signals, packs, verdicts, decisions, outcomes);
  every stored pack's JSON is checked against its stored hash (SHA-256) as it streams past, and only what
  scoring needs is kept. The recorded verdicts stay rows: the recorded column is scored from their
  columns, and ``StoredRun.reviews`` builds the objects only when asked (exports, reports);
- the verdict cache is read in bulk, one query per tier of the reviewer (the run's packs joined to the
  cache's primary key), and handed to the cascade as a dict-backed cache: its lookups are dict lookups;
- a pack whose first tier has a cached verdict never reaches a tier (the cascade answers from the cache
  before it calls one), so it travels as a *hash carrier* — a ContextPack holding the stored JSON, its
  hash, the signal (from the signals table), the regime tag and the equity, and nothing else. Every other
  pack is rebuilt in full (``ContextPack.from_json``, hash verified) before any tier sees it;
- a cascade whose tiers all answer without awaiting (rules) runs through ``Cascade.review_many_sync``,
  any other through ``Cascade.review_many``, in chunks of ``--concurrency`` packs;
- every column is scored over arrays (``engine.recorded.scoring.score_columns``) against one ``SignalColumns`` of
  the run: the signals and their outcomes are read into arrays once, not once per column.

Like ``engine.app``, this module is a composition root: it wires ``reviewer`` and ``storage`` together
(imported inside the functions, so that importing it stays cheap).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import LoadedConfig, PolicyConfig, load_config
from engine.core.clamp import clamp
from engine.errors import ConfigError, StorageError
from engine.recorded.scoring import Scorecard, SignalColumns, VerdictColumns, score_columns
from engine.recorded.scoring import gc_paused as _gc_paused
from engine.types import (
    ContextPack,
    Decision,
    Outcome,
    RegimeInfo,
    RegimeTag,
    ReviewRecord,
    Signal,
    TradeStats,
    Verdict,
)

if TYPE_CHECKING:
    from storage.bulk import ReviewedRows

__all__ = [
    "BacktestColumn",
    "BacktestResult",
    "StoredReview",
    "StoredRun",
    "full_packs",
    "hash_carrier",
    "load_stored",
    "review_stored",
    "reviewer_config",
    "run_backtest",
]

Progress = Callable[[str, int, int], None]  # (label, done, total)

_NO_STATS = TradeStats(0, None, 0)
_SHADOW_FACTS = itemgetter(2, 3, 5, 6)  # of an outcome row: filled, pnl_pct, exit_reason, ambiguous (SignalColumns)
_REALIZED_FACTS = itemgetter(2, 3)  # filled, pnl_pct
_REGIMES = {str(t): RegimeInfo(t, None, None, None, 0, 0) for t in RegimeTag}  # shared: carriers only need the tag


# ------------------------------------------------------------------------------------------ the run


@dataclass(frozen=True, slots=True)
class StoredReview:
    """One recorded review as the backtest needs it: a hash-carrier pack and the recorded verdict."""

    pack: ContextPack  # hash carrier: signal, regime tag, equity, stored json and hash
    verdict: Verdict
    decision: Decision
    mode: str

    @property
    def record(self) -> ReviewRecord:
        return ReviewRecord(self.pack, self.verdict, self.decision, self.mode)


@dataclass
class StoredRun:
    """A recorded run, loaded once and shared by every reviewer column."""

    run_id: int
    name: str
    config_json: str
    starting_equity: float
    packs: list[ContextPack]  # hash carriers, in signal order
    rows: ReviewedRows  # the recorded verdicts and decisions, as stored rows (same order)
    outcome_rows: list[tuple[Any, ...]]  # shadow outcomes (what every column is judged against), realized on request
    load_s: float = 0.0
    _reviews: list[StoredReview] | None = field(default=None, repr=False)
    _outcomes: list[Outcome] | None = field(default=None, repr=False)

    @property
    def reviews(self) -> list[StoredReview]:
        """The recorded reviews (verdict and decision objects are built on first use; not after a lean load)."""
        if self._reviews is None:
            rows = self.rows
            self._reviews = [StoredReview(p, rows.verdict(i), rows.decision(i), rows.mode(i))
                             for i, p in enumerate(self.packs)]
        return self._reviews

    @property
    def outcomes(self) -> list[Outcome]:
        """The loaded outcomes (built on first use)."""
        if self._outcomes is None:
            from storage.bulk import outcome_of

            self._outcomes = list(map(outcome_of, self.outcome_rows))
        return self._outcomes

    def signal_columns(self) -> SignalColumns:
        """The reviewed signals and their outcomes as scoring reads them, straight from the rows."""
        # OUTCOME_COLUMNS: signal_id, kind, filled, pnl_pct, r_multiple, exit_reason, ambiguous, ...
        rows = self.outcome_rows
        shadow = {r[0]: _SHADOW_FACTS(r) for r in rows if r[1] == "shadow"}
        realized = {r[0]: _REALIZED_FACTS(r) for r in rows if r[1] != "shadow"}
        return SignalColumns.build(self.rows.signals, self.rows.equities, [p.regime.tag for p in self.packs], shadow,
                                   realized)

    def recorded_columns(self) -> VerdictColumns:
        """The recorded verdicts and decisions as scoring reads them, straight from the rows."""
        v, d = self.rows.verdict_values, self.rows.decision_values
        return VerdictColumns(v("verdict"), v("source"), v("tier"), v("latency_ms"), v("input_tokens"),
                              v("output_tokens"), v("cached_tokens"), v("cost_usd"), v("attempts"), d("action"),
                              d("size_pct"))


def hash_carrier(signal: Signal, regime_tag: str, equity: float, text: str, h: str) -> ContextPack:
    """A pack that carries a stored pack's identity (hash, JSON) and what scoring reads, nothing else.

    Only for packs no tier will read (answered from the cache) and for scoring; see the module docstring.
    """
    regime = _REGIMES.get(regime_tag, _REGIMES["unknown"])
    return ContextPack(signal, (), _NO_STATS, regime, (), (), "", equity, text, h)


def load_stored(store: Any, run_id: int, *, keep_json: bool = False, realized: bool = False,
                lean: bool = False, check: Any = None) -> StoredRun:
    """Read a run's reviews and shadow outcomes (``storage.bulk``); check every stored pack against its hash.

    ``realized``: load the realized outcomes too (the scorecard of a run needs them, a backtest does not).
    ``lean``: read only what scoring reads of the recorded verdicts and decisions (a backtest): ``reviews``
    is then unavailable, ``recorded_columns`` is.

    The hash carriers keep the pack JSON only with ``keep_json`` (100,000 packs are ~500 MB of text; a
    pack that must be reviewed is read again from the database, see ``review_stored``).

    ``check``: a ``storage.bulk.PackCheck`` started earlier (the packs are checked meanwhile, see run_backtest).

    Raises: StorageError (no such run; a pack whose JSON does not match its stored hash).
    """
    from storage import bulk

    t0 = time.perf_counter()
    run = store.get_run(run_id)
    with _gc_paused():
        rows = bulk.load_reviewed(store, run_id, keep_json=keep_json, lean=lean, check=check)
        outcome_rows = bulk.load_outcome_rows(store, run_id, realized=realized)
        packs = [hash_carrier(*x) for x in zip(rows.signals, rows.regime_tags, rows.equities, rows.jsons, rows.hashes,
                                                strict=True)]
    return StoredRun(run.id, run.name, run.config_json, run.starting_equity, packs, rows, outcome_rows,
                     load_s=time.perf_counter() - t0)


# -------------------------------------------------------------------------------------- the configs


def _has_masked(node: Any) -> bool:
    if isinstance(node, dict):
        return any(_has_masked(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_masked(v) for v in node)
    return node == "***"


def reviewer_config(path: Path, run_config_json: str, *, run_id: int | None = None,
                    env: Mapping[str, str] | None = None) -> tuple[LoadedConfig, list[str]]:
    """A reviewer file's ``reviewer:`` (and optional ``policy:``) merged over the run's stored effective config.

    Returns the loaded config and warnings. Raises: ConfigError naming the file and the dotted path.
    """
    import yaml

    from engine.config import read_yaml

    data = read_yaml(path)
    if "reviewer" not in data:
        raise ConfigError(f"{path}: expected a `reviewer:` section (got {', '.join(sorted(data)) or 'an empty file'})")
    warnings = [f"{path}: sections {', '.join(sorted(set(data) - {'reviewer', 'policy'}))} are ignored by a "
                "backtest (only reviewer and policy apply)"] if set(data) - {"reviewer", "policy"} else []
    try:
        stored = json.loads(run_config_json) if run_config_json else {}
    except ValueError:
        stored = {}
    if not isinstance(stored, dict) or "reviewer" not in stored:
        label = f"run {run_id}" if run_id is not None else "the run"
        warnings.append(f"{label} has no stored effective config: {path} is merged over the default")
        return load_config([path], env=env), warnings
    if _has_masked({"reviewer": stored.get("reviewer"), "policy": stored.get("policy")}):
        warnings.append(f"the run's stored reviewer config has masked secrets (***): set them again in {path}")
    with tempfile.TemporaryDirectory(prefix="tradevet-backtest-") as tmp:
        base = Path(tmp) / f"run-{run_id}-stored-config.yaml"
        base.write_text(yaml.safe_dump(stored, sort_keys=False, allow_unicode=True), encoding="utf-8")
        try:
            loaded = load_config([base, path], env=env, include_default=False)
        except ConfigError as e:
            raise ConfigError(str(e).replace(str(base), f"stored config of run {run_id}")) from None
    # what the temporary file set is blamed on the stored config (LoadedConfig.blaming)
    stored_name = f"stored config of run {run_id}"
    shown = {loaded.files[0]: stored_name}
    loaded = dataclasses.replace(loaded, files=(stored_name, *loaded.files[1:]),
                                 origin={k: shown.get(v, v) for k, v in loaded.origin.items()})
    return loaded, warnings


# --------------------------------------------------------------------------------------- reviewing


class _PrefetchedCache:
    """A VerdictCache whose entries for this backtest were read in bulk; writes go to the real cache too.

    ``entries``: per (tier, model, prompt version), context hash → verdict. ``get`` answers from memory. A
    key of a prefetched (tier, model, prompt version) whose hash is one of ``hashes`` (the run's packs: set
    once the run is loaded) and is not in memory is a known miss: no SQL round trip.
    """

    def __init__(self, inner: Any, entries: dict[tuple[str, str, str], dict[str, Verdict]],
                 prefetched: set[tuple[str, str, str]], hashes: set[str]) -> None:
        self.inner = inner
        self.entries = entries
        self.prefetched = prefetched
        self.hashes = hashes

    def get(self, tier: str, model: str, prompt_version: str, context_hash: str) -> Verdict | None:
        key = (tier, model, prompt_version)
        found = self.entries.get(key)
        v = None if found is None else found.get(context_hash)
        if v is not None or (key in self.prefetched and context_hash in self.hashes):
            return v
        return self.inner.get(tier, model, prompt_version, context_hash) if self.inner is not None else None

    def put(self, tier: str, model: str, prompt_version: str, context_hash: str, verdict: Verdict) -> None:
        self.entries.setdefault((tier, model, prompt_version), {}).setdefault(context_hash, verdict)
        if self.inner is not None:
            self.inner.put(tier, model, prompt_version, context_hash, verdict)

    def flush(self) -> None:
        flush = getattr(self.inner, "flush", None)
        if flush is not None:
            flush()


def prefetch_cache(store: Any, keys: Sequence[tuple[str, str, str]], run_id: int,
                   hashes: Iterable[str] = ()) -> _PrefetchedCache:
    """The verdict-cache entries of ``keys`` for the packs of run ``run_id`` (``storage.bulk.cached_verdicts``:
    one query per key), as a cache whose lookups are dict lookups and whose writes reach the real cache.
    """
    from storage import bulk

    return _PrefetchedCache(store.verdict_cache(), bulk.cached_verdicts(store, run_id, keys), set(keys), set(hashes))


def _tier_keys(cascade: Any) -> list[tuple[str, str, str]]:
    return [(t.name, t.model, str(getattr(t, "prompt_version", "") or "")) for t in cascade.tiers]


def full_packs(store: Any, run_id: int, ids: Sequence[str]) -> dict[str, ContextPack]:
    """Packs rebuilt in full from their stored JSON (hash re-verified), for the tiers that will read them."""
    from storage import bulk

    return bulk.rebuilt_packs(store, run_id, ids)


def review_stored(stored: StoredRun, cascade: Any, policy: PolicyConfig, *, cache: _PrefetchedCache | None = None,
                  store: Any = None, concurrency: int = 256, progress: Progress | None = None,
                  label: str = "review") -> list[ReviewRecord]:
    """Re-review every stored pack with ``cascade`` (chunks of ``concurrency`` through ``review_many``), clamp.

    Packs go to the cascade as hash carriers when ``cache`` holds a verdict of the cascade's first tier
    for them (the cascade then answers from the cache without calling a tier); otherwise they are rebuilt
    in full from ``store`` first, or, without ``store``, from the carrier's JSON (``load_stored(keep_json=True)``).
    """
    packs = stored.packs
    n = len(packs)
    chunk = max(1, int(concurrency))
    first = _tier_keys(cascade)[:1]
    # the first tier's cached verdicts: a pack among them is answered from the cache, never read by a tier
    cached = cache.entries.setdefault(first[0], {}) if cache is not None and first else {}

    def packs_of(part: Sequence[ContextPack]) -> list[ContextPack]:
        need = [p.signal.id for p in part if p.hash not in cached]
        if not need:
            return list(part)
        full = _rebuild(need, part)
        return [full.get(p.signal.id, p) for p in part]

    async def run_all() -> list[Verdict]:
        verdicts: list[Verdict] = []
        for i in range(0, n, chunk):
            verdicts.extend(await cascade.review_many(packs_of(packs[i:i + chunk])))
            if progress is not None:
                progress(label, min(i + chunk, n), n)
        return verdicts

    def run_all_sync() -> list[Verdict]:
        # every tier answers without awaiting (rules): the cascade's synchronous path, same bookkeeping
        verdicts: list[Verdict] = []
        for i in range(0, n, chunk):
            verdicts.extend(cascade.review_many_sync(packs_of(packs[i:i + chunk])))
            if progress is not None:
                progress(label, min(i + chunk, n), n)
        return verdicts

    def _rebuild(ids: list[str], part: Sequence[ContextPack]) -> dict[str, ContextPack]:
        if store is not None:
            return full_packs(store, stored.run_id, ids)
        wanted = set(ids)
        out = {}
        for p in part:
            if p.signal.id in wanted:
                if not p.json:
                    raise ValueError("review_stored: packs to review need `store`, or load_stored(keep_json=True)")
                pack = ContextPack.from_json(p.json)
                if pack.hash != p.hash:
                    raise StorageError(f"run {stored.run_id}: context pack of signal {p.signal.id} does not "
                                       "match its stored hash")
                out[p.signal.id] = pack
        return out

    if progress is not None:
        progress(label, 0, n)
    synchronous = getattr(cascade, "synchronous", False)
    # The synchronous path makes no reference cycles to speak of (no event loop): the collector would only
    # rescan the growing list of verdicts, again and again (0.3-0.6 s of 100,000 reviews). With an event
    # loop it stays on: asyncio makes cycles.
    with _gc_paused() if synchronous else contextlib.nullcontext():
        verdicts = run_all_sync() if synchronous else asyncio.run(run_all())
        # the signal as recorded (exact floats), not as rounded into the pack's canonical JSON
        return [ReviewRecord(p, v, clamp(p.signal, v, policy, "active"), "active")
                for p, v in zip(packs, verdicts, strict=True)]


# -------------------------------------------------------------------------------------------- result


@dataclass
class BacktestColumn:
    name: str
    config: str  # the reviewer file, or "recorded"
    card: Scorecard
    reviewed: int
    review_s: float = 0.0  # reviewing (cascade + clamp), the figure signals/s is measured on
    score_s: float = 0.0
    cache_s: float = 0.0  # reading the verdict cache before reviewing (for benchmarks; not in ``to_dict``)
    events: list[str] = field(default_factory=list)  # breaker transitions during the backtest
    warnings: list[str] = field(default_factory=list)

    @property
    def signals_per_s(self) -> float | None:
        return self.reviewed / self.review_s if self.review_s > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config, "reviewed": self.reviewed,
                "timing": {"review_s": self.review_s, "score_s": self.score_s, "signals_per_s": self.signals_per_s},
                "events": self.events, "warnings": self.warnings, "scorecard": self.card.to_dict()}


@dataclass
class BacktestResult:
    run_id: int
    run_name: str
    signals: int
    load_s: float
    columns: list[BacktestColumn]
    total_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "run": self.run_name, "signals": self.signals,
                "timing": {"load_s": self.load_s, "total_s": self.total_s,
                           "signals_per_s": self.signals * max(1, len(self.columns) - 1) / self.total_s
                           if self.total_s > 0 else None},
                "modify_effect": "estimate: clamped size × stored shadow pnl (modified stops not simulated)",
                "columns": [c.to_dict() for c in self.columns]}


def _column_names(paths: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base, k = p.stem or str(p), 1
        name = base
        while name in names or name == "recorded":
            k += 1
            name = f"{base}#{k}"
        names.append(name)
    return names


def _score(stored: StoredRun, reviewed: SignalColumns, verdicts: VerdictColumns, window_days: float) -> Scorecard:
    return score_columns(reviewed, verdicts, [], signals=len(stored.packs), starting_equity=stored.starting_equity,
                         window_days=window_days, modify_estimate=True)


def run_backtest(store: Any, run_id: int, paths: Sequence[Path], *, build_reviewer: Callable[..., Any],
                 concurrency: int = 256, progress: Progress | None = None,
                 env: Mapping[str, str] | None = None) -> BacktestResult:
    """Re-review run ``run_id``'s signals with each reviewer file; score every one side by side.

    The first column is the run's recorded reviewer, scored the same way. Verdicts are written to the
    verdict cache (flushed before returning), so repeating the backtest is served from it.

    Order of work: the packs' check starts first (``storage.bulk.PackCheck``: for a large run a child process
    reads and hashes them), then each reviewer's cascade is built and its verdict-cache entries are read,
    then the other tables; the checked packs are taken last. Raises: ConfigError (a reviewer file),
    StorageError.
    """
    from storage import bulk

    if concurrency < 1:
        raise ConfigError(f"--concurrency: must be >= 1 (got {concurrency})")
    t_all = time.perf_counter()
    configs = [reviewer_config(Path(p), store.get_run(run_id).config_json, run_id=run_id, env=env) for p in paths]
    check = bulk.PackCheck.start(store, run_id)
    prepared: list[_Prepared] = []
    try:
        for loaded, _ in configs:
            prepared.append(_prepare(store, run_id, loaded, build_reviewer))
        # The collector is off while the run is loaded and scored (no reference cycles, only many objects), and
        # the loaded run is frozen before it is switched on again: immutable from here on, it is not rescanned
        # on every pass of the collector that runs while a cascade works (asyncio makes reference cycles), nor
        # scanned once as a whole when the collector comes back on. Unfrozen (all of it) at the end.
        with _gc_paused():
            stored = load_stored(store, run_id, lean=True, check=check)
            window = 14.0
            with contextlib.suppress(ValueError, KeyError, TypeError):
                window = float(json.loads(stored.config_json)["scoring"]["retire"]["window_days"])
            t0 = time.perf_counter()
            reviewed = stored.signal_columns()  # shared by every column
            recorded = _score(stored, reviewed, stored.recorded_columns(), window)
            n = len(stored.packs)
            columns = [BacktestColumn("recorded", "recorded", recorded, n, score_s=time.perf_counter() - t0)]
            hashes = {p.hash for p in stored.packs}
            for p in prepared:
                if p.cache is not None:
                    p.cache.hashes = hashes
            gc.freeze()
        for name, path, (loaded, warnings), p in zip(_column_names(paths), paths, configs, prepared, strict=True):
            columns.append(_reviewer_column(store, stored, reviewed, name, path, loaded, warnings, window, p,
                                            concurrency=concurrency, progress=progress))
    finally:
        gc.unfreeze()
        check.close()
        for p in prepared:
            if not p.closed:
                asyncio.run(p.cascade.aclose())
    return BacktestResult(stored.run_id, stored.name, n, stored.load_s, columns,
                          total_s=time.perf_counter() - t_all)


@dataclass
class _Prepared:
    """One reviewer column before the run is loaded: its cascade and its prefetched verdict-cache entries."""

    cascade: Any
    cache: _PrefetchedCache | None
    cache_s: float
    closed: bool = False


def _prepare(store: Any, run_id: int, loaded: LoadedConfig, build_reviewer: Callable[..., Any]) -> _Prepared:
    cfg = loaded.config
    with loaded.blaming():
        cascade = build_reviewer(cfg.reviewer, cache=None, disabled=[t for t, _ in loaded.disabled_tiers])
    cascade.mode = "active"  # a backtest asks what this reviewer would decide, whatever mode it ran in
    t0 = time.perf_counter()
    with _gc_paused():
        cache = prefetch_cache(store, _tier_keys(cascade), run_id) if cfg.reviewer.cache else None
        gc.freeze()  # the prefetched entries too: they stay as they are while the cascade reads them
    cascade.cache = cache
    return _Prepared(cascade, cache, time.perf_counter() - t0)


def _reviewer_column(store: Any, stored: StoredRun, reviewed: SignalColumns, name: str, path: Path,
                     loaded: LoadedConfig, warnings: list[str], window: float, prepared: _Prepared, *,
                     concurrency: int, progress: Progress | None) -> BacktestColumn:
    """One reviewer's column: review every stored pack with its cascade (and prefetched cache), score the reviews."""
    cascade, cache = prepared.cascade, prepared.cache
    # A synchronous cascade makes no cycles worth collecting (review_stored keeps the collector off for it):
    # off until this column's reviews are freed, the collector never scans 100,000s of them.
    with _gc_paused() if getattr(cascade, "synchronous", False) else contextlib.nullcontext():
        t1 = time.perf_counter()
        try:
            reviews = review_stored(stored, cascade, loaded.config.policy, cache=cache, store=store,
                                    concurrency=concurrency, progress=progress, label=name)
        finally:
            prepared.closed = True
            asyncio.run(cascade.aclose())
            if cache is not None:
                cache.flush()  # the next identical backtest is served from these
        review_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        with _gc_paused():
            card = _score(stored, reviewed, VerdictColumns.of(reviews), window)
        events = [f"{e.subject}: {e.message}" for e in cascade.drain_events()]
        column = BacktestColumn(name, str(path), card, len(reviews), review_s=review_s,
                                score_s=time.perf_counter() - t2, cache_s=prepared.cache_s, events=events,
                                warnings=[*warnings, *(w for _, w in loaded.disabled_tiers)])
        del reviews, cache  # freed while the collector is still off
    return column
