"""Configuration schema: the validated, frozen models of every YAML section (DESIGN §5; names are the contract).

Unknown keys are errors and every field says what it is for (``tradevet config schema`` prints them). The
models hold values only: reading and merging files is ``engine.config.load``, the wording of errors
``engine.config.wording``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.errors import ConfigError
from engine.types import NaiveTime, parse_iso_ms

__all__ = [
    "BreakerConfig",
    "BudgetConfig",
    "CcxtConfig",
    "Config",
    "ContextConfig",
    "CorrelationConfig",
    "ExecutionConfig",
    "FallbackConfig",
    "FilesConfig",
    "GateConfig",
    "LimitsConfig",
    "MarketConfig",
    "NewsConfig",
    "NewsFileConfig",
    "PolicyConfig",
    "PriceConfig",
    "RegimeConfig",
    "RetireConfig",
    "ReviewerConfig",
    "RssConfig",
    "RunConfig",
    "ScoringConfig",
    "StrategyConfig",
    "SyntheticConfig",
    "TierConfig",
    "parse_timeframe",
]

_TIMEFRAME = re.compile(r"^(\d+)([smhdw])$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_timeframe(tf: str) -> int:
    """'5m' → 300000 ms. Raises: ConfigError for anything else."""
    m = _TIMEFRAME.match(tf or "")
    if not m or int(m.group(1)) <= 0:
        raise ConfigError(f"timeframe: expected a number and a unit s/m/h/d/w such as '5m' (got {tf!r})")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------- run


class RunConfig(_Model):
    name: str = Field("demo", min_length=1, description="Run name; `paper` resumes an unfinished run of this name.")
    db_url: str = Field("sqlite:///tradevet.db", description="SQLAlchemy URL (SQLite file or PostgreSQL).")
    seed: int = Field(7, description="Seed for everything random (synthetic market, random baselines).")


# ------------------------------------------------------------------------------------------ market


class FilesConfig(_Model):
    dir: str | None = Field(None, description="Directory of VENUE_BASE-QUOTE_TIMEFRAME.csv files.")
    venue: str | None = Field(None, description="Only files of this venue prefix (e.g. BITTREX); None = any.")
    fill_gaps: bool = Field(True, description="Forward-fill missing bars (zero volume), counted and logged.")
    max_gap_bars: int = Field(288, gt=0, description="A gap longer than this many bars is a data error.")


class CcxtConfig(_Model):
    exchange: str = Field("binance", description="ccxt exchange id.")
    sandbox: bool = Field(False, description="Use the exchange's testnet.")
    urls: dict[str, Any] = Field(default_factory=dict, description="Merged into the exchange's `urls`.")
    options: dict[str, Any] = Field(default_factory=dict, description="Passed to the ccxt exchange as options.")
    warmup_bars: int = Field(500, ge=0, description="History fetched at start-up.")
    settle_s: float = Field(2.0, ge=0, description="Delay after a bar's close before fetching it.")
    timeout_ms: int = Field(10_000, gt=0, description="ccxt request timeout.")


class SyntheticConfig(_Model):
    bars: int = Field(2000, gt=0, description="Bars per symbol.")
    start: str = Field("2025-01-01T00:00:00Z", description="Open time of the first bar (ISO 8601, UTC).")
    news: bool = Field(True, description="Emit synthetic news items (with a price impact after publication).")
    news_per_day: float = Field(4.0, ge=0, description="Average news items per day across all symbols.")

    @field_validator("start")
    @classmethod
    def _iso(cls, v: str) -> str:
        try:
            parse_iso_ms(v, naive_is_utc=False)
        except NaiveTime:
            raise ValueError(f"expected a UTC time with a zone, such as 2025-01-01T00:00:00Z (got {v!r})") from None
        except ValueError as e:
            raise ValueError(f"expected an ISO 8601 time such as 2025-01-01T00:00:00Z (got {v!r})") from e
        return v


class LimitsConfig(_Model):
    min_notional: float = Field(10.0, ge=0, description="Default minimum order notional (quote) when unknown.")
    qty_step: float = Field(0.0, ge=0, description="Default quantity step (0 = none).")


class MarketConfig(_Model):
    source: Literal["synthetic", "files", "ccxt"] = Field("synthetic", description="Where bars come from.")
    symbols: list[str] = Field(default_factory=lambda: ["BTC/USDT", "ETH/USDT", "SOL/USDT"], min_length=1)
    timeframe: str = Field("5m", description="Bar length, e.g. 1m, 5m, 1h.")
    files: FilesConfig = FilesConfig()
    ccxt: CcxtConfig = CcxtConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    limits: LimitsConfig = LimitsConfig()
    type: Literal["auto", "spot", "margin", "futures"] = Field(
        "auto", description="What the account trades: spot cannot be short; margin and futures can. auto: the "
                            "exchange's market info (ccxt), else futures for symbols with a settle currency "
                            "(BTC/USDT:USDT), spot for others.")

    @field_validator("timeframe")
    @classmethod
    def _tf(cls, v: str) -> str:
        try:
            parse_timeframe(v)
        except ConfigError as e:  # pydantic wraps ValueError only: re-raise so the path and file are named
            raise ValueError(str(e).removeprefix("timeframe: ")) from None
        return v

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: list[str]) -> list[str]:
        for s in v:
            if not re.match(r"^[A-Za-z0-9]+[/-][A-Za-z0-9]+(:[A-Za-z0-9]+)?$", s):
                raise ValueError(f"expected symbols like BTC/USDT (got {s!r})")
        if len(set(v)) != len(v):
            raise ValueError(f"symbols must be unique (got {v})")
        return v

    @property
    def timeframe_ms(self) -> int:
        return parse_timeframe(self.timeframe)


# ---------------------------------------------------------------------------------- strategies/gates


class StrategyConfig(_Model):
    id: str = Field(..., min_length=1, description="Unique strategy id (stored with every signal).")
    kind: str = Field(
        ..., description="Registered kind (sma_cross, donchian_breakout, rsi_reversion) or 'module:Class'."
    )
    symbols: Literal["all"] | list[str] = Field("all", description="'all' or a subset of market.symbols.")
    params: dict[str, Any] = Field(default_factory=dict, description="Validated by the strategy's Params model.")


class GateConfig(_Model):
    kind: str = Field(..., description="Registered gate kind or 'module:Class'.")
    params: dict[str, Any] = Field(default_factory=dict, description="Validated by the gate's Params model.")


# ----------------------------------------------------------------------------------------- context


class RegimeConfig(_Model):
    method: Literal["lo_mackinlay", "fixed"] = Field(
        "lo_mackinlay",
        description="lo_mackinlay: the variance ratio at the strategy's horizon, from block returns, tagged by its "
                    "heteroskedasticity-robust z (|z| > z_crit); fixed: the 1-bar VR over `lookback` against "
                    "trend_above / revert_below (the tag of context packs before context-v2).",
    )
    lookback: int = Field(96, ge=8, description="Bars of 1-bar log returns for realized vol and its percentile "
                                                "(and the variance ratio of method fixed).")
    k: int = Field(8, ge=2, description="method fixed: horizon (bars) of the k-bar returns in the variance ratio.")
    trend_above: float = Field(1.25, gt=0, description="method fixed: VR at or above → trending.")
    revert_below: float = Field(0.8, gt=0, description="method fixed: VR at or below → mean_reverting.")
    vol_history: int = Field(20, ge=2, description="Trailing windows (×lookback) for the vol percentile.")
    test_lookback: int = Field(480, ge=16, description="method lo_mackinlay: bars of returns the test reads "
                                                       "(the tag is unknown before that many bars).")
    horizon_bars: int | None = Field(
        None, ge=2, description="method lo_mackinlay: horizon of the variance ratio in bars (null: the time stop, "
                                "execution.max_bars_held — the horizon the strategies trade at).")
    block_bars: int = Field(4, ge=1, description="method lo_mackinlay: returns are summed over non-overlapping "
                                                 "blocks of this many bars (damps bid–ask bounce).")
    skip_lags: int = Field(1, ge=0, description="method lo_mackinlay: the first block-return autocorrelations left "
                                                "out of the ratio (adjacent blocks share a bounce).")
    z_crit: float = Field(1.645, gt=0, description="method lo_mackinlay: |z| above this → trending (VR > 1) or "
                                                   "mean_reverting (VR < 1), else chop.")

    @model_validator(mode="after")
    def _order(self) -> RegimeConfig:
        if self.revert_below >= self.trend_above:
            raise ValueError(
                f"revert_below must be < trend_above (got {self.revert_below} >= {self.trend_above})"
            )
        if self.k >= self.lookback:
            raise ValueError(f"k must be < lookback (got k={self.k}, lookback={self.lookback})")
        if self.horizon_bars is not None:
            blocks = self.horizon_bars // self.block_bars
            if blocks < self.skip_lags + 2:
                raise ValueError(f"horizon_bars // block_bars must be >= skip_lags + 2 (got {self.horizon_bars} // "
                                 f"{self.block_bars} = {blocks}, skip_lags {self.skip_lags})")
            if self.test_lookback < 4 * self.horizon_bars:
                raise ValueError(f"test_lookback must be >= 4 × horizon_bars (got {self.test_lookback} < "
                                 f"4 × {self.horizon_bars})")
        return self


class CorrelationConfig(_Model):
    lookback: int = Field(288, ge=10, description="Bars of log returns for Pearson correlation.")


class ContextConfig(_Model):
    recent_trades: int = Field(20, ge=0, le=256, description="Closed trades of the same strategy in the pack (≤ 256).")
    news_window_h: float = Field(4, gt=0, description="News published in (t - window, t].")
    correlated_top: int = Field(5, ge=0, description="Open positions listed by |correlation|.")
    headline_chars: int = Field(160, ge=20, description="Headlines are truncated to this length.")
    regime: RegimeConfig = RegimeConfig()
    correlation: CorrelationConfig = CorrelationConfig()


# -------------------------------------------------------------------------------------------- news


class NewsFileConfig(_Model):
    path: str | None = Field(None, description="JSONL: published_at, symbols, headline, source.")


class RssConfig(_Model):
    feeds: list[str] = Field(default_factory=list, description="RSS/Atom feed URLs.")
    poll_s: float = Field(120, gt=0, description="Polling interval.")
    aliases: dict[str, list[str]] = Field(
        default_factory=lambda: {"BTC": ["bitcoin"], "ETH": ["ethereum", "ether"], "SOL": ["solana"]},
        description="Base asset → words that name it in a headline.",
    )


class NewsConfig(_Model):
    source: Literal["none", "file", "rss", "synthetic"] = Field(
        "none", description="none | file | rss | synthetic (items carried by the synthetic feed)."
    )
    file: NewsFileConfig = NewsFileConfig()
    rss: RssConfig = RssConfig()


# ---------------------------------------------------------------------------------------- reviewer


class BreakerConfig(_Model):
    failure_threshold: int = Field(5, ge=1, description="Consecutive failures that open the breaker.")
    recovery_timeout_s: float = Field(60, gt=0, description="Seconds open before one half-open probe.")


class BudgetConfig(_Model):
    """Spend caps of one tier (any subset). Spend is what the recorded verdicts the tier answered cost: real
    calls only, a cache hit is free. The day is the UTC calendar day in real time (not market time)."""

    usd_per_day: float | None = Field(None, gt=0, description="USD the tier may spend per UTC day (real time).")
    calls_per_day: int | None = Field(None, gt=0, description="Real calls the tier may answer per UTC day.")
    usd_per_run: float | None = Field(None, gt=0, description="USD the tier may spend in one run or backtest.")
    scope: Literal["run", "database"] = Field(
        "run", description="Whose spend the daily caps count: this run's (run) or every run's in the database "
                           "(database: runs on one database share the tier's daily budget, by tier name).")

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.usd_per_day, self.calls_per_day, self.usd_per_run))


class PriceConfig(_Model):
    input_per_mtok: float = Field(0.0, ge=0, description="USD per million input tokens.")
    output_per_mtok: float = Field(0.0, ge=0, description="USD per million output tokens.")
    cached_input_per_mtok: float = Field(0.0, ge=0, description="USD per million cached input tokens.")


class TierConfig(_Model):
    name: str = Field(..., min_length=1, description="Unique tier name (stored with each verdict).")
    provider: str = Field(
        ..., description="anthropic | openai | openai_compatible | rules | chance | scripted | 'module:Class'."
    )
    model: str = Field("", description="Model name sent to the provider.")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key.")
    required: bool = Field(False, description="Fail at start-up (instead of disabling the tier) when the key is unset.")
    base_url: str | None = Field(None, description="Override the provider's API base URL.")
    timeout_s: float = Field(8, gt=0, description="Deadline of one whole call, inside the breaker.")
    max_concurrency: int = Field(8, ge=1, description="Calls in flight at once for this tier.")
    rpm: float | None = Field(None, gt=0, description="Optional requests-per-minute limit.")
    response_format: Literal["json_schema", "json_object", "none"] = Field(
        "json_schema", description="Structured-output shape sent to OpenAI-compatible servers."
    )
    prompt: Literal["full", "compact"] = Field(
        "full", description="Prompt template: full (long, stable, cached by hosted providers) | compact (fits a "
                            "small local model's budget). Its version is part of the verdict-cache key."
    )
    max_tokens: int = Field(400, ge=16, description="Reply token budget.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature.")
    prices: PriceConfig = PriceConfig()
    breaker: BreakerConfig = BreakerConfig()
    budget: BudgetConfig | None = Field(
        None, description="Spend caps: usd_per_day, calls_per_day, usd_per_run (any subset), scope run | database. "
                          "An exhausted tier is skipped like an open breaker (failure kind `budget`).")
    params: dict[str, Any] = Field(default_factory=dict, description="Provider-specific settings (rules thresholds).")


class FallbackConfig(_Model):
    verdict: Literal["accept", "veto"] = Field("accept", description="Verdict when every tier fails (fail open).")
    confidence: float = Field(0.0, ge=0, le=1, description="Confidence of the fallback verdict.")


class ReviewerConfig(_Model):
    mode: Literal["active", "shadow", "off"] = Field(
        "active", description="shadow: verdicts stored, gate decision executed."
    )
    deadline_s: float = Field(20, gt=0, description="Bound on the whole cascade for one signal.")
    cache: bool = Field(True, description="Reuse verdicts keyed by (tier, model, prompt version, context hash).")
    fallback: FallbackConfig = FallbackConfig()
    tiers: list[TierConfig] = Field(default_factory=lambda: [TierConfig(name="rules", provider="rules")])

    @field_validator("tiers")
    @classmethod
    def _unique(cls, v: list[TierConfig]) -> list[TierConfig]:
        seen: set[str] = set()
        for t in v:
            if t.name in seen:
                raise ValueError(f"tier names must be unique (got {t.name!r} twice)")
            seen.add(t.name)
        return v


class PolicyConfig(_Model):
    min_confidence: float = Field(0.3, ge=0, le=1, description="Below this, the gate decision stands.")
    min_size_pct: float = Field(10, gt=0, le=100, description="Smallest size a modify may set (% of signal).")
    max_size_pct: float = Field(100, gt=0, le=100, description="Largest size a modify may set (% of signal).")

    @model_validator(mode="after")
    def _order(self) -> PolicyConfig:
        if self.min_size_pct > self.max_size_pct:
            raise ValueError(
                f"min_size_pct must be <= max_size_pct (got {self.min_size_pct} > {self.max_size_pct})"
            )
        return self


class ExecutionConfig(_Model):
    starting_equity: float = Field(10_000, gt=0, description="First deposit of a new run's ledger.")
    quote: str = Field("USDT", min_length=1, description="Quote currency of the wallet.")
    fee_bps: float = Field(10, ge=0, le=1000, description="Taker fee, basis points of notional.")
    slippage_bps: float = Field(5, ge=0, le=1000, description="Adverse slippage on market fills.")
    max_bars_held: int = Field(48, ge=1, description="Time stop: exit at the close of this many bars.")
    account: Literal["netting", "hedging"] = Field(
        "netting", description="netting: one position per symbol across strategies (a signal on a held symbol is "
                               "refused); hedging: positions per signal, longs and shorts side by side.")

    allow_short: Any = Field(None, exclude=True, description="Replaced by market.type (kept to say so).")

    @field_validator("allow_short")
    @classmethod
    def _allow_short(cls, v: Any) -> None:
        if v is not None:
            raise ValueError("replaced by market.type: spot refuses short signals, margin and futures allow "
                             f"them (got allow_short: {v!r})")


class RetireConfig(_Model):
    alpha: float = Field(0.05, gt=0, lt=1, description=(
        "Significance level of the retire rule: the reviewer is retired when its trailing veto precision does "
        "not exceed the window's base loss rate at this level (one-sided exact binomial test), or falls below it."))
    below: float | None = Field(None, ge=0, le=1, description=(
        "Optional absolute floor: veto precision below this also retires the reviewer (null: no floor)."))
    window_days: float = Field(14, gt=0, description="Trailing window for the retire rule.")
    min_vetoes: int = Field(50, ge=1, description="Scored vetoes needed before the rule may fire.")
    enabled: bool = Field(True, description="Apply the retire rule during runs.")


class ScoringConfig(_Model):
    retire: RetireConfig = RetireConfig()


class Config(_Model):
    run: RunConfig = RunConfig()
    market: MarketConfig = MarketConfig()
    strategies: list[StrategyConfig] = Field(default_factory=list)
    gates: list[GateConfig] = Field(default_factory=list)
    context: ContextConfig = ContextConfig()
    news: NewsConfig = NewsConfig()
    reviewer: ReviewerConfig = ReviewerConfig()
    policy: PolicyConfig = PolicyConfig()
    execution: ExecutionConfig = ExecutionConfig()
    scoring: ScoringConfig = ScoringConfig()

    @field_validator("strategies")
    @classmethod
    def _unique_ids(cls, v: list[StrategyConfig]) -> list[StrategyConfig]:
        ids = [s.id for s in v]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"strategy ids must be unique (got {', '.join(dup)} more than once)")
        return v

    @model_validator(mode="after")
    def _cross(self) -> Config:
        known = set(self.market.symbols)
        for i, s in enumerate(self.strategies):
            if isinstance(s.symbols, list):
                unknown = [x for x in s.symbols if x not in known]
                if unknown:
                    raise ValueError(
                        f"strategies[{i}].symbols: {unknown} not in market.symbols {sorted(known)}"
                    )
        if self.market.source == "files" and not self.market.files.dir:
            raise ValueError("market.files.dir: required when market.source is 'files' (got null)")
        return self
