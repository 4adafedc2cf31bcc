"""Pipeline value types: what flows from a closed bar to a scored outcome (stdlib only).

Read this file first. Every value here is a frozen, slotted dataclass; state changes happen only in
the one stateful owner of each concern (``Portfolio``, ``PaperExecutor``, the breakers).

Time is always UTC, carried as integer milliseconds since the epoch in fields named ``*_ms``; the
``*_at`` properties give the same instant as an aware ``datetime`` for people and reports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from engine.packjson import _num, canonical_json, content_hash, seal

__all__ = [
    "DECISION_FIELDS",
    "OUTCOME_FIELDS",
    "PACK_VERSION",
    "VERDICT_FIELDS",
    "Action",
    "Bar",
    "CallEstimate",
    "ContextPack",
    "CorrelatedPosition",
    "Decision",
    "Event",
    "ExitReason",
    "Fill",
    "FillKind",
    "GateResult",
    "MarketLimits",
    "NaiveTime",
    "NewsCategory",
    "NewsFlag",
    "NewsItem",
    "Outcome",
    "OutcomeKind",
    "PackRef",
    "Position",
    "RegimeInfo",
    "RegimeTag",
    "ReviewRecord",
    "RunInfo",
    "Side",
    "Signal",
    "SliceRecord",
    "StoredOutcomes",
    "StoredReviews",
    "TierAttempt",
    "Trade",
    "TradeStats",
    "TradeSummary",
    "Verdict",
    "VerdictKind",
    "canonical_json",
    "content_hash",
    "dt_to_ms",
    "freeze",
    "ms_to_dt",
    "parse_iso_ms",
]


# ---------------------------------------------------------------------------------------------- time


def ms_to_dt(ms: int) -> datetime:
    """Milliseconds since the epoch → aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def dt_to_ms(dt: datetime) -> int:
    """Aware datetime → milliseconds since the epoch. Naive datetimes are refused (no silent zones)."""
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt!r}: expected a timezone-aware UTC datetime")
    return round(dt.timestamp() * 1000)


class NaiveTime(ValueError):
    """An ISO 8601 time without a zone where one is required (``parse_iso_ms(..., naive_is_utc=False)``)."""


def parse_iso_ms(text: str, *, naive_is_utc: bool = True) -> int:
    """ISO 8601 text (``2018-01-10T04:55:00Z``, ``2025-01-01``, with or without a zone) → milliseconds since the
    epoch, rounded to the nearest millisecond: the one parser of the times users and files write.

    A time without a zone is UTC when ``naive_is_utc`` (command-line dates, data files); otherwise it is
    refused (``NaiveTime``). Raises: ValueError (callers word it for their input: a file line, a flag, a key).
    """
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if dt.tzinfo is None:
        if not naive_is_utc:
            raise NaiveTime(f"{text!r} has no time zone")
        dt = dt.replace(tzinfo=UTC)
    return dt_to_ms(dt)


def freeze(v: Any) -> Any:
    """Decoded JSON as the value types hold it: they are immutable, so lists come back as tuples."""
    if isinstance(v, list):
        return tuple(freeze(x) for x in v)
    if isinstance(v, dict):
        return {k: freeze(x) for k, x in v.items()}
    return v


# ------------------------------------------------------------------------------------------- enums


class Side(StrEnum):
    LONG = "long"
    SHORT = "short"

    @property
    def sign(self) -> int:
        return 1 if self is Side.LONG else -1


class VerdictKind(StrEnum):
    ACCEPT = "accept"
    MODIFY = "modify"
    VETO = "veto"


class Action(StrEnum):
    EXECUTE = "execute"
    SKIP = "skip"


class RegimeTag(StrEnum):
    TRENDING = "trending"
    MEAN_REVERTING = "mean_reverting"
    CHOP = "chop"
    UNKNOWN = "unknown"  # not enough history yet


class NewsCategory(StrEnum):
    HACK = "hack"
    DELISTING = "delisting"
    REGULATORY = "regulatory"
    OUTAGE = "outage"
    LISTING = "listing"
    PARTNERSHIP = "partnership"
    OTHER = "other"


