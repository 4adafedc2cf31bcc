"""Cost estimate of a backtest before any money is spent: a recorded run + reviewers → per tier, calls, tokens, USD.

For each reviewer and each of its tiers, in cascade order, assuming every tier that is called answers:
- a signal whose verdict the tier has in the verdict cache costs nothing (and goes no further);
- a tier that calls no priced model (rules, scripted) answers for free;
- a priced tier (``engine.ports.PricedTier``) is sent the signal unless its budget (as it stands now: today's
  recorded spend, caps of the config) would refuse the call — then the signal falls through to the next tier,
  as in the real backtest. Prompt tokens come from the request the tier would really send for the pack (its
  static prefix and the rendered user message, ``PricedTier.estimate_call``); the provider's prompt cache is
  expected cold for a tier's first call and warm afterwards (a backtest runs well within the cache's lifetime).
- Reply tokens are the mean of what this run's recorded real calls were answered with (per tier name when that
  tier answered real calls in the run, else over all of them), else ``DEFAULT_REPLY_TOKENS``.

The packs a tier would see are rebuilt in full from storage (``RunReader.packs``, hashes checked), in chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.ports import PricedTier, Reviewer, RunReader
from engine.recorded.columns import VerdictColumns
from engine.types import PackRef

__all__ = ["DEFAULT_REPLY_TOKENS", "ReviewerEstimate", "TierEstimate", "estimate_reviewer", "reply_tokens"]

DEFAULT_REPLY_TOKENS = 60  # a verdict object with a one-sentence rationale: ~240 characters
_CHUNK = 2048

Progress = Callable[[str, int, int], None]


@dataclass
class TierEstimate:
    tier: str
    priced: bool  # calls a priced model (False: rules and other free tiers)
    reached: int = 0  # signals that got as far as this tier
    cache_hits: int = 0  # answered from the verdict cache: free
    sent: int = 0  # real calls
    over_budget: int = 0  # refused by the tier's budget: passed on to the next tier
    answered_free: int = 0  # answered by a free tier
    input_tokens: int = 0  # prompt tokens of the real calls, cached ones included
    cached_tokens: int = 0  # of input_tokens, expected from the provider's prompt cache
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reply_tokens: int = 0  # the reply length assumed per call
    cost_usd: float = 0.0

    @property
    def cache_share(self) -> float | None:
        """The provider cache's expected share of the prompt tokens."""
        return self.cached_tokens / self.input_tokens if self.input_tokens else None

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "priced": self.priced, "reached": self.reached, "cache_hits": self.cache_hits,
                "sent": self.sent, "over_budget": self.over_budget, "answered_free": self.answered_free,
                "input_tokens": self.input_tokens, "cached_tokens": self.cached_tokens,
                "cache_write_tokens": self.cache_write_tokens, "output_tokens": self.output_tokens,
                "reply_tokens_each": self.reply_tokens, "provider_cache_share": self.cache_share,
                "cost_usd": self.cost_usd}


@dataclass
class ReviewerEstimate:
    name: str
    config: str
    signals: int
    tiers: list[TierEstimate] = field(default_factory=list)
    fallback: int = 0  # signals no tier would answer (every priced tier over budget, no free tier after them)

    @property
    def cost_usd(self) -> float:
        return sum(t.cost_usd for t in self.tiers)

    @property
    def sent(self) -> int:
        return sum(t.sent for t in self.tiers)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config, "signals": self.signals, "sent": self.sent,
                "fallback": self.fallback, "cost_usd": self.cost_usd, "tiers": [t.to_dict() for t in self.tiers]}


