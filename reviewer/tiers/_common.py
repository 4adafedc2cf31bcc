"""Shared machinery of the LLM tiers: the review skeleton, SDK error mapping, the rpm bucket and cost."""

from __future__ import annotations

import asyncio
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict

from engine.clock import monotonic_s
from engine.errors import BadReply, ConfigError, ReviewError, TierTimeout, TierUnavailable, one_line
from engine.ports import PriceSettings, TierSettings
from engine.types import CallEstimate, ContextPack, Verdict
from reviewer.prompt import PromptTemplate, get_prompt
from reviewer.reply import MAX_RAW_CHARS, parse_reply, to_verdict

__all__ = [
    "Call",
    "LLMParams",
    "LLMTier",
    "TokenBucket",
    "approx_tokens",
    "cost_usd",
    "endpoint_of",
    "kind_for_status",
    "one_line",
    "redact_url",
    "usage_int",
]

_DEFAULT_ENDPOINTS = {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com/v1"}


def redact_url(url: str | None) -> str:
    """An endpoint fit to print: no user:password, no query string (keys sometimes travel there)."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def endpoint_of(tc: TierSettings) -> str:
    """The tier's endpoint without credentials (the SDK default for hosted providers without base_url)."""
    return redact_url(tc.base_url) or _DEFAULT_ENDPOINTS.get(tc.provider, "")


def kind_for_status(code: int) -> str:
    """HTTP status → the failure kind used in metrics and attempts."""
    if code == 429:
        return "rate_limit"
    if code in (401, 403):
        return "auth"
    if code >= 500:  # 500, 502, 503 (unavailable), 504, 529 (Anthropic: overloaded), ...
        return "server"
    return f"http_{code}"


# Providers cache a static prompt prefix of at least this many tokens (Anthropic: Sonnet/Opus; OpenAI: automatic)
CACHE_MIN_TOKENS = 1024
CHARS_PER_TOKEN = 4


def approx_tokens(text: str) -> int:
    """Tokens of ``text`` as estimated offline: one per 4 characters, rounded up.

    No provider's tokenizer is available offline (tiktoken downloads its tables; Anthropic's is not published).
    On tradevet's prompts — English instructions and canonical JSON, mostly ASCII — 4 characters a token is the
    usual BPE figure; the fake LLM server in tests reports usage by the same rule, so ``--estimate`` is checked
    against it exactly, and a real provider's count may differ by some 10-20 %.
    """
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def cost_usd(prices: PriceSettings, *, fresh_input: int, cached_input: int, output: int,
             cache_write: int = 0, cache_write_per_mtok: float | None = None) -> float:
    """USD for one call. ``fresh_input`` excludes cached reads and cache writes, which are priced apart."""
    write_price = prices.input_per_mtok if cache_write_per_mtok is None else cache_write_per_mtok
    return (fresh_input * prices.input_per_mtok + cached_input * prices.cached_input_per_mtok
            + cache_write * write_price + output * prices.output_per_mtok) / 1_000_000


class TokenBucket:
    """Requests-per-minute limit measured in real (monotonic) time; reservations, so waiters stay in order.

    Capacity is one second's worth of requests (at least one): a provider's per-minute limit is
    usually enforced over shorter windows, so bursting a whole minute at once would be refused anyway.
    """

    def __init__(self, rpm: float, *, clock: Callable[[], float] = monotonic_s) -> None:
        if rpm <= 0:
            raise ValueError(f"rpm must be > 0 (got {rpm})")
        self.rate = rpm / 60.0  # tokens per second
        self.capacity = max(1.0, self.rate)
        self._tokens = self.capacity
        self._clock = clock
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def reserve(self, max_wait_s: float) -> float:
        """Take one token; the seconds to wait before using it. Raises: TierUnavailable if over ``max_wait_s``."""
        self._refill()
        wait = max(0.0, (1.0 - self._tokens) / self.rate)
        if wait > max_wait_s:
            # waiting would only burn the tier's deadline: fail now so the cascade moves on at once
            raise TierUnavailable(f"local rpm limit: next slot in {wait:.1f} s", kind="rate_limit")
        self._tokens -= 1.0
        return wait

    def refund(self) -> None:
        self._tokens = min(self.capacity, self._tokens + 1.0)

    async def acquire(self, max_wait_s: float) -> None:
        wait = self.reserve(max_wait_s)
        if wait > 0:
            try:
                await asyncio.sleep(wait)
            except asyncio.CancelledError:
                self.refund()  # a cancelled call never used its slot
                raise


@dataclass(frozen=True, slots=True)
class Call:
    """What one provider call produced, before parsing."""

    text: str  # the model's reply as text (tool input re-serialised as JSON for Anthropic tool use)
    input_tokens: int = 0  # all input tokens, cached ones included
    output_tokens: int = 0
    cached_tokens: int = 0  # input tokens read from the provider's prompt cache (a subset of input_tokens)
    cost_usd: float = 0.0


class LLMParams(BaseModel):
    """``params:`` of an LLM tier (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")


def _int(x: Any) -> int:
    try:
        return max(0, int(x or 0))
    except (TypeError, ValueError):
        return 0  # usage is bookkeeping: a proxy sending junk there must not fail a good verdict


class LLMTier:
    """Base of the SDK-backed tiers: attributes, deadline, rpm, error mapping, reply parsing.

    Subclasses set ``sdk_module`` and implement ``_new_client`` and ``_call``.
    """

    sdk_module: ClassVar[str] = ""
    Params: ClassVar[type[LLMParams]] = LLMParams  # validated by engine.app before the tier is built
    needs_key: ClassVar[bool] = True

    def __init__(self, cfg: TierSettings, api_key: str | None) -> None:
        if not cfg.model:
            raise ConfigError(f"required for provider {cfg.provider!r} (tier {cfg.name!r})", path="model")
        if self.needs_key and not api_key and not cfg.base_url:
            # without this the SDK would look for credentials of its own (env vars, profiles on disk);
            # secrets come only from the variable named in the config
            raise ConfigError(f"provider {cfg.provider!r} needs an API key (tier {cfg.name!r})", path="api_key_env")
        self.name = cfg.name
        self.provider = cfg.provider
        self.model = cfg.model
        self.timeout_s = float(cfg.timeout_s)
        self.max_concurrency = int(cfg.max_concurrency)
        try:
            self.prompt: PromptTemplate = get_prompt(cfg.prompt)
        except KeyError as e:
            raise ConfigError(f"prompt: {e.args[0]} (tier {cfg.name!r})") from None
        self.prompt_version = self.prompt.version  # part of the verdict-cache key, stored with each verdict
        self.cfg = cfg
        self.params = self.Params.model_validate(cfg.params)
        self._api_key = api_key
        try:
            self._sdk: ModuleType = importlib.import_module(self.sdk_module)  # ~1 s: only when configured
        except ImportError as e:
            raise ConfigError(f"provider {cfg.provider!r} needs the {self.sdk_module!r} package ({e})") from None
        self._bucket = TokenBucket(cfg.rpm) if cfg.rpm else None
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @property
    def endpoint(self) -> str:
        """Where the tier sends its calls, without credentials (user:password, query string)."""
        return endpoint_of(self.cfg)

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(name={self.name!r}, model={self.model!r}, base_url={self.cfg.base_url!r})"

    # ------------------------------------------------------------------------------------ public
    async def review(self, pack: ContextPack) -> Verdict:
        """One call to the provider, bounded by ``timeout_s`` on its own.

        Raises: TierTimeout, TierUnavailable (``kind``: connection, rate_limit, server, auth, http_<code>),
        BadReply — nothing vendor-specific.
        """
        start = monotonic_s()
        try:
            # the SDK's timeout is per read; this bounds the whole call (a dripping body included)
            async with asyncio.timeout(self.timeout_s):
                if self._bucket is not None:
                    await self._bucket.acquire(self.timeout_s - (monotonic_s() - start))
                t0 = monotonic_s()
                call = await self._call(self._client_now(), pack)
        except TimeoutError as e:
            raise TierTimeout(f"{self.name}: no complete reply within {self.timeout_s:g} s") from e
        except ReviewError:
            raise
        except Exception as e:
            mapped = self._map_error(e)
            if mapped is None:
                raise
            raise mapped from e
        latency_ms = (monotonic_s() - t0) * 1000
        try:
            reply = parse_reply(call.text)
        except BadReply as e:
            raise self._bad(str(e), e.raw) from e
        return to_verdict(reply, tier=self.name, model=self.model, prompt_version=self.prompt_version,
                          raw=call.text, latency_ms=latency_ms, input_tokens=call.input_tokens,
                          output_tokens=call.output_tokens, cached_tokens=call.cached_tokens,
                          cost_usd=call.cost_usd)

    async def aclose(self) -> None:
        client, self._client, self._client_loop = self._client, None, None
        if client is not None:
            await client.close()

    # --------------------------------------------------------------------------------- internals
    def _client_now(self) -> Any:
        # httpx2 connection pools belong to the event loop that opened them: a tier reused under a new
        # loop (successive asyncio.run calls in backtests and tests) gets a fresh client
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = self._new_client()
            self._client_loop = loop
        return self._client

    def _client_kwargs(self, api_key: str | None) -> dict[str, Any]:
        kw: dict[str, Any] = {"api_key": api_key, "max_retries": 0, "timeout": self.timeout_s}
        if self.cfg.base_url:
            kw["base_url"] = self.cfg.base_url
        return kw

    def estimate_call(self, pack: ContextPack, *, output_tokens: int, cache_warm: bool) -> CallEstimate:
        """What one call for ``pack`` would use and cost (``engine.ports.PricedTier``), from the request it would send:
        the static prefix (system prompt, tool definition) and the rendered user message, ``approx_tokens`` each;
        the prefix is a cache write on a cold cache and a cache read on a warm one when the provider caches it."""
        prefix, rest, cacheable = self._prompt_parts(pack)
        p, r = approx_tokens(prefix), approx_tokens(rest)
        read = write = 0
        if cacheable and p >= CACHE_MIN_TOKENS:
            read, write = (self._cached_share(p), 0) if cache_warm else (0, self._cache_write(p))
        fresh = p + r - read - write
        return CallEstimate(input_tokens=p + r, cached_tokens=read, cache_write_tokens=write,
                            output_tokens=output_tokens, cost_usd=self._price(fresh, read, write, output_tokens))

    def _prompt_parts(self, pack: ContextPack) -> tuple[str, str, bool]:
        """(static prefix text, per-pack text, whether the provider caches the prefix) of the request for ``pack``."""
        raise NotImplementedError

    def _cached_share(self, prefix_tokens: int) -> int:
        return prefix_tokens

    def _cache_write(self, prefix_tokens: int) -> int:
        return prefix_tokens

    def _price(self, fresh: int, read: int, write: int, output: int) -> float:
        return cost_usd(self.cfg.prices, fresh_input=fresh, cached_input=read, output=output, cache_write=write)

    def _new_client(self) -> Any:
        raise NotImplementedError

    async def _call(self, client: Any, pack: ContextPack) -> Call:
        raise NotImplementedError

    def _bad(self, message: str, raw: str = "") -> BadReply:
        return BadReply(f"{self.name}: {one_line(message)}", raw=raw[:MAX_RAW_CHARS])

    def _map_error(self, e: Exception) -> ReviewError | None:
        """An SDK exception → our error tree; None for anything else (our own bug: re-raised as it is)."""
        sdk = self._sdk
        if isinstance(e, sdk.APITimeoutError):
            return TierTimeout(f"{self.name}: read timed out ({self.timeout_s:g} s)")
        if isinstance(e, sdk.APIConnectionError):
            cause = e.__cause__ or e.__context__
            why = one_line(f"{type(cause).__name__}: {cause}".rstrip(": ") if cause else str(e), 120)
            return TierUnavailable(f"{self.name}: connection failed ({why})", kind="connection")
        if isinstance(e, sdk.APIStatusError):
            code = int(e.status_code)
            kind = kind_for_status(code)
            retry = e.response.headers.get("retry-after") if e.response is not None else None
            detail = _error_detail(e.body) or one_line(getattr(e, "message", "") or "", 120)
            msg = f"{self.name}: HTTP {code}" + (f" (Retry-After: {retry})" if retry else "") + \
                  (f": {detail}" if detail else "")
            return TierUnavailable(one_line(msg), kind=kind)
        if isinstance(e, sdk.APIResponseValidationError):
            return self._bad(f"response does not match the API schema ({e})")
        base = getattr(sdk, "AnthropicError", None) or getattr(sdk, "OpenAIError", None)
        if base is not None and isinstance(e, base):
            # CredentialsError and other client-side SDK errors
            kind = "auth" if "credential" in type(e).__name__.lower() else "sdk_error"
            return TierUnavailable(f"{self.name}: {one_line(f'{type(e).__name__}: {e}', 160)}", kind=kind)
        return None


def _error_detail(body: Any) -> str:
    """The provider's own one-line error message from a JSON error body, if there is one."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("type")
            if msg:
                return one_line(str(msg), 120)
        elif isinstance(err, str):
            return one_line(err, 120)
    return ""


def usage_int(obj: Any, *names: str) -> int:
    """The first present integer attribute (or key) of a usage object; 0 when absent or junk."""
    for n in names:
        v = obj.get(n) if isinstance(obj, dict) else getattr(obj, n, None)
        if v is not None:
            return _int(v)
    return 0