class FillKind(StrEnum):
    DEPOSIT = "deposit"
    ENTRY = "entry"
    EXIT = "exit"


class ExitReason(StrEnum):
    STOP = "stop"
    TARGET = "target"
    TIME = "time"
    END = "end"  # marked out at the end of a replay (a finite data set ran out)


class OutcomeKind(StrEnum):
    REALIZED = "realized"
    SHADOW = "shadow"


# ----------------------------------------------------------------------------------------- market


@dataclass(frozen=True, slots=True)
class Bar:
    """One closed OHLCV bar. A strategy never sees a bar before ``close_ms``."""

    symbol: str
    open_ms: int
    close_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float  # base-currency units

    @property
    def open_at(self) -> datetime:
        return ms_to_dt(self.open_ms)


@dataclass(frozen=True, slots=True)
class MarketLimits:
    """Exchange minimums and precision for one symbol (0 = unknown / no limit)."""

    symbol: str
    min_notional: float = 0.0
    min_qty: float = 0.0
    qty_step: float = 0.0
    price_tick: float = 0.0
    market_type: str = ""  # the venue's word for the market (ccxt: spot, margin, swap, future); "" = not said


# ----------------------------------------------------------------------------------------- signal


@dataclass(frozen=True, slots=True)
class Signal:
    """A strategy's proposal. ``size_hint`` is a fraction of equity, as notional."""

    id: str
    strategy_id: str
    symbol: str
    side: Side
    created_ms: int  # close of the bar that produced it
    entry: float  # reference price (the close the strategy saw)
    stop_loss: float
    take_profit: float
    size_hint: float
    timeframe: str
    tags: tuple[str, ...] = ()

    @property
    def created_at(self) -> datetime:
        return ms_to_dt(self.created_ms)

    @property
    def risk_per_unit(self) -> float:
        return abs(self.entry - self.stop_loss)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "strategy_id": self.strategy_id,
            "symbol": self.symbol,
            "side": str(self.side),
            "created_ms": self.created_ms,
            "created_at": self.created_at.isoformat(),
            # exact (JSON round-trips a float's repr): the stored signal is the one that was traded
            "entry": self.entry,
            "stop_loss": self.stop_loss,
            "take_profit": self.take_profit,
            "size_hint": self.size_hint,
            "timeframe": self.timeframe,
            "tags": list(self.tags),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Signal:
        return cls(
            id=d["id"],
            strategy_id=d["strategy_id"],
            symbol=d["symbol"],
            side=Side(d["side"]),
            created_ms=int(d["created_ms"]),
            entry=float(d["entry"]),
            stop_loss=float(d["stop_loss"]),
            take_profit=float(d["take_profit"]),
            size_hint=float(d["size_hint"]),
            timeframe=d["timeframe"],
            tags=tuple(d.get("tags", ())),
        )


@dataclass(frozen=True, slots=True)
class GateResult:
    """A gate's answer. Blocking is a result, not an exception; ``until_ms`` is when a lock expires."""

    gate: str
    passed: bool
    reason: str  # why it blocked, or the note it adds to the gate note when it passed
    until_ms: int | None = None


# ---------------------------------------------------------------------------------------- context


@dataclass(frozen=True, slots=True)
class TradeSummary:
    symbol: str
    side: Side
    opened_ms: int
    closed_ms: int
    pnl_pct: float
    r_multiple: float
    exit_reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "side": str(self.side),
            "opened_at": ms_to_dt(self.opened_ms).isoformat(),
            "closed_at": ms_to_dt(self.closed_ms).isoformat(),
            "opened_ms": self.opened_ms,
            "closed_ms": self.closed_ms,
            "pnl_pct": _num(self.pnl_pct),
            "r_multiple": _num(self.r_multiple),
            "exit_reason": self.exit_reason,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TradeSummary:
        return cls(
            d["symbol"], Side(d["side"]), int(d["opened_ms"]), int(d["closed_ms"]),
            float(d["pnl_pct"]), float(d["r_multiple"]), d["exit_reason"],
        )


@dataclass(frozen=True, slots=True)
class TradeStats:
    count: int
    win_rate: float | None  # None when there are no closed trades yet
    loss_streak: int  # consecutive losing trades, most recent first

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "win_rate": _num(self.win_rate), "loss_streak": self.loss_streak}


