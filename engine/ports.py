"""Protocols the other packages implement: Clock, Feed, History, Strategy, Tier, Reviewer, Recorder, RunReader, ...

``strategies/``, ``reviewer/`` and ``storage/`` depend on this module and ``engine.types`` (plus
``engine.errors`` and ``engine.clock``) only. Every fast path the engine takes is declared here — a replay's
preloaded columns and candidate masks, the recorder's batches, the synchronous review, the verdict-cache
answer by hash — so nothing is discovered with ``getattr``: a class either implements a method or says it
has nothing to offer (``None``, ``False``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from engine.types import (
    Bar,
    CallEstimate,
    ContextPack,
    Decision,
    Event,
    Fill,
    GateResult,
    MarketLimits,
    NewsItem,
    Outcome,
    ReviewRecord,
    RunInfo,
    Signal,
    SliceRecord,
    StoredOutcomes,
    StoredReviews,
    Trade,
    Verdict,
)

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "BreakerSettings",
    "BudgetSettings",
    "Clock",
    "FallbackSettings",
    "Feed",
    "History",
    "NewsSource",
    "PackCheck",
    "PriceSettings",
    "PricedTier",
    "Recorder",
    "Reviewer",
    "ReviewerSettings",
    "RunReader",
    "RunRecords",
    "RunStore",
    "Strategy",
    "SyncTier",
    "Tier",
    "TierSettings",
    "VerdictCache",
]


class Clock(Protocol):
    def now_ms(self) -> int: ...
    def advance_to(self, ms: int) -> None: ...


class Feed(Protocol):
    """Closed bars in time order, grouped into slices (all bars that close at the same instant)."""

    symbols: tuple[str, ...]
    timeframe: str
    timeframe_ms: int

    def slices(self) -> Iterator[tuple[Bar, ...]]: ...
    def limits(self) -> dict[str, MarketLimits]: ...
    def news(self) -> Sequence[NewsItem]: ...  # items the feed itself carries (synthetic news); may be ()
    @property
    def n_slices(self) -> int | None: ...  # what ``slices`` yields, when known in advance (a finite feed)
    @property
    def n_bars(self) -> int | None: ...
    def arrays(self) -> dict[str, dict[str, np.ndarray]] | None:
        """A finite feed's whole series per symbol (``close_ms``, ``open``, ``high``, ``low``, ``close``,
        ``volume`` columns), for a replay to preload; None for a live feed."""
        ...
    def close(self) -> None: ...  # release connections (a no-op for files)


class History(Protocol):
    """Closed history of one symbol with incremental indicators (O(1) per bar, memoised per period).

    Every indicator value is as of the last closed bar; ``None`` until enough bars have closed.
    """

    symbol: str
    timeframe_ms: int

    def __len__(self) -> int: ...
    @property
    def last(self) -> Bar: ...
    @property
    def prev_close(self) -> float | None: ...  # the close before the last one
    def closes(self, n: int) -> np.ndarray: ...  # the last n closes (a read-only view)
    def sma(self, n: int) -> float | None: ...
    def ema(self, n: int) -> float | None: ...
    def atr(self, n: int) -> float | None: ...  # Wilder's average true range
    def rsi(self, n: int) -> float | None: ...  # Wilder's RSI, 0..100
    def highest(self, n: int) -> float | None: ...  # highest high of the n bars *before* the last
    def lowest(self, n: int) -> float | None: ...  # lowest low of the n bars *before* the last
    def prev(self, name: str, n: int) -> float | None: ...  # an indicator's value one bar earlier
    @property
    def preloaded(self) -> bool: ...  # the whole series is known in advance (a replay): series/column answer
    def series(self, name: str, n: int) -> np.ndarray:
        """A preloaded history only: an indicator's values at every bar of the whole series (NaN before it
        has one), read-only — for ``Strategy.candidates``, never for a decision. Raises: ValueError."""
        ...
    def column(self, name: str) -> np.ndarray:
        """A preloaded history only: a whole column (close_ms, open, high, low, close, volume). Raises: ValueError."""
        ...


@runtime_checkable
class Strategy(Protocol):
    """A strategy: closed history in, at most one signal out."""

    id: str
    symbols: tuple[str, ...] | None  # None = all symbols of the feed
    timeframe: str

    def evaluate(self, history: History) -> Signal | None: ...
    def candidates(self, history: History) -> np.ndarray | None:
        """For a preloaded history: a mask of the bars where ``evaluate`` *may* emit a signal (it is then
        called on those bars only, and always on the first), or None to be called on every bar."""
        ...


class NewsSource(Protocol):
    def items(self, start_ms: int, end_ms: int) -> Sequence[NewsItem]:
        """Items with start_ms < published_ms <= end_ms, in publication order."""
        ...
    def poll(self) -> int:
        """Fetch what is new (a live source, between bars); returns how many items it added (0 for a fixed list)."""
        ...


# --------------------------------------------------------------------------------- reviewer settings
# What the reviewer package is built from: the ``reviewer:`` section of the configuration, as read-only
# attributes (``engine.config.ReviewerConfig`` and ``TierConfig`` have them; a test may pass anything alike).


class PriceSettings(Protocol):
    input_per_mtok: float  # USD per million input tokens
    output_per_mtok: float
    cached_input_per_mtok: float


class BreakerSettings(Protocol):
    failure_threshold: int
    recovery_timeout_s: float


class BudgetSettings(Protocol):
    usd_per_day: float | None  # None: no cap of this kind
    calls_per_day: int | None
    usd_per_run: float | None
    scope: str  # run | database: whose spend the daily caps count


class TierSettings(Protocol):
    """One ``reviewer.tiers[i]`` entry. A tier class is built as ``cls(settings, api_key)``."""

    name: str
    provider: str
    model: str
    base_url: str | None
    timeout_s: float
    max_concurrency: int
    rpm: float | None
    response_format: str  # json_schema | json_object | none
    prompt: str  # the prompt template: full | compact
    max_tokens: int
    temperature: float
    prices: PriceSettings
    breaker: BreakerSettings
    budget: BudgetSettings | None  # spend caps; None: unlimited
    params: Mapping[str, Any]  # validated by the tier class's ``Params`` model


class FallbackSettings(Protocol):
    verdict: str  # accept | veto
    confidence: float


class ReviewerSettings(Protocol):
    mode: str  # active | shadow | off
    deadline_s: float
    fallback: FallbackSettings
    tiers: Sequence[TierSettings]


class Tier(Protocol):
    """One reviewer tier. ``review`` returns a verdict or raises ``ReviewError`` (any exception counts)."""

    name: str
    provider: str
    model: str
    prompt_version: str  # part of the verdict cache key
    endpoint: str  # where it calls, credentials removed ("" for a tier that calls nothing)
    timeout_s: float
    max_concurrency: int

    async def review(self, pack: ContextPack) -> Verdict: ...
    async def aclose(self) -> None: ...


@runtime_checkable
class SyncTier(Tier, Protocol):
    """A tier that answers without I/O (the rules tier): a cascade of such tiers needs no event loop."""

    def review_sync(self, pack: ContextPack) -> Verdict: ...


@runtime_checkable
class PricedTier(Tier, Protocol):
    """A tier that calls a priced model: it can say what one call would cost before making it (``--estimate``)."""

    def estimate_call(self, pack: ContextPack, *, output_tokens: int, cache_warm: bool) -> CallEstimate:
        """Tokens and USD of one call for ``pack`` from the request it would send; ``output_tokens`` is the reply
        length expected, ``cache_warm`` whether the provider's prompt cache already holds the static prefix."""
        ...


