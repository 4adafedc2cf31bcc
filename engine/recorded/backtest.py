"""Backtest of verdict quality: a recorded run's stored packs + reviewer configs → side-by-side scorecards.

Every reviewer config re-reviews the run's reviewed signals from their STORED context packs (never rebuilt
from market data), its verdicts go through the same clamp policy, and each is scored against the SAME
stored shadow outcomes — a veto by whether the signal's recorded shadow trade lost. A modification cannot
be re-simulated without bars: its effect is estimated as the clamped size × the shadow trade (a tightened
stop is not simulated), for every column alike, the recorded reviewer included.

Speed (a run may hold 100,000 reviewed signals). Rebuilding a pack from JSON and re-checking its hash
costs ~0.5 ms, and one SQL round trip per verdict-cache lookup ~0.2 ms, so:
- the run is read through the ``RunReader`` port (``engine.recorded.stored``) in one pass per table (signals,
  packs, verdicts, decisions, outcomes) — or, on a repeat backtest of rows that did not change, from the
  snapshot of columns the first one kept (``storage.snapshot``); every stored pack's JSON is checked against
  its stored hash (SHA-256) as it streams past, and only what scoring needs is kept (a ``PackRef`` per pack).
  The recorded verdicts stay columns: the recorded column is scored from them, and ``StoredRun.records``
  builds objects only when asked;
- the verdict cache is read in bulk, one query per tier of the reviewer (the run's packs joined to the
  cache's primary key) — by the process that checks the packs once it sent them, or by this one while that
  one is still at them (``PackCheck.ask_cache``), or by this one after a short load (a snapshot) — and
  handed to the cascade as a dict-backed cache: its lookups are dict lookups, many at a time (``get_many``);
- a pack whose first tier has a cached verdict never reaches a tier: the reviewer answers every pack it can
  from the cache by its hash alone, in one batch (``Reviewer.review_cached``: one answer object per cached
  verdict). Every other pack is rebuilt in full (``ContextPack.from_json``, hash verified) before any tier
  sees it;
- a cascade whose tiers all answer without awaiting (rules) runs through ``Cascade.review_many_sync``,
  any other through ``Cascade.review_many``, in chunks of ``--concurrency`` packs;
- the clamp decides each column's actions and sizes once per distinct (verdict, confidence, modified size)
  (``decided_columns``), and the column is scored from its verdicts straight (``verdict_columns``): no
  Decision or ReviewRecord per signal;
- every column is scored over arrays (``engine.recorded.scorecard.score_columns``) against one ``SignalColumns``
  of the run: the signals and their outcomes are read into arrays once, not once per column. A column's
  modify-improvement bootstrap (2,000 resamples of numpy work that releases the GIL) runs on a thread of its
  own while the next columns are reviewed and scored, and is put into its card before the backtest returns.

The reviewers are built by the caller's ``build_reviewer`` (the composition root's, ``engine.app.run_backtest``):
this module knows the ``Reviewer`` and ``RunReader`` ports only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import json
import operator
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import LoadedConfig, PolicyConfig, load_config, stored_value
from engine.core.clamp import clamp
from engine.errors import ConfigError
from engine.ports import Reviewer, RunReader, VerdictCache
from engine.recorded.columns import SignalColumns, VerdictColumns, gc_paused
from engine.recorded.estimate import ReviewerEstimate, estimate_reviewer
from engine.recorded.scorecard import Scorecard, score_columns
from engine.recorded.stored import StoredRun, load_stored
from engine.types import ContextPack, PackRef, ReviewRecord, Verdict

__all__ = [
    "BacktestColumn",
    "BacktestEstimate",
    "BacktestResult",
    "estimate_backtest",
    "prefetch_cache",
    "review_stored",
    "reviewer_config",
    "run_backtest",
]

Progress = Callable[[str, int, int], None]  # (label, done, total)


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

    def __init__(self, inner: VerdictCache | None, entries: dict[tuple[str, str, str], dict[str, Verdict]],
                 prefetched: set[tuple[str, str, str]], hashes: set[str]) -> None:
        self.inner = inner
        self.entries = entries
        self.prefetched = prefetched
        self.hashes = hashes

    def get(self, tier: str, model: str, prompt_version: str, context_hash: str) -> Verdict | None:
        key = (tier, model, prompt_version)
        found = self.entries.get(key)
        if found is not None:
            v = found.get(context_hash)
            if v is not None:
                return v
        if key in self.prefetched and context_hash in self.hashes:
            return None
        return self.inner.get(tier, model, prompt_version, context_hash) if self.inner is not None else None

    def get_many(self, tier: str, model: str, prompt_version: str, context_hashes: Sequence[str]
                 ) -> list[Verdict | None]:
        """``get`` of each hash (``engine.ports.BatchVerdictCache``): one C loop over the prefetched entries; only
        a hash they cannot answer is looked up one by one."""
        key = (tier, model, prompt_version)
        found: list[Verdict | None] = list(map(self.entries.get(key, {}).get, context_hashes))
        if not all(map(_IS_NOT_NONE, found)):  # (``None in found`` would call Verdict.__eq__ per entry)
            found = [self.get(tier, model, prompt_version, h) if v is None else v
                     for h, v in zip(context_hashes, found, strict=True)]
        return found

    def put(self, tier: str, model: str, prompt_version: str, context_hash: str, verdict: Verdict) -> None:
        self.entries.setdefault((tier, model, prompt_version), {}).setdefault(context_hash, verdict)
        if self.inner is not None:
            self.inner.put(tier, model, prompt_version, context_hash, verdict)

    def flush(self) -> None:
        if self.inner is not None:
            self.inner.flush()


_IS_NOT_NONE = functools.partial(operator.is_not, None)


def prefetch_cache(reader: RunReader, keys: Sequence[tuple[str, str, str]], run_id: int,
                   hashes: Iterable[str] = ()) -> _PrefetchedCache:
    """The verdict-cache entries of ``keys`` for the packs of run ``run_id`` (``RunReader.cached_verdicts``: one
    query per key), as a cache whose lookups are dict lookups and whose writes reach the real cache.
    """
    return _PrefetchedCache(reader.verdict_cache(), reader.cached_verdicts(run_id, keys), set(keys), set(hashes))


def _tier_keys(cascade: Any) -> list[tuple[str, str, str]]:
    return [(t.name, t.model, t.prompt_version) for t in cascade.tiers]


def review_stored(stored: StoredRun, reviewer: Reviewer, policy: PolicyConfig, *, reader: RunReader | None = None,
                  concurrency: int = 256, progress: Progress | None = None,
                  label: str = "review") -> list[ReviewRecord]:
    """Re-review every stored pack with ``reviewer`` (in chunks of ``concurrency``), clamp.

    Each chunk is first answered from the verdict cache by the packs' hashes (``Reviewer.review_cached``); the
    packs it cannot answer are rebuilt in full — from ``reader`` (``RunReader.packs``: read again and re-verified)
    or, without one, from the JSON the PackRefs kept (``load_stored(keep_json=True)``) — and reviewed.
    """
    packs = stored.reviews.packs
    with gc_paused() if reviewer.synchronous else contextlib.nullcontext():
        verdicts = _review_verdicts(stored, reviewer, reader=reader, concurrency=concurrency, progress=progress,
                                    label=label)
        # the signal as recorded (exact floats), not as rounded into the pack's canonical JSON
        return [ReviewRecord(p, v, clamp(p.signal, v, policy, "active"), "active")
                for p, v in zip(packs, verdicts, strict=True)]


def _review_verdicts(stored: StoredRun, reviewer: Reviewer, *, reader: RunReader | None, concurrency: int,
                     progress: Progress | None, label: str) -> list[Verdict]:
    """``review_stored``'s verdicts, in pack order (before the clamp)."""
    packs = stored.reviews.packs
    n = len(packs)
    chunk = max(1, int(concurrency))
    synchronous = reviewer.synchronous

    def rebuild(part: Sequence[PackRef]) -> list[ContextPack]:
        if reader is not None:
            full = reader.packs(stored.run_id, [p.signal.id for p in part])
            return [full[p.signal.id] for p in part]
        out = []
        for p in part:
            if not p.json:
                raise ValueError("review_stored: packs to review need `reader`, or load_stored(keep_json=True)")
            pack = ContextPack.from_json(p.json)
            if pack.hash != p.hash:
                from engine.errors import StorageError

                raise StorageError(f"run {stored.run_id}: context pack of signal {p.signal.id} does not "
                                   "match its stored hash")
            out.append(pack)
        return out

    def missing_parts(missing: list[int]) -> Iterator[tuple[list[int], list[ContextPack]]]:
        for i in range(0, len(missing), chunk):
            at = missing[i:i + chunk]
            yield at, rebuild([packs[j] for j in at])

    def put(verdicts: list[Verdict | None], at: list[int], fresh: list[Verdict], done: int) -> int:
        for j, v in zip(at, fresh, strict=True):
            verdicts[j] = v
        if progress is not None:
            progress(label, done + len(at), n)
        return done + len(at)

    # the packs the cache could not answer, in order, in chunks of ``concurrency``: each is looked up in the
    # cache again as it is reviewed, so a pack whose twin an earlier chunk reviewed is answered from that
    def review_missing_sync(missing: list[int], verdicts: list[Verdict | None]) -> None:
        done = n - len(missing)
        for at, part in missing_parts(missing):
            done = put(verdicts, at, reviewer.review_many_sync(part), done)

    async def review_missing(missing: list[int], verdicts: list[Verdict | None]) -> None:
        done = n - len(missing)
        for at, part in missing_parts(missing):
            done = put(verdicts, at, await reviewer.review_many(part), done)

    if progress is not None:
        progress(label, 0, n)
    # The synchronous path makes no reference cycles to speak of (no event loop): the collector would only
    # rescan the growing list of verdicts, again and again (0.3-0.6 s of 100,000 reviews). With an event
    # loop it stays on: asyncio makes cycles.
    with gc_paused() if synchronous else contextlib.nullcontext():
        # every pack's cached answer first, as one batch (dict lookups; one answer object per cached verdict)
        verdicts = reviewer.review_cached([p.hash for p in packs])
        missing = [i for i, v in enumerate(verdicts) if v is None]
        if progress is not None and len(missing) < n:
            progress(label, n - len(missing), n)
        if missing and synchronous:
            review_missing_sync(missing, verdicts)
        elif missing:
            asyncio.run(review_missing(missing, verdicts))
        return verdicts  # type: ignore[return-value]


