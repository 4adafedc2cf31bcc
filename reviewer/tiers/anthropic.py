"""Anthropic tier: Claude through the ``anthropic`` SDK, cached system prompt, verdict as a forced tool call."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from engine.ports import TierSettings
from engine.types import ContextPack
from reviewer.prompt import TOOL_DESCRIPTION, TOOL_NAME
from reviewer.reply import REPLY_SCHEMA
from reviewer.tiers._common import Call, LLMParams, LLMTier, cost_usd, usage_int

__all__ = ["AnthropicParams", "AnthropicTier"]

# Anthropic bills writes to the 5-minute prompt cache at 1.25× the input price; the price settings have no field
# for it, so it is derived unless params.cache_write_per_mtok says otherwise.
CACHE_WRITE_MULTIPLIER = 1.25


class AnthropicParams(LLMParams):
    structured_output: Literal["tool", "json_schema"] = Field(
        "tool",
        description="tool: the verdict is the input of a forced tool call (strict input_schema); "
                    "json_schema: native structured output (output_config.format), the verdict is the text.",
    )
    cache_write_per_mtok: float | None = Field(
        None, ge=0, description="USD per million prompt-cache write tokens (default: 1.25 × input price).")


class AnthropicTier(LLMTier):
    """Implements ``engine.ports.Tier`` for the Anthropic Messages API."""

    sdk_module = "anthropic"
    Params = AnthropicParams

    def __init__(self, cfg: TierSettings, api_key: str | None) -> None:
        super().__init__(cfg, api_key)
        self.params: AnthropicParams
        self._system = [{"type": "text", "text": self.prompt.system, "cache_control": {"type": "ephemeral"}}]
        self._tool = {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": REPLY_SCHEMA,
                      "strict": True}

    def _new_client(self) -> Any:
        # with no key and a base_url (a proxy that adds its own credentials), send a placeholder: an
        # explicit key keeps the SDK from hunting for credentials in the environment and on disk
        return self._sdk.AsyncAnthropic(**self._client_kwargs(self._api_key or "unused"))

    def request_kwargs(self, pack: ContextPack) -> dict[str, Any]:
        """The ``messages.create`` arguments for one pack (public for inspection and tests)."""
        kw: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.cfg.max_tokens,
            # no temperature: the Messages API version this SDK speaks (2026-10-21) has no sampling knobs
            "system": self._system,
            "messages": [{"role": "user", "content": self.prompt.render(pack)}],
        }
        if self.params.structured_output == "tool":
            kw["tools"] = [self._tool]
            kw["tool_choice"] = {"type": "tool", "name": TOOL_NAME, "disable_parallel_tool_use": True}
        else:
            kw["output_config"] = {"format": {"type": "json_schema", "schema": REPLY_SCHEMA}}
        return kw

    def _prompt_parts(self, pack: ContextPack) -> tuple[str, str, bool]:
        tools = json.dumps([self._tool], sort_keys=True) if self.params.structured_output == "tool" else ""
        return self.prompt.system + tools, self.prompt.render(pack), True  # the system block has cache_control

    def _price(self, fresh: int, read: int, write: int, output: int) -> float:
        write_price = self.params.cache_write_per_mtok
        if write_price is None:
            write_price = self.cfg.prices.input_per_mtok * CACHE_WRITE_MULTIPLIER
        return cost_usd(self.cfg.prices, fresh_input=fresh, cached_input=read, output=output, cache_write=write,
                        cache_write_per_mtok=write_price)

    async def _call(self, client: Any, pack: ContextPack) -> Call:
        msg = await client.messages.create(**self.request_kwargs(pack))
        return self._read(msg)

    def _read(self, msg: Any) -> Call:
        """Reply text, tokens and cost from a Message; BadReply when its shape or stop reason is unusable."""
        blocks = getattr(msg, "content", None)
        if not isinstance(blocks, list):
            raise self._bad(f"malformed API response (content is {type(blocks).__name__})", str(msg))
        text: str | None = None
        texts: list[str] = []
        for b in blocks:
            btype = getattr(b, "type", None)
            if btype == "tool_use" and getattr(b, "name", None) == TOOL_NAME:
                tool_input = getattr(b, "input", None)
                # a dict re-serialised as the raw reply; anything else is kept as text so parsing rejects it
                text = (json.dumps(tool_input, ensure_ascii=False) if isinstance(tool_input, dict)
                        else str(tool_input))
                break
            if btype == "text":
                texts.append(str(getattr(b, "text", "") or ""))
        if text is None:
            text = "".join(texts)  # a text answer (json_schema mode, or a proxy that ignored tool_choice)
        stop = getattr(msg, "stop_reason", None)
        if stop == "max_tokens":
            raise self._bad(f"reply truncated at max_tokens={self.cfg.max_tokens}", text)
        if stop == "refusal":
            raise self._bad("model refused to answer", text)

        u = getattr(msg, "usage", None)
        fresh = usage_int(u, "input_tokens")  # excludes cache reads and writes
        read = usage_int(u, "cache_read_input_tokens")
        write = usage_int(u, "cache_creation_input_tokens")
        out = usage_int(u, "output_tokens")
        prices = self.cfg.prices
        write_price = self.params.cache_write_per_mtok
        if write_price is None:
            write_price = prices.input_per_mtok * CACHE_WRITE_MULTIPLIER
        cost = cost_usd(prices, fresh_input=fresh, cached_input=read, output=out, cache_write=write,
                        cache_write_per_mtok=write_price)
        return Call(text=text, input_tokens=fresh + read + write, output_tokens=out, cached_tokens=read,
                    cost_usd=cost)
