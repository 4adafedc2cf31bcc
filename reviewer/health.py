"""Tier health check: one review of a canned context pack per configured tier → reachable, latency, tokens,
cost, a valid reply (or which field broke it), breaker state. What ``tradevet llm check`` prints.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from engine.clock import monotonic_s
from engine.errors import BadReply, ConfigError, ReviewError
from engine.ports import ReviewerSettings, Tier, TierSettings
from engine.types import (
    ContextPack,
    CorrelatedPosition,
    NewsCategory,
    NewsFlag,
    RegimeInfo,
    RegimeTag,
    Side,
    Signal,
    TradeStats,
    TradeSummary,
)
from reviewer.breaker import CircuitBreaker
from reviewer.reply import failed_field
from reviewer.tiers._common import endpoint_of

__all__ = ["TierCheck", "canned_pack", "check_tiers"]

_T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z: the canned signal's bar close


def canned_pack() -> ContextPack:
    """A realistic, fixed pack: a trend-following BTC long with a short trade history, one correlated
    position and one harmless headline. Any working reviewer answers it; the content hash is stable."""
    sig = Signal("check-1", "sma_fast", "BTC/USDT", Side.LONG, _T0, 64_000.0, 63_200.0, 65_600.0, 0.1, "5m",
                 ("trend",))
    trades = tuple(
        TradeSummary("ETH/USDT" if i % 2 else "BTC/USDT", Side.LONG, _T0 - (i + 2) * 3_600_000,
                     _T0 - (i + 1) * 3_600_000, -0.8 if i % 3 else 1.6, -1.0 if i % 3 else 2.0,
                     "stop" if i % 3 else "target")
        for i in range(6)
    )
    return ContextPack.build(
        signal=sig,
        recent_trades=trades,
        trade_stats=TradeStats(6, 0.33, 2),
        regime=RegimeInfo(RegimeTag.TRENDING, 1.41, 0.62, 71.0, 96, 8),
        correlated=(CorrelatedPosition("ETH/USDT", Side.LONG, 12.5, 0.87, -1.2, "sma_fast"),),
        news=(NewsFlag(NewsCategory.LISTING, 42.0, "Exchange lists new BTC perpetual contracts", "wire"),),
        gate_note="24h quote volume 3.1M >= 1M; 2/5 slots used; no cooldown",
        equity=10_000.0,
    )


@dataclass(frozen=True, slots=True)
class TierCheck:
    """The outcome of one tier's canned review."""

    tier: str
    provider: str
    model: str
    endpoint: str
    prompt: str
    status: str  # ok | failed | disabled
    reachable: bool | None = None  # None: not known (disabled, timed out, never built)
    latency_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    verdict: str = ""
    confidence: float | None = None
    kind: str = ""  # failure kind: connection, timeout, http_404, bad_reply, config, ...
    field: str = ""  # for bad_reply: the part of the reply that broke the contract (json, confidence, ...)
    error: str = ""  # one line: what failed, what was expected, what was found
    breaker: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_REACHED_KINDS = {"bad_reply", "rate_limit", "server", "auth"}


def _explain(tc: TierSettings, endpoint: str, e: BaseException, kind: str, field: str) -> str:
    """One line for a user: the thing, what was expected, what was found."""
    msg = " ".join(str(e).split()).removeprefix(f"{tc.name}: ") or type(e).__name__
    if kind == "timeout":
        return f"no complete reply from {endpoint} within {tc.timeout_s:g} s (timeout_s; a CPU model needs longer " \
               f"for a first, uncached prompt)"
    if kind == "connection":
        hint = " — is the server running? (`tradevet llm serve`)" if tc.provider == "openai_compatible" else ""
        return f"cannot reach {endpoint}: {msg}{hint}"
    if kind == "http_404":
        return (f"{endpoint} answered 404 for model {tc.model!r}: expected a server that serves this model at "
                f"{endpoint.rstrip('/')}/chat/completions (check `model:` and that base_url ends in /v1): {msg}")
    if kind == "bad_reply":
        what = "no JSON object" if field == "json" else f"field {field!r}"
        hint = ""
        if field == "json" and tc.provider == "openai_compatible":
            hint = f" (the model ignored the JSON format; response_format is {tc.response_format!r}: llama.cpp takes " \
                   f"json_object, Ollama and vLLM json_schema)"
        return f"the reply is not the verdict object ({what}): {msg}{hint}"
    return msg


BuildTier = Callable[[int, TierSettings], Tier]  # (index, settings) → the built tier; raises ConfigError


async def _check_one(tc: TierSettings, index: int, build_tier: BuildTier, pack: ContextPack,
                     timeout_s: float | None) -> TierCheck:
    endpoint = endpoint_of(tc) if tc.provider not in ("rules", "scripted") else ""
    base = {"tier": tc.name, "provider": tc.provider, "model": tc.model, "endpoint": endpoint,
            "prompt": tc.prompt if tc.provider not in ("rules", "scripted") else ""}
    try:
        tier = build_tier(index, tc)
    except ConfigError as e:
        return TierCheck(**base, status="failed", kind="config", error=str(e))
    breaker = CircuitBreaker(tc.name, tc.breaker.failure_threshold, tc.breaker.recovery_timeout_s)
    limit = timeout_s if timeout_s is not None else float(tier.timeout_s)
    t0 = monotonic_s()
    try:
        async with breaker.guard(), asyncio.timeout(limit):
            v = await tier.review(pack)
    except Exception as e:
        took = (monotonic_s() - t0) * 1000
        kind = "timeout" if isinstance(e, TimeoutError) else getattr(e, "kind", "error")
        if not isinstance(e, ReviewError | TimeoutError):
            kind = "error"
        field = (failed_field(e.raw) or "json") if isinstance(e, BadReply) and e.raw else (
            "json" if isinstance(e, BadReply) else "")
        reachable = True if kind in _REACHED_KINDS or kind.startswith("http_") else (
            False if kind == "connection" else None)
        return TierCheck(**base, status="failed", reachable=reachable, latency_ms=took, kind=kind, field=field,
                         error=_explain(tc, endpoint, e, kind, field), breaker=breaker.state)
    finally:
        await tier.aclose()
    took = (monotonic_s() - t0) * 1000
    return TierCheck(**base, status="ok", reachable=True, latency_ms=took, input_tokens=v.input_tokens,
                     output_tokens=v.output_tokens, cached_tokens=v.cached_tokens, cost_usd=v.cost_usd,
                     verdict=str(v.verdict), confidence=v.confidence, breaker=breaker.state)


async def check_tiers(cfg: ReviewerSettings, build_tier: BuildTier, *, disabled: Mapping[str, str] | None = None,
                      pack: ContextPack | None = None, timeout_s: float | None = None) -> list[TierCheck]:
    """One canned review per configured tier, in order and one at a time (so latencies are the tier's own).

    ``disabled``: tier name → why (a missing key); those are reported, not called. ``timeout_s`` overrides
    each tier's own deadline. ``build_tier`` builds one configured tier (the composition root's,
    ``engine.app.build_tier``). Never raises for a tier's failure: it is the row's ``error``.
    """
    disabled = disabled or {}
    pack = pack or canned_pack()
    out: list[TierCheck] = []
    for i, tc in enumerate(cfg.tiers):
        if tc.name in disabled:
            out.append(TierCheck(tc.name, tc.provider, tc.model, endpoint_of(tc), tc.prompt, "disabled",
                                 error=disabled[tc.name]))
            continue
        out.append(await _check_one(tc, i, build_tier, pack, timeout_s))
    return out