def decided_columns(packs: Sequence[PackRef | ContextPack], verdicts: Sequence[Verdict],
                    policy: PolicyConfig) -> tuple[list[Any], list[float]]:
    """Each verdict's clamped decision as scoring reads it — ``clamp(signal, verdict, policy, "active")``'s
    ``action`` and ``size_pct`` — with the clamp called once per distinct (verdict, confidence, modified size).

    Those three and the policy are all the clamp reads to decide the action and the size (the signal and the
    modified stop only shape the decision's stop and notes), so equal keys give equal answers. The key holds each
    value's type (``True == 1``, but the clamp reads a bool as no number); the sign of a zero cannot matter (-0.0
    and 0.0 compare alike with the minimum confidence, and both are below the minimum size, which is > 0). A value
    that cannot be a key (unhashable) is clamped on its own. ``tests/test_backtest_bulk.py`` checks it against the
    clamp signal by signal.
    """
    seen: dict[tuple[Any, ...], tuple[Any, float]] = {}
    by_object: dict[int, tuple[Any, float]] = {}  # a verdict object answers many packs (one per cached verdict)
    actions: list[Any] = []
    sizes: list[float] = []
    for p, v in zip(packs, verdicts, strict=True):
        got = by_object.get(id(v))  # ``verdicts`` holds every object: an id is not reused meanwhile
        if got is not None:
            actions.append(got[0])
            sizes.append(got[1])
            continue
        kind, conf, size = v.verdict, v.confidence, v.modified_size_pct
        key = (kind, type(kind), conf, type(conf), size, type(size))
        try:
            got = seen.get(key)
        except TypeError:  # unhashable
            key, got = None, None
        if got is None:
            d = clamp(p.signal, v, policy, "active")
            got = (d.action, d.size_pct)
            if key is not None:
                seen[key] = got
        by_object[id(v)] = got
        actions.append(got[0])
        sizes.append(got[1])
    return actions, sizes


