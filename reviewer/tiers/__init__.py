"""SDK-backed reviewer tiers (Anthropic, OpenAI, OpenAI-compatible); each imports its SDK only when built."""

from __future__ import annotations

__all__ = ["AnthropicTier", "OpenAICompatibleTier", "OpenAITier"]


def __getattr__(name: str) -> type:
    # lazy re-exports: `import reviewer.tiers` must stay cheap (the SDKs load on first construction)
    if name == "AnthropicTier":
        from reviewer.tiers.anthropic import AnthropicTier

        return AnthropicTier
    if name in ("OpenAITier", "OpenAICompatibleTier"):
        from reviewer.tiers import openai as _openai

        return getattr(_openai, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
