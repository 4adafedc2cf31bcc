"""Backtest of verdict quality: a recorded run's stored packs + reviewer configs → side-by-side scorecards.

Every reviewer config re-reviews the run's reviewed signals from their STORED context packs (never rebuilt
from market data), its verdicts go through the same clamp policy, and each is scored against the SAME
stored shadow outcomes — a veto by whether the signal's recorded shadow trade lost. A modification cannot
be re-simulated without bars: its effect is estimated as the clamped size × the shadow trade (a tightened
stop is not simulated), for every column alike, the recorded reviewer included.

Speed (a run may hold 100,000 reviewed signals). Rebuilding a pack from JSON and re-checking its hash
costs ~0.5 ms, and one SQL round trip per verdict-cache lookup ~0.2 ms, so:
- the run is read in three queries (reviews, pack JSON, shadow outcomes); every stored pack's JSON is
  checked against its stored hash (SHA-256) as it streams past, and only what scoring needs is kept;
- the verdict cache is read in bulk, one query per tier of the reviewer (the run's packs joined to the
  cache's primary key), and handed to the cascade as a dict-backed cache: its lookups are dict lookups;
- a pack whose first tier has a cached verdict never reaches a tier (the cascade answers from the cache
  before it calls one), so it travels as a *hash carrier* — a ContextPack holding the stored JSON, its
  hash, the signal (from the signals table), the regime tag and the equity, and nothing else. Every other
  pack is rebuilt in full (``ContextPack.from_json``, hash verified) before any tier sees it;
- a cascade whose tiers all answer without awaiting (rules) runs through ``Cascade.review_many_sync``,
  any other through ``Cascade.review_many``, in chunks of ``--concurrency`` packs.

Like ``engine.app``, this module is a composition root: it wires ``reviewer`` and ``storage`` together
(imported inside the functions, so that importing it stays cheap).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.clamp import clamp
from engine.config import LoadedConfig, PolicyConfig, load_config
from engine.errors import ConfigError, StorageError
from engine.scoring import Scorecard, score
from engine.scoring import gc_paused as _gc_paused
from engine.types import (
    Action,
    ContextPack,
    Decision,
    Outcome,
    OutcomeKind,
    RegimeInfo,
    RegimeTag,
    ReviewRecord,
    Side,
    Signal,
    TierAttempt,
    TradeStats,
    Verdict,
    VerdictKind,
    content_hash,
)

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

_CHUNK_IN = 500  # hashes per IN (...) query: well under every backend's bound-parameter limit
# The pack's top-level "equity" in canonical JSON. Keys are quoted, so "size_pct_equity" cannot match,
# and a quote inside a string value is escaped (\"), so no headline can fake the key either.
_EQUITY = re.compile(r'"equity":(-?[0-9][0-9.eE+-]*|null)')
_NO_STATS = TradeStats(0, None, 0)
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
    reviews: list[StoredReview]
    outcomes: list[Outcome]  # shadow outcomes (what every column is judged against); realized ones on request
    load_s: float = 0.0


def hash_carrier(signal: Signal, regime_tag: str, equity: float, text: str, h: str) -> ContextPack:
    """A pack that carries a stored pack's identity (hash, JSON) and what scoring reads, nothing else.

    Only for packs no tier will read (answered from the cache) and for scoring; see the module docstring.
    """
    regime = _REGIMES.get(regime_tag, _REGIMES["unknown"])
    return ContextPack(signal, (), _NO_STATS, regime, (), (), "", equity, text, h)


def _equity_of(text: str, where: str) -> float:
    m = _EQUITY.search(text)
    if m is not None:
        return 0.0 if m.group(1) == "null" else float(m.group(1))
    try:  # not canonical JSON after all: read it properly
        return float(json.loads(text)["equity"] or 0.0)
    except (ValueError, KeyError, TypeError) as e:
        raise StorageError(f"{where} has no readable equity ({type(e).__name__}: {e})") from None


_SIDES = {str(x): x for x in Side}
_VERDICTS = {str(x): x for x in VerdictKind}
_ACTIONS = {str(x): x for x in Action}


def _attempts(text: str) -> tuple[TierAttempt, ...]:
    if text == "[]":
        return ()
    return tuple(TierAttempt(a["tier"], bool(a["ok"]), a["kind"], float(a["latency_ms"]), a.get("error", ""))
                 for a in json.loads(text))


def load_stored(store: Any, run_id: int, *, keep_json: bool = False, realized: bool = False) -> StoredRun:
    """Read a run's reviews and shadow outcomes in three queries; check every stored pack against its hash.

    ``realized``: load the realized outcomes too (the scorecard of a run needs them, a backtest does not).

    The hash carriers keep the pack JSON only with ``keep_json`` (100,000 packs are ~500 MB of text; a
    pack that must be reviewed is read again from the database, see ``review_stored``).

    Raises: StorageError (no such run; a pack whose JSON does not match its stored hash).
    """
    from sqlalchemy import and_, select

    from storage.models import ContextPackRow, DecisionRow, OutcomeRow, SignalRow, VerdictRow

    t0 = time.perf_counter()
    run = store.get_run(run_id)
    s, p, v, d = SignalRow.__table__, ContextPackRow.__table__, VerdictRow.__table__, DecisionRow.__table__
    o = OutcomeRow.__table__
    # The sorted join carries no pack JSON: sorting 100,000 × 5 kB through a temporary B-tree costs more
    # than everything else here. The JSON is read unsorted in its own pass, checked and reduced to equity.
    q = (
        select(s.c.id, s.c.strategy_id, s.c.symbol, s.c.side, s.c.created_ms, s.c.entry, s.c.stop_loss,
               s.c.take_profit, s.c.size_hint, s.c.timeframe, s.c.tags, p.c.hash, p.c.regime_tag,
               v.c.verdict, v.c.confidence, v.c.rationale, v.c.modified_size_pct, v.c.modified_sl, v.c.source,
               v.c.tier, v.c.model, v.c.prompt_version, v.c.latency_ms, v.c.input_tokens, v.c.output_tokens,
               v.c.cached_tokens, v.c.cost_usd, v.c.error, v.c.raw_reply, v.c.attempts, v.c.mode,
               d.c.action, d.c.size_pct, d.c.stop_loss, d.c.take_profit, d.c.clamps, d.c.reason)
        .select_from(p)
        .join(s, and_(s.c.run_id == p.c.run_id, s.c.id == p.c.signal_id))
        .join(v, and_(v.c.run_id == p.c.run_id, v.c.signal_id == p.c.signal_id))
        .join(d, and_(d.c.run_id == p.c.run_id, d.c.signal_id == p.c.signal_id))
        .where(p.c.run_id == run_id)
        .order_by(s.c.created_ms, s.c.id)
    )
    texts = select(p.c.signal_id, p.c.hash, p.c.json).where(p.c.run_id == run_id)
    shadow = select(o.c.signal_id, o.c.filled, o.c.pnl_pct, o.c.r_multiple, o.c.exit_reason, o.c.ambiguous,
                    o.c.opened_ms, o.c.closed_ms, o.c.note, o.c.kind).where(o.c.run_id == run_id)
    if not realized:
        shadow = shadow.where(o.c.kind == "shadow")
    equity: dict[str, tuple[float, str]] = {}
    out: list[StoredReview] = []
    with _gc_paused(), store.guard(f"cannot load the reviews of run {run_id}"), store.engine.connect() as conn:
        for sid, h, text in conn.execution_options(yield_per=2000).execute(texts):
            where = f"{store.url_masked}: run {run_id}: context pack of signal {sid}"
            computed = content_hash(text)
            if computed != h:
                raise StorageError(f"{where} does not match its stored hash (stored {h[:12]}…, computed "
                                   f"{computed[:12]}…): the row was altered")
            equity[sid] = (_equity_of(text, where), text if keep_json else "")
        for r in conn.execute(q):
            sig = Signal(r[0], r[1], r[2], _SIDES[r[3]], int(r[4]), r[5], r[6], r[7], r[8], r[9],
                         () if r[10] == "[]" else tuple(json.loads(r[10])))
            verdict = Verdict(_VERDICTS[r[13]], r[14], r[15], r[16], r[17], r[18], r[19], r[20], r[21], r[22],
                              int(r[23]), int(r[24]), int(r[25]), r[26], r[27], r[28], _attempts(r[29]))
            decision = Decision(r[0], _ACTIONS[r[31]], r[32], r[33], r[34],
                                () if r[35] == "[]" else tuple(json.loads(r[35])), r[36])
            eq, text = equity[r[0]]
            out.append(StoredReview(hash_carrier(sig, r[12], eq, text, r[11]), verdict, decision, r[30]))
        kinds = {str(k): k for k in OutcomeKind}
        outcomes = [Outcome(r[0], kinds[r[9]], bool(r[1]), r[2], r[3], r[4], bool(r[5]),
                            None if r[6] is None else int(r[6]), None if r[7] is None else int(r[7]), r[8])
                    for r in conn.execute(shadow)]
    return StoredRun(run.id, run.name, run.config_json, run.starting_equity, out, outcomes,
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

    from engine.config import _read_yaml

    data = _read_yaml(path)
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
    return loaded, warnings


# --------------------------------------------------------------------------------------- reviewing


class _PrefetchedCache:
    """A VerdictCache whose entries for this backtest were read in bulk; writes go to the real cache too.

    ``get`` answers from memory. A key of a prefetched (tier, model, prompt version) whose hash was in the
    prefetch and is not in memory is a known miss: no SQL round trip.
    """

    def __init__(self, inner: Any, entries: dict[tuple[str, str, str, str], Verdict],
                 prefetched: set[tuple[str, str, str]], hashes: set[str]) -> None:
        self.inner = inner
        self.entries = entries
        self.prefetched = prefetched
        self.hashes = hashes

    def get(self, tier: str, model: str, prompt_version: str, context_hash: str) -> Verdict | None:
        v = self.entries.get((tier, model, prompt_version, context_hash))
        if v is not None or ((tier, model, prompt_version) in self.prefetched and context_hash in self.hashes):
            return v
        return self.inner.get(tier, model, prompt_version, context_hash) if self.inner is not None else None

    def put(self, tier: str, model: str, prompt_version: str, context_hash: str, verdict: Verdict) -> None:
        self.entries.setdefault((tier, model, prompt_version, context_hash), verdict)
        if self.inner is not None:
            self.inner.put(tier, model, prompt_version, context_hash, verdict)

    def flush(self) -> None:
        flush = getattr(self.inner, "flush", None)
        if flush is not None:
            flush()


def _cached_verdict(text: str, fields: Sequence[str]) -> Verdict:
    # storage.rows.verdict_from_json, minus its per-field conversions: a cache row is JSON that
    # verdict_to_json wrote, so its values already have their types (100,000 rows: 0.9 s → 0.4 s)
    d = json.loads(text)
    d["verdict"] = _VERDICTS[d["verdict"]]
    return Verdict(**{k: d[k] for k in fields})


def prefetch_cache(store: Any, keys: Sequence[tuple[str, str, str]], run_id: int,
                   hashes: Sequence[str]) -> _PrefetchedCache:
    """Read the verdict-cache entries of ``keys`` for the packs of run ``run_id``: one query per key.

    The query walks the run's packs and probes the cache by its primary key (tier, model, prompt
    version, hash), so it reads what this backtest can use and nothing else.
    """
    from sqlalchemy import and_, bindparam, select

    from storage import rows
    from storage.models import ContextPackRow, VerdictCacheRow

    c, p = VerdictCacheRow.__table__.c, ContextPackRow.__table__.c
    q = (select(c.context_hash, c.verdict)
         .select_from(ContextPackRow.__table__)
         .join(VerdictCacheRow.__table__, and_(c.tier == bindparam("t"), c.model == bindparam("m"),
                                               c.prompt_version == bindparam("pv"), c.context_hash == p.hash))
         .where(p.run_id == run_id))
    entries: dict[tuple[str, str, str, str], Verdict] = {}
    store.flush()  # entries still buffered in this process must be in the table before it is read
    with store.guard("cannot read the verdict cache"), store.engine.connect() as conn:
        for t, m, pv in dict.fromkeys(keys):
            for h, text in conn.execute(q, {"t": t, "m": m, "pv": pv}):
                try:
                    entries[(t, m, pv, h)] = _cached_verdict(text, rows.VERDICT_FIELDS)
                except (ValueError, KeyError, TypeError):
                    # the careful reader decides: an entry it cannot read either is a miss, as in SqlVerdictCache
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        entries[(t, m, pv, h)] = rows.verdict_from_json(text)
    return _PrefetchedCache(store.verdict_cache(), entries, set(keys), set(hashes))


def _tier_keys(cascade: Any) -> list[tuple[str, str, str]]:
    return [(t.name, t.model, str(getattr(t, "prompt_version", "") or "")) for t in cascade.tiers]


def full_packs(store: Any, run_id: int, ids: Sequence[str]) -> dict[str, ContextPack]:
    """Packs rebuilt in full from their stored JSON (hash re-verified), for the tiers that will read them."""
    from sqlalchemy import bindparam, select

    from storage.models import ContextPackRow
    from storage.repository import rebuild_pack

    p = ContextPackRow.__table__.c
    q = select(p.signal_id, p.json, p.hash).where(p.run_id == run_id, p.signal_id.in_(bindparam("ids", expanding=True)))
    out: dict[str, ContextPack] = {}
    with store.guard(f"cannot load context packs of run {run_id}"), store.engine.connect() as conn:
        for i in range(0, len(ids), _CHUNK_IN):
            for sid, text, h in conn.execute(q, {"ids": list(ids[i:i + _CHUNK_IN])}):
                out[sid] = rebuild_pack(store.url_masked, run_id, sid, text, h)
    return out


def review_stored(stored: StoredRun, cascade: Any, policy: PolicyConfig, *, cache: _PrefetchedCache | None = None,
                  store: Any = None, concurrency: int = 256, progress: Progress | None = None,
                  label: str = "review") -> list[ReviewRecord]:
    """Re-review every stored pack with ``cascade`` (chunks of ``concurrency`` through ``review_many``), clamp.

    Packs go to the cascade as hash carriers when ``cache`` holds a verdict of the cascade's first tier
    for them (the cascade then answers from the cache without calling a tier); otherwise they are rebuilt
    in full from ``store`` first, or, without ``store``, from the carrier's JSON (``load_stored(keep_json=True)``).
    """
    reviews = stored.reviews
    n = len(reviews)
    chunk = max(1, int(concurrency))
    first = _tier_keys(cascade)[:1]

    def answered_from_cache(h: str) -> bool:
        return cache is not None and bool(first) and (*first[0], h) in cache.entries

    def packs_of(part: Sequence[StoredReview]) -> list[ContextPack]:
        need = [r.pack.signal.id for r in part if not answered_from_cache(r.pack.hash)]
        full = _rebuild(need, part)
        return [full.get(r.pack.signal.id, r.pack) for r in part]

    async def run_all() -> list[Verdict]:
        verdicts: list[Verdict] = []
        for i in range(0, n, chunk):
            verdicts.extend(await cascade.review_many(packs_of(reviews[i:i + chunk])))
            if progress is not None:
                progress(label, min(i + chunk, n), n)
        return verdicts

    def run_all_sync() -> list[Verdict]:
        # every tier answers without awaiting (rules): the cascade's synchronous path, same bookkeeping
        verdicts: list[Verdict] = []
        for i in range(0, n, chunk):
            verdicts.extend(cascade.review_many_sync(packs_of(reviews[i:i + chunk])))
            if progress is not None:
                progress(label, min(i + chunk, n), n)
        return verdicts

    def _rebuild(ids: list[str], part: Sequence[StoredReview]) -> dict[str, ContextPack]:
        if not ids:
            return {}
        if store is not None:
            return full_packs(store, stored.run_id, ids)
        wanted = set(ids)
        out = {}
        for r in part:
            if r.pack.signal.id in wanted:
                if not r.pack.json:
                    raise ValueError("review_stored: packs to review need `store`, or load_stored(keep_json=True)")
                pack = ContextPack.from_json(r.pack.json)
                if pack.hash != r.pack.hash:
                    raise StorageError(f"run {stored.run_id}: context pack of signal {r.pack.signal.id} does not "
                                       "match its stored hash")
                out[r.pack.signal.id] = pack
        return out

    if progress is not None:
        progress(label, 0, n)
    verdicts = run_all_sync() if getattr(cascade, "synchronous", False) else asyncio.run(run_all())
    out: list[ReviewRecord] = []
    for r, v in zip(reviews, verdicts, strict=True):
        # the signal as recorded (exact floats), not as rounded into the pack's canonical JSON
        out.append(ReviewRecord(r.pack, v, clamp(r.pack.signal, v, policy, "active"), "active"))
    return out


# -------------------------------------------------------------------------------------------- result


@dataclass
class BacktestColumn:
    name: str
    config: str  # the reviewer file, or "recorded"
    card: Scorecard
    reviewed: int
    review_s: float = 0.0  # reviewing (cascade + clamp), the figure signals/s is measured on
    score_s: float = 0.0
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


def _score(stored: StoredRun, reviews: Sequence[ReviewRecord], window_days: float) -> Scorecard:
    return score(reviews, stored.outcomes, [], signals=len(reviews), starting_equity=stored.starting_equity,
                 window_days=window_days, modify_estimate=True)


def run_backtest(store: Any, run_id: int, paths: Sequence[Path], *, concurrency: int = 256,
                 progress: Progress | None = None, env: Mapping[str, str] | None = None) -> BacktestResult:
    """Re-review run ``run_id``'s signals with each reviewer file; score every one side by side.

    The first column is the run's recorded reviewer, scored the same way. Verdicts are written to the
    verdict cache (flushed before returning), so repeating the backtest is served from it.
    Raises: ConfigError (a reviewer file), StorageError.
    """
    from reviewer import build_reviewer

    if concurrency < 1:
        raise ConfigError(f"--concurrency: must be >= 1 (got {concurrency})")
    t_all = time.perf_counter()
    configs = [reviewer_config(Path(p), store.get_run(run_id).config_json, run_id=run_id, env=env) for p in paths]
    with _gc_paused():
        stored = load_stored(store, run_id)
        window = 14.0
        with contextlib.suppress(ValueError, KeyError, TypeError):
            window = float(json.loads(stored.config_json)["scoring"]["retire"]["window_days"])
        t0 = time.perf_counter()
        recorded = _score(stored, [r.record for r in stored.reviews], window)
    columns = [BacktestColumn("recorded", "recorded", recorded, len(stored.reviews),
                              score_s=time.perf_counter() - t0)]
    hashes = [r.pack.hash for r in stored.reviews]
    # The loaded run is immutable from here on: frozen, the collector that runs while the cascade works
    # (asyncio makes reference cycles) does not rescan it on every pass.
    gc.freeze()
    try:
        for name, path, (loaded, warnings) in zip(_column_names(paths), paths, configs, strict=True):
            cfg = loaded.config
            cascade = build_reviewer(cfg.reviewer, cache=None, disabled=[t for t, _ in loaded.disabled_tiers])
            cascade.mode = "active"  # a backtest asks what this reviewer would decide, whatever mode it ran in
            with _gc_paused():
                cache = prefetch_cache(store, _tier_keys(cascade), run_id, hashes) if cfg.reviewer.cache else None
            cascade.cache = cache
            t1 = time.perf_counter()
            try:
                reviews = review_stored(stored, cascade, cfg.policy, cache=cache, store=store,
                                        concurrency=concurrency, progress=progress, label=name)
            finally:
                asyncio.run(cascade.aclose())
                if cache is not None:
                    cache.flush()  # the next identical backtest is served from these
            review_s = time.perf_counter() - t1
            t2 = time.perf_counter()
            with _gc_paused():
                card = _score(stored, reviews, window)
            events = [f"{e.subject}: {e.message}" for e in cascade.drain_events()]
            columns.append(BacktestColumn(name, str(path), card, len(reviews), review_s=review_s,
                                          score_s=time.perf_counter() - t2, events=events,
                                          warnings=[*warnings, *(w for _, w in loaded.disabled_tiers)]))
    finally:
        gc.unfreeze()
    return BacktestResult(stored.run_id, stored.name, len(stored.reviews), stored.load_s, columns,
                          total_s=time.perf_counter() - t_all)