def verdict_columns(packs: Sequence[PackRef | ContextPack], verdicts: Sequence[Verdict],
                    policy: PolicyConfig) -> VerdictColumns:
    """``VerdictColumns.of`` the records ``review_stored`` returns, without a Decision or ReviewRecord per signal."""
    return VerdictColumns.decided(verdicts, *decided_columns(packs, verdicts, policy))


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
    events: list[str] = field(default_factory=list)  # breaker transitions and budget events during the backtest
    warnings: list[str] = field(default_factory=list)
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)  # per tier with a budget: caps and use

    @property
    def signals_per_s(self) -> float | None:
        return self.reviewed / self.review_s if self.review_s > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config, "reviewed": self.reviewed,
                "timing": {"review_s": self.review_s, "score_s": self.score_s, "signals_per_s": self.signals_per_s},
                "events": self.events, "warnings": self.warnings, "budgets": self.budgets,
                "scorecard": self.card.to_dict()}


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


@dataclass
class BacktestEstimate:
    run_id: int
    run_name: str
    signals: int
    columns: list[ReviewerEstimate]

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.columns)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "run": self.run_name, "signals": self.signals, "cost_usd": self.cost_usd,
                "tokens": "estimated offline: 4 characters a token (see reviewer.tiers._common.approx_tokens)",
                "columns": [c.to_dict() for c in self.columns]}