@dataclass(frozen=True, slots=True)
class RegimeInfo:
    tag: RegimeTag
    variance_ratio: float | None
    realized_vol_ann: float | None  # annualised realized volatility of 1-bar log returns
    vol_percentile: float | None  # 0..100 within its own trailing history
    lookback_bars: int  # bars of returns behind the tag
    k: int  # horizon of the variance ratio in bars
    # method lo_mackinlay (context-v2): the heteroskedasticity-robust z of the ratio and the block length; both
    # None for the fixed-threshold tag of context-v1 packs, whose JSON (and hash) they then leave as it was
    z: float | None = None
    block_bars: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "tag": str(self.tag),
            "variance_ratio": _num(self.variance_ratio),
            "realized_vol_ann": _num(self.realized_vol_ann),
            "vol_percentile": _num(self.vol_percentile),
            "lookback_bars": self.lookback_bars,
            "k": self.k,
        }
        if self.block_bars is not None:
            d["z"] = _num(self.z)
            d["block_bars"] = self.block_bars
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RegimeInfo:
        return cls(
            RegimeTag(d["tag"]), d["variance_ratio"], d["realized_vol_ann"], d["vol_percentile"],
            int(d["lookback_bars"]), int(d["k"]), d.get("z"),
            None if d.get("block_bars") is None else int(d["block_bars"]),
        )


@dataclass(frozen=True, slots=True)
class CorrelatedPosition:
    symbol: str
    side: Side
    size_pct_equity: float  # position notional as % of equity at the signal time
    corr: float | None  # None when the overlap is too short to say
    unrealized_pnl_pct: float
    strategy_id: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "side": str(self.side),
            "size_pct_equity": _num(self.size_pct_equity),
            "corr": _num(self.corr),
            "unrealized_pnl_pct": _num(self.unrealized_pnl_pct),
            "strategy_id": self.strategy_id,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CorrelatedPosition:
        return cls(
            d["symbol"], Side(d["side"]), float(d["size_pct_equity"]), d["corr"],
            float(d["unrealized_pnl_pct"]), d["strategy_id"],
        )


@dataclass(frozen=True, slots=True)
class NewsItem:
    id: str
    published_ms: int
    symbols: tuple[str, ...]  # base assets or full symbols, upper case ("BTC", "ETH/USDT")
    headline: str
    source: str
    category: NewsCategory = NewsCategory.OTHER

    @property
    def published_at(self) -> datetime:
        return ms_to_dt(self.published_ms)


@dataclass(frozen=True, slots=True)
class NewsFlag:
    category: NewsCategory
    age_min: float
    headline: str  # sanitised and truncated: data, never instructions
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"category": str(self.category), "age_min": _num(self.age_min),
                "headline": self.headline, "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NewsFlag:
        return cls(NewsCategory(d["category"]), float(d["age_min"]), d["headline"], d["source"])


# The context pack's version: part of the pack's JSON, hence of its hash and of every verdict-cache key, so a
# verdict given on a pack of an older version is never reused. context-v1: no version key, regime tag from the
# 1-bar variance ratio at fixed thresholds; context-v2: the tag from the Lo–MacKinlay z at the trade's horizon.
PACK_VERSION = "context-v2"