def reply_tokens(recorded: VerdictColumns) -> tuple[dict[str, int], int | None]:
    """Mean reply tokens of a run's recorded real calls: per answering tier, and over all of them (None: none)."""
    sums: dict[str, list[int]] = {}
    for source, tier, out in zip(recorded.sources, recorded.tiers, recorded.output_tokens, strict=True):
        if tier and source == tier and out > 0:
            s = sums.setdefault(tier, [0, 0])
            s[0] += int(out)
            s[1] += 1
    by_tier = {t: round(total / n) for t, (total, n) in sums.items()}
    n_all = sum(n for _, n in sums.values())
    overall = round(sum(t for t, _ in sums.values()) / n_all) if n_all else None
    return by_tier, overall


class _Allowance:
    """What a tier's budget would still admit (from ``Reviewer.budget_use``), spent down as calls are planned."""

    def __init__(self, use: Mapping[str, Any] | None) -> None:
        use = use or {}
        self.calls_cap = use.get("calls_per_day")
        self.day_cap, self.run_cap = use.get("usd_per_day"), use.get("usd_per_run")
        self.calls, self.day_usd, self.run_usd = use.get("day_calls", 0), use.get("day_usd", 0.0), 0.0

    def admits(self) -> bool:
        return not ((self.calls_cap is not None and self.calls >= self.calls_cap)
                    or (self.day_cap is not None and self.day_usd >= self.day_cap)
                    or (self.run_cap is not None and self.run_usd >= self.run_cap))

    def spend(self, usd: float) -> None:
        self.calls += 1
        self.day_usd += usd
        self.run_usd += usd


def estimate_reviewer(reader: RunReader, run_id: int, packs: Sequence[PackRef], reviewer: Reviewer, *, name: str,
                      config: str, recorded: VerdictColumns, progress: Progress | None = None) -> ReviewerEstimate:
    """What re-reviewing ``packs`` (a run's stored packs) with ``reviewer`` would send and cost. Reads the verdict
    cache (``reviewer.cache``) but changes nothing: no call is made, no review counted."""
    tiers = list(reviewer.tiers)
    cache = reviewer.cache
    by_tier, overall = reply_tokens(recorded)
    out = ReviewerEstimate(name, config, len(packs))
    est = [TierEstimate(t.name, isinstance(t, PricedTier),
                        reply_tokens=by_tier.get(t.name, overall if overall is not None else DEFAULT_REPLY_TOKENS))
           for t in tiers]
    out.tiers = est
    budgets = reviewer.budget_use()
    allow = [_Allowance(budgets.get(t.name)) for t in tiers]
    warm = [False] * len(tiers)
    if not tiers:
        out.fallback = len(packs)
        return out

    def cached(i: int, h: str) -> bool:
        t = tiers[i]
        return cache is not None and cache.get(t.name, t.model, t.prompt_version, h) is not None

    n = len(packs)
    for start in range(0, n, _CHUNK):
        part = packs[start:start + _CHUNK]
        est[0].reached += len(part)
        need = []
        for p in part:
            if cached(0, p.hash):
                est[0].cache_hits += 1
            else:
                need.append(p)
        full = reader.packs(run_id, [p.signal.id for p in need]) if need and any(e.priced for e in est) else {}
        for p in need:
            for i, t in enumerate(tiers):
                e = est[i]
                if i > 0:
                    e.reached += 1
                    if cached(i, p.hash):
                        e.cache_hits += 1
                        break
                if not isinstance(t, PricedTier):
                    e.answered_free += 1
                    break
                if not allow[i].admits():
                    e.over_budget += 1
                    continue
                call = t.estimate_call(full[p.signal.id], output_tokens=e.reply_tokens, cache_warm=warm[i])
                warm[i] = True
                e.sent += 1
                e.input_tokens += call.input_tokens
                e.cached_tokens += call.cached_tokens
                e.cache_write_tokens += call.cache_write_tokens
                e.output_tokens += call.output_tokens
                e.cost_usd += call.cost_usd
                allow[i].spend(call.cost_usd)
                break
            else:
                out.fallback += 1
        if progress is not None:
            progress(f"estimate {name}", min(start + _CHUNK, n), n)
    return out