def estimate_backtest(reader: RunReader, run_id: int, paths: Sequence[Path], *,
                      build_reviewer: Callable[..., Reviewer], progress: Progress | None = None,
                      env: Mapping[str, str] | None = None, only_priced: bool = False) -> BacktestEstimate | None:
    """What ``run_backtest`` with the same arguments would send to each tier and cost (``engine.recorded.estimate``);
    nothing is called. ``only_priced``: None, without reading the run, when no reviewer has a priced tier (the
    estimate before a rules-only backtest would only cost time). Raises: ConfigError, StorageError."""
    info = reader.get_run(run_id)
    configs = [reviewer_config(Path(p), info.config_json, run_id=run_id, env=env) for p in paths]
    if only_priced and not any(_priced(loaded, build_reviewer) for loaded, _ in configs):
        return None  # decided before any cache is read: the backtest itself reads it next
    prepared: list[_Prepared] = []
    try:
        for loaded, _ in configs:
            p = _prepare(reader, loaded, build_reviewer)
            if p.keys:
                with gc_paused():
                    p.cache = p.reviewer.cache = prefetch_cache(reader, p.keys, run_id)
            prepared.append(p)
        with gc_paused():
            stored = load_stored(reader, run_id, lean=True)
        hashes = {p.hash for p in stored.reviews.packs}
        recorded = stored.recorded_columns()
        columns = []
        for name, path, p in zip(_column_names(paths), paths, prepared, strict=True):
            if p.cache is not None:
                p.cache.hashes = hashes
            columns.append(estimate_reviewer(reader, run_id, stored.reviews.packs, p.reviewer, name=name,
                                             config=str(path), recorded=recorded, progress=progress))
    finally:
        gc.unfreeze()
        for p in prepared:
            asyncio.run(p.reviewer.aclose())
    return BacktestEstimate(run_id, info.name, len(stored.reviews), columns)


