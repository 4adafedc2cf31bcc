"""The reviewer: a cascade of tiers behind circuit breakers that fails open; tier providers registered here."""

from __future__ import annotations

from reviewer.breaker import CircuitBreaker
from reviewer.cascade import Cascade, TierStats, build_cascade

__all__ = ["TIERS", "Cascade", "CircuitBreaker", "TierStats", "build_cascade"]

# Provider name → "module:Class", imported only when a config names it (the LLM SDKs take ~1 s to import);
# resolved by the composition root (engine.app.build_reviewer). A provider containing ":" is user code,
# "module:Class", and needs no entry here.
TIERS: dict[str, str | type] = {
    "rules": "reviewer.rules:RulesTier",
    "scripted": "reviewer.scripted:ScriptedTier",
    "chance": "reviewer.chance:ChanceTier",
    "anthropic": "reviewer.tiers.anthropic:AnthropicTier",
    "openai": "reviewer.tiers.openai:OpenAITier",
    "openai_compatible": "reviewer.tiers.openai:OpenAICompatibleTier",
}