@dataclass(frozen=True, slots=True)
class ContextPack:
    """Everything the reviewer sees, strictly as of ``signal.created_ms``; ``hash`` covers all of it."""

    signal: Signal
    recent_trades: tuple[TradeSummary, ...]
    trade_stats: TradeStats
    regime: RegimeInfo
    correlated: tuple[CorrelatedPosition, ...]
    news: tuple[NewsFlag, ...]
    gate_note: str
    equity: float
    version: str = PACK_VERSION  # what the pack's fields mean (the regime tag's definition): see PACK_VERSION
    json: str = field(default="", compare=False)
    hash: str = field(default="", compare=False)

    @property
    def regime_tag(self) -> str:
        return str(self.regime.tag)

    def to_dict(self) -> dict[str, Any]:
        return {
            "signal": self.signal.to_dict(),
            "recent_trades": [t.to_dict() for t in self.recent_trades],
            "trade_stats": self.trade_stats.to_dict(),
            "regime": self.regime.to_dict(),
            "correlated_positions": [c.to_dict() for c in self.correlated],
            "news": [n.to_dict() for n in self.news],
            "gate_note": self.gate_note,
            "equity": _num(self.equity),
            # context-v1 packs were written without a version: theirs stays out, so their JSON and hash are kept
            **({} if self.version == "context-v1" else {"version": self.version}),
        }

    @classmethod
    def build(cls, **parts: Any) -> ContextPack:
        """Assemble a pack and seal it with its canonical JSON and content hash."""
        if "json" in parts or "hash" in parts:
            raise TypeError("ContextPack.build() computes json and hash itself")
        pack = cls(**parts)
        text, digest = seal(pack)
        # sealing the fresh, not yet shared instance in place (as the frozen dataclass's own __init__ does)
        object.__setattr__(pack, "json", text)
        object.__setattr__(pack, "hash", digest)
        return pack

    @classmethod
    def from_json(cls, text: str) -> ContextPack:
        """Rebuild a stored pack exactly (used by backtests: never rebuilt from later data)."""
        d = json.loads(text)
        ts = d["trade_stats"]
        return cls.build(
            signal=Signal.from_dict(d["signal"]),
            recent_trades=tuple(TradeSummary.from_dict(t) for t in d["recent_trades"]),
            trade_stats=TradeStats(int(ts["count"]), ts["win_rate"], int(ts["loss_streak"])),
            regime=RegimeInfo.from_dict(d["regime"]),
            correlated=tuple(CorrelatedPosition.from_dict(c) for c in d["correlated_positions"]),
            news=tuple(NewsFlag.from_dict(n) for n in d["news"]),
            gate_note=d["gate_note"],
            equity=float(d["equity"]),
            version=d.get("version", "context-v1"),
        )


# --------------------------------------------------------------------------------------- reviewer


@dataclass(frozen=True, slots=True)
class TierAttempt:
    """One tier's try at one signal: success, or the kind of failure that moved it on."""

    tier: str
    ok: bool
    kind: str  # ok | timeout | connection | rate_limit | server | auth | http_<code> | bad_reply | breaker_open | ...
    latency_ms: float
    error: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The reviewer's answer. ``source`` is the tier name, ``cache`` or ``fallback``."""

    verdict: VerdictKind
    confidence: float
    rationale: str = ""
    modified_size_pct: float | None = None
    modified_sl: float | None = None
    source: str = ""
    tier: str = ""
    model: str = ""
    prompt_version: str = ""
    latency_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    error: str = ""
    raw_reply: str = ""
    attempts: tuple[TierAttempt, ...] = ()
    reviewed_at_ms: int = 0  # wall clock (UTC) of the tier's real call; 0 for cache, fallback and rules answers


@dataclass(frozen=True, slots=True)
class CallEstimate:
    """What one call to a priced tier would use and cost, from the request it would send (``--estimate``)."""

    input_tokens: int  # all prompt tokens, cached ones included
    cached_tokens: int  # of input_tokens, read from the provider's prompt cache
    cache_write_tokens: int  # of input_tokens, written to the provider's prompt cache (priced apart)
    output_tokens: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class Decision:
    """What the clamp decided. ``size_pct`` is % of the signal's own size (10..100 when executed)."""

    signal_id: str
    action: Action
    size_pct: float
    stop_loss: float
    take_profit: float
    clamps: tuple[str, ...] = ()  # every bound the clamp applied, as readable notes
    reason: str = ""  # "veto", "accept", "modify", "low confidence: gate decision", "shadow mode", ...


# ------------------------------------------------------------------------------------- execution


@dataclass(frozen=True, slots=True)
class Fill:
    """One ledger entry. Requested and filled price sit side by side."""

    id: str
    signal_id: str
    symbol: str
    side: Side  # the position's side (an exit of a long is a sell)
    kind: FillKind
    filled_ms: int
    requested_price: float
    fill_price: float
    qty: float
    fee: float
    reason: str = ""  # entry: "next_open"; exit: an ExitReason
    ambiguous: bool = False
    gap: bool = False

    @property
    def cash_delta(self) -> float:
        """Effect on the wallet's cash (quote currency)."""
        if self.kind is FillKind.DEPOSIT:
            return self.qty * self.fill_price
        notional = self.qty * self.fill_price
        # Buying (long entry, short exit) spends cash; selling (long exit, short entry) receives it.
        buying = (self.kind is FillKind.ENTRY) == (self.side is Side.LONG)
        return (-notional if buying else notional) - self.fee