def _priced(loaded: LoadedConfig, build_reviewer: Callable[..., Reviewer]) -> bool:
    """Does this reviewer config have a tier with prices (one whose calls cost money)?"""
    from engine.ports import PricedTier

    with loaded.blaming():
        reviewer = build_reviewer(loaded.config.reviewer, cache=None,
                                  disabled=[t for t, _ in loaded.disabled_tiers])
    try:
        return any(isinstance(t, PricedTier) for t in reviewer.tiers)
    finally:
        asyncio.run(reviewer.aclose())


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


def _score(stored: StoredRun, reviewed: SignalColumns, verdicts: VerdictColumns, window_days: float,
           pending: list[Callable[[], None]] | None = None) -> Scorecard:
    return score_columns(reviewed, verdicts, [], signals=len(stored.reviews), starting_equity=stored.starting_equity,
                         window_days=window_days, modify_estimate=True, pending=pending)


def run_backtest(reader: RunReader, run_id: int, paths: Sequence[Path], *, build_reviewer: Callable[..., Reviewer],
                 concurrency: int = 256, progress: Progress | None = None,
                 env: Mapping[str, str] | None = None) -> BacktestResult:
    """Re-review run ``run_id``'s signals with each reviewer file; score every one side by side.

    The first column is the run's recorded reviewer, scored the same way. Verdicts are written to the
    verdict cache (flushed before returning), so repeating the backtest is served from it. ``build_reviewer``
    builds a reviewer from a file's ``reviewer:`` section (``engine.app.build_reviewer``).

    Order of work: the packs' check starts first (``RunReader.check_packs``: for a large run a child process
    reads and hashes them), then each reviewer is built and its tiers' verdict-cache keys are handed to the check
    (``PackCheck.ask_cache``), then the other tables are read; the checked packs are taken last, and the cache
    entries — read by whichever process was free — once the recorded column is scored.
    Raises: ConfigError (a reviewer file), StorageError.
    """
    if concurrency < 1:
        raise ConfigError(f"--concurrency: must be >= 1 (got {concurrency})")
    t_all = time.perf_counter()
    config_json = reader.get_run(run_id).config_json
    configs = [reviewer_config(Path(p), config_json, run_id=run_id, env=env) for p in paths]
    window = float(stored_value(config_json, "scoring.retire.window_days", 14.0))
    check = reader.check_packs(run_id)
    prepared: list[_Prepared] = []
    # what finishes each column's card (its bootstrap, on a thread of its own while the next columns are worked on)
    pending: list[Callable[[], None]] = []
    try:
        for loaded, _ in configs:
            prepared.append(_prepare(reader, loaded, build_reviewer))
        keys = list(dict.fromkeys(k for p in prepared for k in p.keys))
        check.ask_cache(keys)
        # The collector is off while the run is loaded and scored (no reference cycles, only many objects), and
        # the loaded run is frozen before it is switched on again: immutable from here on, it is not rescanned
        # on every pass of the collector that runs while a reviewer works (asyncio makes reference cycles), nor
        # scanned once as a whole when the collector comes back on. Unfrozen (all of it) at the end.
        with gc_paused():
            stored = load_stored(reader, run_id, lean=True, check=check)
            t0 = time.perf_counter()
            reviewed = stored.signal_columns()  # shared by every column
            recorded = _score(stored, reviewed, stored.recorded_columns(), window, pending)
            n = len(stored.reviews)
            columns = [BacktestColumn("recorded", "recorded", recorded, n, score_s=time.perf_counter() - t0)]
            hashes = {p.hash for p in stored.reviews.packs}
            t1 = time.perf_counter()
            found = check.cached_verdicts() if keys else {}
            cache = reader.verdict_cache() if keys else None
            for p in prepared:
                if p.keys:  # a dict of its own per column: what one column's tiers put is not another's hit
                    p.cache = _PrefetchedCache(cache, {k: dict(found[k]) for k in p.keys}, set(p.keys), hashes)
                    p.reviewer.cache = p.cache
            for p in prepared:
                p.cache_s = (time.perf_counter() - t1) / len(prepared)
            gc.freeze()
        for name, path, (loaded, warnings), p in zip(_column_names(paths), paths, configs, prepared, strict=True):
            columns.append(_reviewer_column(reader, stored, reviewed, name, path, loaded, warnings, window, p,
                                            concurrency=concurrency, progress=progress, pending=pending))
        for finish in pending:
            finish()
    finally:
        gc.unfreeze()
        check.close()
        for p in prepared:
            if not p.closed:
                asyncio.run(p.reviewer.aclose())
    return BacktestResult(stored.run_id, stored.name, n, stored.load_s, columns,
                          total_s=time.perf_counter() - t_all)


