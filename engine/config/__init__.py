"""Configuration: the schema of every YAML section, loading and merging files, error wording, plug-in resolution.

``load_config`` is the way in: files merged over the embedded default → a ``LoadedConfig`` (the validated,
frozen ``Config`` plus where each value came from and what was masked).
"""

from __future__ import annotations

from engine import lazy

_EXPORTS = {
    "DEFAULT_CONFIG": "load",
    "BreakerConfig": "schema",
    "BudgetConfig": "schema",
    "CcxtConfig": "schema",
    "Config": "schema",
    "ContextConfig": "schema",
    "CorrelationConfig": "schema",
    "ExecutionConfig": "schema",
    "FallbackConfig": "schema",
    "FilesConfig": "schema",
    "GateConfig": "schema",
    "LimitsConfig": "schema",
    "LoadedConfig": "load",
    "MarketConfig": "schema",
    "NewsConfig": "schema",
    "NewsFileConfig": "schema",
    "PolicyConfig": "schema",
    "PriceConfig": "schema",
    "RegimeConfig": "schema",
    "RetireConfig": "schema",
    "ReviewerConfig": "schema",
    "RssConfig": "schema",
    "RunConfig": "schema",
    "ScoringConfig": "schema",
    "StrategyConfig": "schema",
    "SyntheticConfig": "schema",
    "TierConfig": "schema",
    "build_params": "plugins",
    "explain_error": "wording",
    "load_config": "load",
    "parse_timeframe": "schema",
    "read_yaml": "load",
    "resolve": "plugins",
    "stored_value": "load",
    "validate": "load",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy(__name__, _EXPORTS)