class VerdictCache(Protocol):
    """Verdicts keyed by (tier, model, prompt version, context hash)."""

    def get(self, tier: str, model: str, prompt_version: str, context_hash: str) -> Verdict | None: ...
    def put(self, tier: str, model: str, prompt_version: str, context_hash: str, verdict: Verdict) -> None: ...
    def flush(self) -> None: ...  # write what ``put`` buffered


class BatchVerdictCache(VerdictCache, Protocol):
    """A ``VerdictCache`` that also answers many hashes of one (tier, model, prompt version) at once (optional: a
    cascade looks for ``get_many`` and falls back to ``get`` per hash)."""

    def get_many(self, tier: str, model: str, prompt_version: str,
                 context_hashes: Sequence[str]) -> list[Verdict | None]: ...  # ``get`` of each, in order


class Reviewer(Protocol):
    """Reviews packs; never raises for a tier's failure (it fails open). A cascade of ``tiers`` in order."""

    mode: str  # active | shadow | off
    tiers: Sequence[Tier]
    cache: VerdictCache | None  # verdicts by (tier, model, prompt version, pack hash); None: no cache

    async def review_many(self, packs: Sequence[ContextPack]) -> list[Verdict]: ...
    @property
    def synchronous(self) -> bool: ...  # every tier answers without I/O: ``review_many_sync`` may be used
    def review_many_sync(self, packs: Sequence[ContextPack]) -> list[Verdict]:
        """``review_many`` without an event loop. Raises: RuntimeError unless ``synchronous``."""
        ...
    def seed_spend(self, spent: Callable[[str, int, str], tuple[int, float]]) -> None:
        """Start every tier budget from recorded spend: ``spent(tier, since_ms, whose)`` → (calls, USD) of the
        verdicts ``tier`` answered by real calls since ``since_ms`` (wall clock, UTC) in this run (``whose`` "run")
        or in the database's other runs ("others": read again while reviewing, for budgets of scope database)."""
        ...
    def budget_use(self) -> dict[str, dict[str, Any]]:
        """Per tier with a budget: its caps and what is used of them now (``reviewer.budget.TierBudget.snapshot``)."""
        ...
    def review_cached(self, hashes: Sequence[str]) -> list[Verdict | None]:
        """What reviewing the packs with these content hashes would answer from the verdict cache alone (the
        first tier's cached verdict, counted as a review), or None where the pack must be reviewed in full."""
        ...
    def drain_events(self) -> list[Event]: ...  # breaker transitions since the last call
    async def aclose(self) -> None: ...


