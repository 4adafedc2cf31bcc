"""Protocols the other packages implement: Clock, Feed, History, Strategy, Tier, Reviewer, Recorder, ...

``strategies/``, ``reviewer/`` and ``storage/`` depend on this module and ``engine.types`` only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from engine.types import (
    Bar,
    ContextPack,
    Event,
    Fill,
    MarketLimits,
    NewsItem,
    Outcome,
    Signal,
    SliceRecord,
    Trade,
    Verdict,
)

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "BreakerSettings",
    "Clock",
    "FallbackSettings",
    "Feed",
    "History",
    "NewsSource",
    "PriceSettings",
    "Recorder",
    "Reviewer",
    "ReviewerSettings",
    "Strategy",
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
    # A finite feed may also tell ``n_slices`` and ``n_bars`` (what ``slices`` yields): the progress bar's
    # total, and whether a replay is long enough to record from a child process (engine.app).


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


@runtime_checkable
class Strategy(Protocol):
    """A strategy: closed history in, at most one signal out."""

    id: str
    symbols: tuple[str, ...] | None  # None = all symbols of the feed
    timeframe: str

    def evaluate(self, history: History) -> Signal | None: ...


class NewsSource(Protocol):
    def items(self, start_ms: int, end_ms: int) -> Sequence[NewsItem]:
        """Items with start_ms < published_ms <= end_ms, in publication order."""
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
    max_tokens: int
    temperature: float
    prices: PriceSettings
    breaker: BreakerSettings
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
    timeout_s: float
    max_concurrency: int

    async def review(self, pack: ContextPack) -> Verdict: ...
    async def aclose(self) -> None: ...


class VerdictCache(Protocol):
    """Verdicts keyed by (tier, model, prompt version, context hash)."""

    def get(self, tier: str, model: str, prompt_version: str, context_hash: str) -> Verdict | None: ...
    def put(self, tier: str, model: str, prompt_version: str, context_hash: str, verdict: Verdict) -> None: ...


class Reviewer(Protocol):
    mode: str  # active | shadow | off

    async def review_many(self, packs: Sequence[ContextPack]) -> list[Verdict]: ...
    def drain_events(self) -> list[Event]: ...  # breaker transitions since the last call
    async def aclose(self) -> None: ...


class Recorder(Protocol):
    """Persistence of one run. ``record_slice`` writes everything of one slice in one transaction."""

    def record_slice(self, record: SliceRecord) -> None: ...
    def record_events(self, events: Sequence[Event]) -> None: ...
    def last_slice_ms(self) -> int | None: ...
    def load_fills(self) -> list[Fill]: ...
    def load_trades(self) -> list[Trade]: ...
    def load_outcomes(self) -> list[Outcome]: ...
