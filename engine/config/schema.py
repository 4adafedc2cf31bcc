"""Configuration: YAML files merged in order over the embedded default → one validated, frozen ``Config``.

Errors name the file and the dotted path: ``config/paper.yaml: reviewer.tiers[1].timeout_s: must be > 0
(got -1)``. Secrets never live in files: tiers name an environment variable (``api_key_env``), and any
string may say ``${VAR}``, resolved from the environment and masked in ``config show`` and the stored
config.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG",
    "Config",
    "LoadedConfig",
    "TierConfig",
    "explain_error",
    "load_config",
    "parse_timeframe",
]

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "default.yaml"
MASK = "***"

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
        from datetime import datetime

        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError as e:
            raise ValueError(f"expected an ISO 8601 time such as 2025-01-01T00:00:00Z (got {v!r})") from e
        if dt.tzinfo is None:
            raise ValueError(f"expected a UTC time with a zone, such as 2025-01-01T00:00:00Z (got {v!r})")
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
    lookback: int = Field(96, ge=8, description="Bars of 1-bar log returns for realized vol and the variance ratio.")
    k: int = Field(8, ge=2, description="Horizon (bars) of the k-bar returns in the variance ratio.")
    trend_above: float = Field(1.25, gt=0, description="VR at or above → trending.")
    revert_below: float = Field(0.8, gt=0, description="VR at or below → mean_reverting.")
    vol_history: int = Field(20, ge=2, description="Trailing windows (×lookback) for the vol percentile.")

    @model_validator(mode="after")
    def _order(self) -> RegimeConfig:
        if self.revert_below >= self.trend_above:
            raise ValueError(
                f"revert_below must be < trend_above (got {self.revert_below} >= {self.trend_above})"
            )
        if self.k >= self.lookback:
            raise ValueError(f"k must be < lookback (got k={self.k}, lookback={self.lookback})")
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


class PriceConfig(_Model):
    input_per_mtok: float = Field(0.0, ge=0, description="USD per million input tokens.")
    output_per_mtok: float = Field(0.0, ge=0, description="USD per million output tokens.")
    cached_input_per_mtok: float = Field(0.0, ge=0, description="USD per million cached input tokens.")


class TierConfig(_Model):
    name: str = Field(..., min_length=1, description="Unique tier name (stored with each verdict).")
    provider: str = Field(
        ..., description="anthropic | openai | openai_compatible | rules | scripted | 'module:Class'."
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
    allow_short: bool = Field(True, description="Execute short signals (otherwise they are dropped).")


class RetireConfig(_Model):
    below: float = Field(0.5, ge=0, le=1, description="Veto precision below this retires the reviewer.")
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


# ------------------------------------------------------------------------------------------ loading


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config plus where each value came from and what was masked."""

    config: Config
    files: tuple[str, ...]
    masked_paths: frozenset[str] = frozenset()
    disabled_tiers: tuple[tuple[str, str], ...] = ()  # (tier name, why)
    warnings: tuple[str, ...] = field(default=())
    origin: Mapping[str, str] = field(default_factory=dict, compare=False)  # dotted path → the file that set it

    @contextlib.contextmanager
    def blaming(self) -> Iterator[None]:
        """Config errors raised inside (by what the config names: strategy, gate and tier classes and their
        params) get the file that set the key they name in front, as the config's own errors have:
        ``gates[0].params.bars: must be >= 1 (got 0)`` → ``my.yaml: gates[0].params.bars: ...``."""
        try:
            yield
        except ConfigError as e:
            msg = str(e)
            m = _LEADING_PATH.match(msg)
            if m is None or not self.files:
                raise
            src = _source_of(m.group(1), self.origin, [*self.files, "override"], self.files[-1])
            if src == _display(DEFAULT_CONFIG):  # a default that does not fit the user's choices: their file
                src = self.files[-1]
            raise ConfigError(f"{src}: {msg}") from e

    def effective(self) -> dict[str, Any]:
        """The effective config as plain data with every secret masked (safe to print and store)."""
        data = self.config.model_dump(mode="json")
        for path in self.masked_paths:
            _set_path(data, path, MASK)
        return data

    @property
    def hash(self) -> str:
        text = json.dumps(self.effective(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


_LEADING_PATH = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[\d+\])*): ")  # "gates[0].params.bars: ..."


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if path.is_dir():
        raise ConfigError(f"{path}: expected a YAML file (got a directory)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: expected UTF-8 text ({e.reason} at byte {e.start})") from e
    try:
        data = yaml.load(text, Loader=_unique_key_loader())  # a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML: {where}{problem}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level (got {type(data).__name__})")
    return data


