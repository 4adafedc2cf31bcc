"""OpenAI tiers: hosted OpenAI, and OpenAI-compatible local servers (Ollama, vLLM, llama.cpp) via ``base_url``."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from engine.errors import ConfigError
from engine.ports import TierSettings
from engine.types import ContextPack
from reviewer.reply import REPLY_SCHEMA
from reviewer.tiers._common import Call, LLMParams, LLMTier, cost_usd, usage_int

__all__ = ["OpenAICompatibleTier", "OpenAIParams", "OpenAITier"]

SCHEMA_NAME = "review_verdict"
_PLACEHOLDER_KEY = "not-needed"  # local servers ignore the key; the SDK refuses to start without one


class OpenAIParams(LLMParams):
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra JSON fields merged into each request body (server-specific knobs, e.g. vLLM's).",
    )


class OpenAITier(LLMTier):
    """Implements ``engine.ports.Tier`` for the hosted OpenAI Chat Completions API (strict JSON schema)."""

    sdk_module = "openai"
    Params = OpenAIParams
    # hosted OpenAI takes max_completion_tokens (max_tokens is refused by its reasoning models)
    max_tokens_field = "max_completion_tokens"

    def __init__(self, cfg: TierSettings, api_key: str | None) -> None:
        super().__init__(cfg, api_key)
        self.params: OpenAIParams

    def _new_client(self) -> Any:
        return self._sdk.AsyncOpenAI(**self._client_kwargs(self._api_key or _PLACEHOLDER_KEY))

    def response_format(self) -> dict[str, Any] | None:
        """The ``response_format`` request field for ``cfg.response_format`` (None: rely on the prompt)."""
        shape = self.cfg.response_format
        if shape == "json_schema":
            return {"type": "json_schema",
                    "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": REPLY_SCHEMA}}
        if shape == "json_object":
            # llama-cpp-python's server: JSON mode constrained by a schema (it answers 500 to json_schema)
            return {"type": "json_object", "schema": REPLY_SCHEMA}
        return None

    def request_kwargs(self, pack: ContextPack) -> dict[str, Any]:
        """The ``chat.completions.create`` arguments for one pack (public for inspection and tests)."""
        kw: dict[str, Any] = {
            "model": self.model,
            # the static system prompt first: OpenAI caches a stable prefix of 1024+ tokens by itself
            "messages": [{"role": "system", "content": self.prompt.system},
                         {"role": "user", "content": self.prompt.render(pack)}],
            "temperature": self.cfg.temperature,
            self.max_tokens_field: self.cfg.max_tokens,
        }
        rf = self.response_format()
        if rf is not None:
            kw["response_format"] = rf
        kw.update(self._extra_kwargs())
        if self.params.extra_body:
            kw["extra_body"] = dict(self.params.extra_body)
        return kw

    def _extra_kwargs(self) -> dict[str, Any]:
        # routes every review to the same cache shard, so the shared system prompt is a cache hit
        return {"prompt_cache_key": f"tradevet-{self.prompt_version}"}

    def _prompt_parts(self, pack: ContextPack) -> tuple[str, str, bool]:
        return self.prompt.system, self.prompt.render(pack), True  # OpenAI caches a stable prefix by itself

    def _cached_share(self, prefix_tokens: int) -> int:
        return prefix_tokens // 128 * 128  # OpenAI caches in 128-token steps

    def _cache_write(self, prefix_tokens: int) -> int:
        return 0  # an OpenAI cache write is billed as ordinary input

    async def _call(self, client: Any, pack: ContextPack) -> Call:
        resp = await client.chat.completions.create(**self.request_kwargs(pack))
        return self._read(resp)

    def _read(self, resp: Any) -> Call:
        """Reply text, tokens and cost from a ChatCompletion; BadReply when its shape or finish is unusable."""
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise self._bad("malformed API response (no choices)", str(resp))
        choice = choices[0]
        message = getattr(choice, "message", None)
        content = getattr(message, "content", None)
        text = content if isinstance(content, str) else ("" if content is None else str(content))
        refusal = getattr(message, "refusal", None)
        if refusal:
            raise self._bad(f"model refused: {refusal}", text or str(refusal))
        finish = getattr(choice, "finish_reason", None)
        if finish == "length":
            raise self._bad(f"reply truncated at max_tokens={self.cfg.max_tokens}", text)
        if finish == "content_filter":
            raise self._bad("reply withheld by the provider's content filter", text)

        u = getattr(resp, "usage", None)
        prompt = usage_int(u, "prompt_tokens")
        details = (u.get("prompt_tokens_details") if isinstance(u, dict)
                   else getattr(u, "prompt_tokens_details", None))
        cached = min(prompt, usage_int(details, "cached_tokens")) if details is not None else 0
        out = usage_int(u, "completion_tokens")
        cost = cost_usd(self.cfg.prices, fresh_input=prompt - cached, cached_input=cached, output=out)
        return Call(text=text, input_tokens=prompt, output_tokens=out, cached_tokens=cached, cost_usd=cost)


class OpenAICompatibleTier(OpenAITier):
    """A local OpenAI-compatible server (Ollama, vLLM, llama.cpp) at ``cfg.base_url``; the key is optional."""

    needs_key = False
    # every local server understands max_tokens; not all know max_completion_tokens
    max_tokens_field = "max_tokens"

    def __init__(self, cfg: TierSettings, api_key: str | None) -> None:
        if not cfg.base_url:
            raise ConfigError(f"required for provider {cfg.provider!r} "
                              f"(e.g. http://127.0.0.1:11434/v1 for Ollama; tier {cfg.name!r})", path="base_url")
        super().__init__(cfg, api_key)

    def _extra_kwargs(self) -> dict[str, Any]:
        return {}  # prompt_cache_key is OpenAI's; some servers refuse unknown fields
