"""The synchronous cascade path (rules-only reviewers) keeps the async path's bookkeeping, verdict for verdict."""

from __future__ import annotations

import asyncio

import pytest

from engine.app import build_reviewer
from engine.config import ReviewerConfig
from reviewer.scripted import ScriptedTier
from tests.test_rules import make_pack


def _cascade(**kw):  # type: ignore[no-untyped-def]
    return build_reviewer(ReviewerConfig.model_validate({"tiers": [{"name": "rules", "provider": "rules"}], **kw}),
                          cache=None)


def test_sync_path_gives_the_same_verdicts_as_the_async_path() -> None:
    packs = [make_pack(streak=s) for s in range(7)] + [make_pack(style="trend", regime=r)
                                                       for r in ("trending", "mean_reverting", "chop")]
    a, b = _cascade(), _cascade()
    assert a.synchronous
    sync = a.review_many_sync(packs)
    async_ = asyncio.run(b.review_many(packs))
    strip = lambda v: (v.verdict, v.confidence, v.rationale, v.modified_size_pct, v.modified_sl, v.source, v.tier)  # noqa: E731
    assert [strip(v) for v in sync] == [strip(v) for v in async_]
    assert a.stats["rules"].successes == b.stats["rules"].successes == len(packs)
    assert all(v.attempts and v.attempts[-1].ok for v in sync)


def test_sync_path_falls_open_and_the_breaker_opens_when_a_sync_tier_keeps_failing() -> None:
    class Broken:
        name, provider, model, prompt_version, timeout_s, max_concurrency = "broken", "x", "m", "p", 1.0, 1
        endpoint = ""

        def review_sync(self, pack):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

        async def review(self, pack):  # type: ignore[no-untyped-def]
            return self.review_sync(pack)

        async def aclose(self) -> None:
            return None

    from engine.types import Verdict, VerdictKind
    from reviewer.breaker import CircuitBreaker
    from reviewer.cascade import Cascade

    br = CircuitBreaker("broken", 2, 60)
    c = Cascade([Broken()], breakers={"broken": br}, deadline_s=5,
                fallback=Verdict(VerdictKind.ACCEPT, 0.0))
    out = c.review_many_sync([make_pack() for _ in range(4)])
    assert all(v.source == "fallback" for v in out)
    kinds = [a.kind for v in out for a in v.attempts]
    assert kinds == ["error", "error", "breaker_open", "breaker_open"]
    assert br.state == "open"
    assert [e.subject for e in c.drain_events()] == ["broken"]


def test_async_only_tiers_are_not_synchronous() -> None:
    from engine.types import Verdict, VerdictKind
    from reviewer.breaker import CircuitBreaker
    from reviewer.cascade import Cascade

    t = ScriptedTier(script=[Verdict(VerdictKind.ACCEPT, 0.9)], name="s")
    c = Cascade([t], breakers={"s": CircuitBreaker("s", 5, 60)}, deadline_s=5,
                fallback=Verdict(VerdictKind.ACCEPT, 0.0))
    assert not c.synchronous
    with pytest.raises(RuntimeError):
        c.review_many_sync([make_pack()])
