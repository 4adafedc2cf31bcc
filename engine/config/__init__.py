"""Configuration: the schema of every YAML section, loading and merging files, error wording, plug-in resolution.

``load_config`` is the way in: files merged over the embedded default → a ``LoadedConfig`` (the validated,
frozen ``Config`` plus where each value came from and what was masked).
"""

from __future__ import annotations

from engine.config.load import DEFAULT_CONFIG, LoadedConfig, load_config, read_yaml, stored_value, validate
from engine.config.plugins import build_params, resolve
from engine.config.schema import (
    BreakerConfig,
    CcxtConfig,
    Config,
    ContextConfig,
    CorrelationConfig,
    ExecutionConfig,
    FallbackConfig,
    FilesConfig,
    GateConfig,
    LimitsConfig,
    MarketConfig,
    NewsConfig,
    NewsFileConfig,
    PolicyConfig,
    PriceConfig,
    RegimeConfig,
    RetireConfig,
    ReviewerConfig,
    RssConfig,
    RunConfig,
    ScoringConfig,
    StrategyConfig,
    SyntheticConfig,
    TierConfig,
    parse_timeframe,
)
from engine.config.wording import explain_error

__all__ = [
    "DEFAULT_CONFIG",
    "BreakerConfig",
    "CcxtConfig",
    "Config",
    "ContextConfig",
    "CorrelationConfig",
    "ExecutionConfig",
    "FallbackConfig",
    "FilesConfig",
    "GateConfig",
    "LimitsConfig",
    "LoadedConfig",
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
    "build_params",
    "explain_error",
    "load_config",
    "parse_timeframe",
    "read_yaml",
    "resolve",
    "stored_value",
    "validate",
]