@dataclass(frozen=True, slots=True)
class Position:
    """An open position: one per executed signal (id = signal id)."""

    signal_id: str
    strategy_id: str
    symbol: str
    side: Side
    qty: float
    entry_price: float
    entry_fee: float
    opened_ms: int
    stop_loss: float
    take_profit: float
    initial_stop: float
    bars_held: int = 0

    def unrealized_pnl(self, mark: float) -> float:
        return self.side.sign * (mark - self.entry_price) * self.qty

    def market_value(self, mark: float) -> float:
        """Signed contribution to equity at ``mark`` (short positions owe their buy-back)."""
        return self.side.sign * self.qty * mark


@dataclass(frozen=True, slots=True)
class Trade:
    """A closed position, net of both fees."""

    signal_id: str
    strategy_id: str
    symbol: str
    side: Side
    qty: float
    entry_price: float
    exit_price: float
    opened_ms: int
    closed_ms: int
    pnl: float
    pnl_pct: float
    r_multiple: float
    fees: float
    exit_reason: ExitReason
    bars_held: int
    ambiguous: bool = False

    def summary(self) -> TradeSummary:
        return TradeSummary(self.symbol, self.side, self.opened_ms, self.closed_ms,
                            self.pnl_pct, self.r_multiple, str(self.exit_reason))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a reviewed signal led to: its realized trade, or the shadow of the signal as emitted."""

    signal_id: str
    kind: OutcomeKind
    filled: bool  # False when the entry never filled (gap beyond the stop, below minimums, ...)
    pnl_pct: float = 0.0  # net of fees, relative to entry notional
    r_multiple: float = 0.0
    exit_reason: str = ""
    ambiguous: bool = False
    opened_ms: int | None = None
    closed_ms: int | None = None
    note: str = ""

    @property
    def lost(self) -> bool:
        return self.filled and self.pnl_pct < 0


@dataclass(frozen=True, slots=True)
class Event:
    """Something worth a line on the timeline: breaker transitions, retire decisions, repairs."""

    kind: str  # "breaker" | "retire" | "repair" | "run" | ...
    at_ms: int  # run clock time
    subject: str  # tier name, symbol, ...
    message: str
    data: tuple[tuple[str, Any], ...] = ()


# ----------------------------------------------------------------------------------------- record


@dataclass(frozen=True, slots=True)
class PackRef:
    """A stored context pack by identity, not by contents: what the read side of a recorded run carries for each
    reviewed signal. The signal is the recorded one (exact floats, not the pack's 12-digit rounding); ``hash`` is
    the pack's content hash, checked against its stored JSON when it was read; ``json`` is that JSON when the
    reader was asked to keep it ("" otherwise). A reviewer never reads a PackRef: a pack to review is rebuilt in
    full (``ContextPack.from_json``, hash verified), or answered from the verdict cache by its hash alone."""

    signal: Signal
    hash: str
    regime_tag: str
    equity: float  # the pack's equity at the signal time
    json: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class ReviewRecord:
    """One reviewed signal: its pack, the verdict and the clamp's decision. A record the pipeline makes holds
    the sealed ContextPack; one read back from storage by the read side holds a PackRef."""

    pack: ContextPack | PackRef
    verdict: Verdict
    decision: Decision
    mode: str  # reviewer mode when it was decided: active | shadow | off


@dataclass(frozen=True, slots=True)
class SliceRecord:
    """Everything one time slice (all bars closing at ``close_ms``) produced; written in one transaction."""

    close_ms: int
    bars: tuple[Bar, ...]
    signals: tuple[Signal, ...] = ()
    gate_results: tuple[tuple[str, GateResult], ...] = ()  # (signal_id, result) in evaluation order
    reviews: tuple[ReviewRecord, ...] = ()
    fills: tuple[Fill, ...] = ()
    trades: tuple[Trade, ...] = ()
    outcomes: tuple[Outcome, ...] = ()
    events: tuple[Event, ...] = ()
    news: tuple[NewsItem, ...] = ()

    def row_count(self) -> int:
        """How many rows recording this slice writes: one per bar, signal, gate result, fill, trade, outcome,
        event and news item, three per review (its pack, verdict and decision)."""
        return (len(self.bars) + len(self.signals) + len(self.gate_results) + 3 * len(self.reviews)
                + len(self.fills) + len(self.trades) + len(self.outcomes) + len(self.events) + len(self.news))


# ------------------------------------------------------------------------------------- stored runs


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One recorded run, as ``RunReader.get_run`` tells it."""

    id: int
    name: str
    status: str  # running | finished | failed | stopped
    config_json: str  # the effective config, secrets masked
    config_hash: str
    seed: int
    reviewer_mode: str  # active | shadow | off
    created_at: datetime  # wall clock, UTC
    last_slice_ms: int | None
    starting_equity: float
    kind: str = "run"  # run | counterfactual (a replay of ``parent_id`` with another reviewer)
    parent_id: int | None = None


VERDICT_FIELDS: tuple[str, ...] = (
    "verdict", "confidence", "rationale", "modified_size_pct", "modified_sl", "source", "tier", "model",
    "prompt_version", "latency_ms", "input_tokens", "output_tokens", "cached_tokens", "cost_usd", "error",
    "raw_reply", "attempts", "reviewed_at_ms",
)
DECISION_FIELDS: tuple[str, ...] = ("action", "size_pct", "stop_loss", "take_profit", "clamps", "reason")
OUTCOME_FIELDS: tuple[str, ...] = ("signal_id", "kind", "filled", "pnl_pct", "r_multiple", "exit_reason", "ambiguous",
                                   "opened_ms", "closed_ms", "note")


@dataclass(frozen=True, slots=True)
class StoredReviews:
    """A run's reviewed signals in signal order (creation time, then id), as a ``RunReader`` reads them: entry
    ``i`` of every column is one signal. ``verdicts`` maps each ``Verdict`` field to its values and ``decisions``
    each ``Decision`` field (but ``signal_id``), already of their types (``VerdictKind``, tuples of
    ``TierAttempt``, ...). A lean read holds only the fields scoring reads; ``verdict``/``decision`` need all."""

    packs: Sequence[PackRef]
    verdicts: Mapping[str, Sequence[Any]]
    decisions: Mapping[str, Sequence[Any]]
    modes: Sequence[str]  # the reviewer mode of each verdict (empty after a lean read)

    def __len__(self) -> int:
        return len(self.packs)

    @property
    def complete(self) -> bool:
        return all(f in self.verdicts for f in VERDICT_FIELDS) and all(f in self.decisions for f in DECISION_FIELDS)

    def verdict(self, i: int) -> Verdict:
        self._need_complete()
        v = self.verdicts
        return Verdict(*(v[f][i] for f in VERDICT_FIELDS))

    def decision(self, i: int) -> Decision:
        self._need_complete()
        d = self.decisions
        return Decision(self.packs[i].signal.id, *(d[f][i] for f in DECISION_FIELDS))

    def record(self, i: int) -> ReviewRecord:
        return ReviewRecord(self.packs[i], self.verdict(i), self.decision(i), self.modes[i])

    def _need_complete(self) -> None:
        if not self.complete:
            raise ValueError("these reviews were read lean (the fields scoring reads): read them in full")


@dataclass(frozen=True, slots=True)
class StoredOutcomes:
    """A run's outcomes as a ``RunReader`` reads them: one column per ``Outcome`` field (``OUTCOME_FIELDS``)."""

    columns: Mapping[str, Sequence[Any]]

    def __len__(self) -> int:
        return len(self.columns["signal_id"])

    def outcome(self, i: int) -> Outcome:
        c = self.columns
        return Outcome(*(c[f][i] for f in OUTCOME_FIELDS))

    def all(self) -> list[Outcome]:
        c = self.columns
        return list(map(Outcome, *(c[f] for f in OUTCOME_FIELDS)))