@functools.cache
def _unique_key_loader() -> Any:
    """A ``yaml.SafeLoader`` that refuses a key given twice in one mapping.

    PyYAML keeps the last of two equal keys silently, so a second ``reviewer:`` section would replace the
    first without a word (YAML itself says keys are unique). Keys merged in with ``<<: *anchor`` may
    still be overridden.
    """
    import yaml
    from yaml.constructor import ConstructorError

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, Any] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=False)
                    try:
                        first = seen.setdefault(key, key_node.start_mark)
                    except TypeError:  # an unhashable key: SafeLoader itself reports it
                        continue
                    if first is not key_node.start_mark:
                        raise ConstructorError(None, None, f"duplicate key {key!r} (first given on line "
                                               f"{first.line + 1})", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _merge(base: dict[str, Any], over: Mapping[str, Any], origin: dict[str, str], src: str,
           prefix: str = "") -> None:
    """Deep-merge ``over`` into ``base``; lists replace. Records which file set each path."""
    for k, v in over.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v, origin, src, path)
        else:
            base[k] = _deepcopy(v)
            _mark(v, path, origin, src)


def _deepcopy(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _deepcopy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_deepcopy(x) for x in v]
    return v


def _mark(v: Any, path: str, origin: dict[str, str], src: str) -> None:
    origin[path] = src
    if isinstance(v, Mapping):
        for k, x in v.items():
            _mark(x, f"{path}.{k}", origin, src)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _mark(x, f"{path}[{i}]", origin, src)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _interpolate(node: Any, path: str, env: Mapping[str, str], masked: set[str], origin: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, f"{path}.{k}" if path else str(k), env, masked, origin) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", env, masked, origin) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in env:
                raise ConfigError(
                    f"{origin.get(path, 'config')}: {path}: environment variable {name} is not set "
                    f"(expected it to hold the value of {path})"
                )
            return env[name]

        masked.add(path)
        out = _ENV_REF.sub(sub, node)
        from engine.config.redact import register

        for m in _ENV_REF.finditer(node):
            register(env.get(m.group(1)))  # the value, and the whole string it became part of
        register(out)
        return out
    return node