@dataclass
class _Prepared:
    """One reviewer column before the run is loaded: its reviewer, the verdict-cache keys of its tiers (none
    with the cache off), and — once the run is loaded — its prefetched verdict-cache entries."""

    reviewer: Reviewer
    keys: list[tuple[str, str, str]]
    cache: _PrefetchedCache | None = None
    cache_s: float = 0.0
    closed: bool = False


def _prepare(reader: RunReader, loaded: LoadedConfig, build_reviewer: Callable[..., Reviewer]) -> _Prepared:
    from engine.recorded.spend import recorded_spend

    cfg = loaded.config
    with loaded.blaming():
        reviewer = build_reviewer(cfg.reviewer, cache=None, disabled=[t for t, _ in loaded.disabled_tiers])
    reviewer.mode = "active"  # a backtest asks what this reviewer would decide, whatever mode it ran in
    # budgets: a backtest is no run (its own spend starts at 0, and its calls are not recorded as verdicts), but a
    # tier whose daily budget is shared by the database (scope database) starts from what runs spent today
    reviewer.seed_spend(recorded_spend(reader, None))
    return _Prepared(reviewer, _tier_keys(reviewer) if cfg.reviewer.cache else [])


def _reviewer_column(reader: RunReader, stored: StoredRun, reviewed: SignalColumns, name: str, path: Path,
                     loaded: LoadedConfig, warnings: list[str], window: float, prepared: _Prepared, *,
                     concurrency: int, progress: Progress | None,
                     pending: list[Callable[[], None]] | None = None) -> BacktestColumn:
    """One reviewer's column: review every stored pack with its reviewer (and prefetched cache), score the reviews."""
    reviewer, cache = prepared.reviewer, prepared.cache
    # A synchronous reviewer makes no cycles worth collecting (review_stored keeps the collector off for it):
    # off until this column's reviews are freed, the collector never scans 100,000s of them.
    with gc_paused() if reviewer.synchronous else contextlib.nullcontext():
        t1 = time.perf_counter()
        try:
            verdicts = _review_verdicts(stored, reviewer, reader=reader, concurrency=concurrency,
                                        progress=progress, label=name)
        finally:
            prepared.closed = True
            asyncio.run(reviewer.aclose())
            if cache is not None:
                cache.flush()  # the next identical backtest is served from these
        with gc_paused():
            decided = verdict_columns(stored.reviews.packs, verdicts, loaded.config.policy)  # the clamp
        review_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        with gc_paused():
            card = _score(stored, reviewed, decided, window, pending)
        events = [f"{e.subject}: {e.message}" for e in reviewer.drain_events()]
        budgets = reviewer.budget_use()
        column = BacktestColumn(name, str(path), card, len(verdicts), review_s=review_s,
                                score_s=time.perf_counter() - t2, cache_s=prepared.cache_s, events=events,
                                warnings=[*warnings, *(w for _, w in loaded.disabled_tiers)], budgets=budgets)
        del verdicts, decided, cache  # freed while the collector is still off
    return column