# ------------------------------------------------------------------------------------------ storage


class RunRecords(Protocol):
    """One recorded run's rows, read back as value types (in the orders each method names)."""

    def last_slice_ms(self) -> int | None: ...
    def load_fills(self) -> list[Fill]: ...  # by fill time, then id
    def load_trades(self) -> list[Trade]: ...  # by close time, then signal id
    def load_outcomes(self) -> list[Outcome]: ...  # in signal order
    def load_signals(self) -> list[Signal]: ...  # every signal, blocked ones too
    def load_gate_results(self) -> list[tuple[str, GateResult]]: ...
    def load_decisions(self) -> dict[str, Decision]: ...
    def load_reviews(self) -> list[ReviewRecord]: ...  # packs rebuilt in full, hashes checked
    def load_events(self) -> list[Event]: ...
    def load_bars(self, symbol: str | None = None, since_ms: int | None = None) -> list[Bar]: ...
    def load_news(self) -> list[NewsItem]: ...


class Recorder(RunRecords, Protocol):
    """Persistence of one run. Everything of one slice is written in one transaction; a batch (``new_batch``,
    ``add`` slices, ``write_batch``) writes several whole slices in one. Recording the same slice twice changes
    nothing. A recorder may commit in the background: ``close`` returns once everything sent is committed (or
    raises its StorageError); ``abort`` stops after the batches already sent."""

    def record_slice(self, record: SliceRecord) -> None: ...
    def new_batch(self) -> Any: ...  # a batch with ``add(record)``, ``slices`` and ``rows``
    def write_batch(self, batch: Any) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class PackCheck(Protocol):
    """A started check of a run's stored packs against their hashes (``RunReader.check_packs``); its answer is
    taken by ``RunReader.reviewed(..., check=...)``."""

    def ask_cache(self, keys: Sequence[tuple[str, str, str]]) -> None:
        """Read the run's verdict-cache entries of these (tier, model, prompt version) too (before the packs are
        taken): by whichever process is free when they are."""
        ...
    def cached_verdicts(self) -> dict[tuple[str, str, str], dict[str, Verdict]]:
        """``RunReader.cached_verdicts`` of the run for the keys asked for, once the packs were taken."""
        ...
    def close(self) -> None: ...  # end it early (an error on the way); idempotent