def _dotted(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _known_keys(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """Field names valid at ``loc``'s parent, for 'did you mean' hints."""
    cur: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(cur, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        cur = _model_in(ann)
        if cur is None:
            return []
    return list(getattr(cur, "model_fields", {}).keys())


def _model_in(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        m = _model_in(arg)
        if m is not None:
            return m
    return None


def explain_error(err: Mapping[str, Any], model: type[BaseModel]) -> str:
    """One pydantic error (``ValidationError.errors()`` item) of ``model`` → the user's wording: "must be > 0 (got -1)",
    "unknown key (known keys: ...); did you mean 'x'?". Also for plug-in ``Params`` models."""
    typ, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    loc = err["loc"]
    if typ == "extra_forbidden":
        known = _known_keys(model, loc)
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else ""
        return f"unknown key (known keys: {', '.join(known)}){extra}"
    if typ == "missing":
        return "required key is missing"
    if typ in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[typ]
        bound = next(iter(ctx.values())) if ctx else "?"
        bound = f"{bound:.12g}" if isinstance(bound, (int, float)) else bound  # pydantic gives 0.0 for gt=0
        return f"must be {op} {bound} (got {got!r})"
    if typ == "literal_error":
        return f"must be one of {ctx.get('expected', '?')} (got {got!r})"
    if typ in ("int_parsing", "int_type", "int_from_float"):
        return f"expected an integer (got {got!r})"
    if typ in ("float_parsing", "float_type"):
        return f"expected a number (got {got!r})"
    if typ in ("bool_parsing", "bool_type"):
        return f"expected true or false (got {got!r})"
    if typ in ("string_type",):
        return f"expected a string (got {got!r})"
    if typ in ("list_type",):
        return f"expected a list (got {got!r})"
    if typ in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping (got {got!r})"
    if typ == "too_short":
        return f"must not be empty (got {got!r})"
    if typ in ("value_error", "assertion_error"):
        msg = str(err["msg"]).removeprefix("Value error, ")
        return msg
    return f"{err['msg'][0].lower()}{err['msg'][1:]} (got {got!r})"


def _source_of(path: str, origin: Mapping[str, str], order: Sequence[str], default: str) -> str:
    """The file to blame for ``path``: the latest file (in load order) that set it or anything under it,
    else the file that set its nearest parent, else ``default``."""
    if path:
        rank = {f: i for i, f in enumerate(order)}
        under = [src for p, src in origin.items() if p == path or p.startswith((path + ".", path + "["))]
        if under:
            return max(under, key=lambda f: rank.get(f, -1))
    probe = path
    while probe:
        if probe in origin:
            return origin[probe]
        probe = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", probe) if re.search(r"(\.[^.\[]+|\[\d+\])$", probe) else ""
    return default


def validate(data: dict[str, Any], origin: Mapping[str, str] | None = None, *, default_src: str = "config",
             order: Sequence[str] | None = None) -> Config:
    """Validate merged data. Raises: ConfigError naming the file and dotted path of the first problem."""
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        first = errors[0]
        path = _dotted(first["loc"])
        src = default_src
        if origin:
            src = _source_of(path, origin, order or [], default_src)
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        where = f"{path}: " if path else ""
        raise ConfigError(f"{src}: {where}{explain_error(first, Config)}{more}") from None


def load_config(
    paths: Sequence[str | os.PathLike[str]] = (),
    *,
    env: Mapping[str, str] | None = None,
    include_default: bool = True,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedConfig:
    """Merge the embedded default and ``paths`` in order, resolve ``${VAR}``, validate.

    Raises: ConfigError (one line naming the file and the dotted path).
    """
    env = os.environ if env is None else env
    files: list[Path] = ([DEFAULT_CONFIG] if include_default else []) + [Path(p) for p in paths]
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for f in files:
        shown = _display(f)
        _merge(merged, _read_yaml(f), origin, shown)
    if overrides:
        _merge(merged, overrides, origin, "override")
    masked: set[str] = set()
    last = _display(files[-1]) if files else "config"
    merged = _interpolate(merged, "", env, masked, origin)
    cfg = validate(merged, origin, default_src=last, order=[_display(f) for f in files] + ["override"])
    disabled: list[tuple[str, str]] = []
    warnings: list[str] = []
    from engine.config.redact import register

    for i, t in enumerate(cfg.reviewer.tiers):
        if t.api_key_env:
            register(env.get(t.api_key_env))
        if t.api_key_env and not env.get(t.api_key_env):
            if t.required:
                raise ConfigError(
                    f"{origin.get(f'reviewer.tiers[{i}].api_key_env', last)}: reviewer.tiers[{i}].api_key_env: "
                    f"environment variable {t.api_key_env} is not set (tier {t.name!r} is required)"
                )
            why = f"tier {t.name!r} disabled: environment variable {t.api_key_env} is not set"
            disabled.append((t.name, why))
            warnings.append(why)
    return LoadedConfig(cfg, tuple(_display(f) for f in files), frozenset(masked), tuple(disabled), tuple(warnings),
                        origin)


def _display(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        if p.resolve() == DEFAULT_CONFIG:
            return "config/default.yaml"
        return str(p)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", dotted)
    cur: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        key: Any = int(part[1:-1]) if part.startswith("[") else part
        try:
            if last:
                cur[key] = value
            else:
                cur = cur[key]
        except (KeyError, IndexError, TypeError):
            return