class RunReader(Protocol):
    """What the read side (scorecard, backtest, report, transfer, analysis) needs of recorded runs, implemented by
    ``storage.Storage``. Every pack it hands out was checked against its stored hash."""

    url_masked: str  # where the runs are, password masked (for messages and reports)

    def get_run(self, run_id: int) -> RunInfo: ...  # Raises: StorageError
    def resolve_run(self, ref: str) -> RunInfo: ...  # an id or the latest run of a name
    def list_runs(self) -> list[RunInfo]: ...
    def child_runs(self, parent_id: int, kind: str = "counterfactual") -> list[RunInfo]: ...  # oldest first
    def records(self, run_id: int) -> RunRecords: ...
    def count_signals(self, run_id: int) -> int: ...  # blocked and reviewed
    def reviewed(self, run_id: int, *, keep_json: bool = False, lean: bool = False,
                 check: PackCheck | None = None) -> StoredReviews:
        """Every reviewed signal in signal order, packs as ``PackRef`` (JSON kept only with ``keep_json``);
        ``lean``: only the verdict and decision fields scoring reads; ``check``: the packs' check started earlier."""
        ...
    # shadow (and realized) outcomes; snapshot: through the run's snapshot of them (a backtest's repeated load)
    def outcomes(self, run_id: int, *, realized: bool = True, snapshot: bool = False) -> StoredOutcomes: ...
    def check_packs(self, run_id: int) -> PackCheck: ...  # start checking the packs (a child process for many)
    def packs(self, run_id: int, signal_ids: Sequence[str]) -> dict[str, ContextPack]: ...  # rebuilt in full
    def cached_verdicts(self, run_id: int, keys: Sequence[tuple[str, str, str]]
                        ) -> dict[tuple[str, str, str], dict[str, Verdict]]:
        """Per (tier, model, prompt version) of ``keys``: the verdict-cache entries of this run's packs, by hash."""
        ...
    def verdict_cache(self) -> VerdictCache: ...
    def spend(self, *, run_id: int | None = None, since_ms: int = 0,
              exclude_run_id: int | None = None) -> list[tuple[str, int, int, float]]:
        """Real calls recorded (verdicts a tier answered itself, not from the cache), one row per tier and UTC day
        of the call: (tier, day start ms, calls, USD), by tier then day; one run's, or the database's
        (``run_id`` None) but ``exclude_run_id``'s; calls at or after ``since_ms`` (wall clock). Day 0: recorded
        without a call time."""
        ...


class RunStore(RunReader, Protocol):
    """A RunReader that also records new runs (``signals import``, replays of stored runs)."""

    def create_run(self, name: str, config_json: str, config_hash: str, seed: int, reviewer_mode: str,
                   starting_equity: float, *, kind: str = "run", parent_id: int | None = None) -> int: ...
    def delete_run(self, run_id: int) -> None: ...  # with everything it recorded and its counterfactuals
    def set_run_status(self, run_id: int, status: str) -> None: ...
    def set_reviewer_mode(self, run_id: int, mode: str) -> None: ...
    def find_resumable_run(self, name: str) -> RunInfo | None: ...  # the latest run of a name, if interrupted
    def claim_run_name(self, name: str) -> bool: ...  # become the one process writing runs of this name
    def recorder(self, run_id: int, *, expected_bars: int | None = None) -> Recorder: ...
