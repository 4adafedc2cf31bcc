"""Cascade: tier order, any failure moves on, fail-open fallback, breakers, concurrency caps, cache, building."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from engine.app import build_reviewer
from engine.config import ReviewerConfig, TierConfig
from engine.errors import ConfigError, TierUnavailable
from engine.types import ContextPack, RegimeInfo, RegimeTag, Side, Signal, TradeStats, Verdict, VerdictKind
from reviewer import TIERS, Cascade, CircuitBreaker
from reviewer.rules import RulesTier
from reviewer.scripted import ScriptedTier

FALLBACK = Verdict(VerdictKind.ACCEPT, 0.0, "fail open", source="fallback")
VETO = Verdict(VerdictKind.VETO, 0.8, "no")
ACCEPT = Verdict(VerdictKind.ACCEPT, 0.7, "fine")


def pack(i: int = 0) -> ContextPack:
    sig = Signal(f"sig-{i}", "strat", "BTC/USDT", Side.LONG, 1_700_000_000_000 + i, 100.0, 95.0, 110.0, 0.1, "5m",
                 ("style:trend",))
    return ContextPack.build(signal=sig, recent_trades=(), trade_stats=TradeStats(0, None, 0),
                             regime=RegimeInfo(RegimeTag.TRENDING, 1.4, 0.5, 50.0, 96, 8), correlated=(), news=(),
                             gate_note="ok", equity=10_000.0)


def cascade(*tiers: ScriptedTier, deadline_s: float = 5.0, threshold: int = 3, clock: Any = time.monotonic,
            cache: Any = None) -> Cascade:
    breakers = {t.name: CircuitBreaker(t.name, threshold, 30.0, clock=clock) for t in tiers}
    return Cascade(list(tiers), breakers=breakers, deadline_s=deadline_s, fallback=FALLBACK, cache=cache,
                   clock_s=time.monotonic)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


class DictCache:
    def __init__(self) -> None:
        self.data: dict[tuple[str, str, str, str], Verdict] = {}

    def get(self, tier: str, model: str, prompt_version: str, context_hash: str) -> Verdict | None:
        return self.data.get((tier, model, prompt_version, context_hash))

    def put(self, tier: str, model: str, prompt_version: str, context_hash: str, verdict: Verdict) -> None:
        self.data[(tier, model, prompt_version, context_hash)] = verdict


# ----------------------------------------------------------------------------------------- order


def test_first_tier_answers_and_later_tiers_are_not_called() -> None:
    a, b = ScriptedTier(script=[VETO], name="a"), ScriptedTier(script=[ACCEPT], name="b")
    v = run(cascade(a, b).review(pack()))
    assert v.verdict is VerdictKind.VETO and v.confidence == 0.8
    assert v.source == "a" and v.tier == "a" and v.latency_ms >= 0
    assert [(x.tier, x.ok, x.kind) for x in v.attempts] == [("a", True, "ok")]
    assert (a.calls, b.calls) == (1, 0)


def test_any_exception_moves_to_the_next_tier() -> None:
    a = ScriptedTier(script=[RuntimeError("boom")], name="a")
    b = ScriptedTier(script=[TierUnavailable("429", kind="rate_limit")], name="b")
    c = ScriptedTier(script=["hang"], name="c", timeout_s=0.05)
    d = ScriptedTier(script=[ACCEPT], name="d")
    v = run(cascade(a, b, c, d).review(pack()))
    assert v.source == "d" and v.verdict is VerdictKind.ACCEPT
    assert [(x.tier, x.kind) for x in v.attempts] == [("a", "error"), ("b", "rate_limit"), ("c", "timeout"),
                                                      ("d", "ok")]
    assert "RuntimeError: boom" in v.attempts[0].error
    assert c.cancelled == 1  # the hang was really cut off by the tier timeout
    assert v.attempts[2].latency_ms >= 40


def test_a_tier_that_answers_nonsense_is_a_failure() -> None:
    a = ScriptedTier(script=[lambda p: {"verdict": "veto"}], name="a")
    b = ScriptedTier(script=[ACCEPT], name="b")
    v = run(cascade(a, b).review(pack()))
    assert v.source == "b" and v.attempts[0].kind == "bad_reply"


def test_a_tier_raising_cancelled_error_by_itself_is_a_failure_not_a_cancellation() -> None:
    a = ScriptedTier(script=[asyncio.CancelledError("sdk bug")], name="a")
    b = ScriptedTier(script=[ACCEPT], name="b")
    vs = run(cascade(a, b).review_many([pack(1), pack(2)]))
    assert [v.source for v in vs] == ["b", "b"]
    assert vs[0].attempts[0].kind == "error"


def test_all_tiers_fail_gives_the_fallback() -> None:
    a = ScriptedTier(script=[RuntimeError("x")], name="a")
    b = ScriptedTier(script=[{"raise": "bad_reply"}], name="b")
    c = cascade(a, b)
    v = run(c.review(pack()))
    assert (v.verdict, v.confidence, v.source) == (VerdictKind.ACCEPT, 0.0, "fallback")
    assert [x.kind for x in v.attempts] == ["error", "bad_reply"]
    assert v.error.startswith("every tier failed: a: error") and "b: bad_reply" in v.error
    assert c.fallbacks == 1


def test_hanging_tiers_fall_back_within_about_the_deadline() -> None:
    a = ScriptedTier(script=["hang"], name="a", timeout_s=0.15)
    b = ScriptedTier(script=["hang"], name="b", timeout_s=30)
    t0 = time.perf_counter()
    v = run(cascade(a, b, deadline_s=0.4).review(pack()))
    took = time.perf_counter() - t0
    assert 0.35 <= took < 2.0
    assert v.source == "fallback" and v.verdict is VerdictKind.ACCEPT and v.confidence == 0.0
    assert [x.kind for x in v.attempts] == ["timeout", "deadline"]
    assert v.error.startswith("cascade deadline 0.4 s exceeded")
    assert b.cancelled == 1


def test_no_tiers_falls_back() -> None:
    v = run(Cascade([], breakers={}, deadline_s=1, fallback=FALLBACK).review(pack()))
    assert v.source == "fallback" and v.error == "no tier enabled"


def test_veto_fallback_is_configurable() -> None:
    cfg = ReviewerConfig(tiers=[TierConfig(name="x", provider="scripted", params={"script": [{"raise": "error"}]})],
                         fallback={"verdict": "veto", "confidence": 0.4})
    v = run(build_reviewer(cfg, cache=None).review(pack()))
    assert (v.verdict, v.confidence, v.source) == (VerdictKind.VETO, 0.4, "fallback")


def test_cancellation_propagates() -> None:
    c = cascade(ScriptedTier(script=["hang"], name="a"))

    async def main() -> None:
        task = asyncio.create_task(c.review(pack()))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    assert c.breakers["a"].failures == 0  # neutral for the breaker too


# -------------------------------------------------------------------------------------- breakers


def test_breaker_opens_after_threshold_then_the_tier_is_skipped_instantly() -> None:
    t = [0.0]
    a = ScriptedTier(script=[RuntimeError("down")], name="a")
    b = ScriptedTier(script=[ACCEPT], name="b")
    c = cascade(a, b, threshold=3, clock=lambda: t[0])

    async def main() -> list[Verdict]:
        return [await c.review(pack(i)) for i in range(6)]

    vs = run(main())
    assert a.calls == 3  # the fourth review onwards never reach it
    assert all(v.source == "b" for v in vs)
    assert [x.kind for x in vs[2].attempts] == ["error", "ok"]
    skipped = vs[3].attempts[0]
    assert (skipped.tier, skipped.ok, skipped.kind) == ("a", False, "breaker_open")
    assert skipped.latency_ms < 50  # microseconds in practice; generous for a loaded CI machine
    events = c.drain_events()
    assert [(e.kind, e.subject, e.message) for e in events] == [
        ("breaker", "a", "closed → open after 3 consecutive failures (last: RuntimeError)")]
    assert c.drain_events() == []
    assert c.stats["a"].failures == {"error": 3, "breaker_open": 3}

    # recovery: the fake clock passes the recovery timeout, the tier works again, the probe closes it
    a._steps = ScriptedTier(script=[ACCEPT])._steps
    t[0] = 31.0
    v = run(c.review(pack(99)))
    assert v.source == "a"
    assert [e.message for e in c.drain_events()] == [
        "open → half_open after 30 s open: admitting one probe", "half_open → closed probe succeeded"]


def test_timeouts_count_as_breaker_failures() -> None:
    a = ScriptedTier(script=["hang"], name="a", timeout_s=0.02)
    b = ScriptedTier(script=[ACCEPT], name="b")
    c = cascade(a, b, threshold=2)

    async def main() -> None:
        for i in range(4):
            await c.review(pack(i))

    run(main())
    assert a.calls == 2 and c.breakers["a"].state == "open"
    assert c.drain_events()[0].message == "closed → open after 2 consecutive failures (last: timeout)"


# ------------------------------------------------------------------------------------ concurrency


def test_concurrency_cap_is_respected() -> None:
    a = ScriptedTier(script=[0.02], name="a", max_concurrency=3)
    packs = [pack(i) for i in range(30)]
    vs = run(cascade(a).review_many(packs))
    assert len(vs) == 30 and a.calls == 30
    assert a.max_in_flight == 3


def test_concurrency_cap_also_holds_for_the_second_tier() -> None:
    a = ScriptedTier(script=[RuntimeError("x")], name="a", max_concurrency=50)
    b = ScriptedTier(script=[0.01], name="b", max_concurrency=2)
    vs = run(cascade(a, b, threshold=1000).review_many([pack(i) for i in range(20)]))
    assert all(v.source == "b" for v in vs)
    assert b.max_in_flight == 2


def test_reviews_run_concurrently() -> None:
    a = ScriptedTier(script=[0.2], name="a", max_concurrency=100)
    t0 = time.perf_counter()
    vs = run(cascade(a).review_many([pack(i) for i in range(100)]))
    assert time.perf_counter() - t0 < 5.0  # serially it would be 20 s
    assert all(v.source == "a" for v in vs) and a.max_in_flight == 100


def test_order_is_preserved_whatever_finishes_first() -> None:
    async def answer(p: ContextPack) -> Verdict:
        i = int(p.signal.id.split("-")[1])
        await asyncio.sleep(0.001 * ((i * 7) % 11))
        return Verdict(VerdictKind.ACCEPT, 0.5, p.signal.id)

    a = ScriptedTier(script=answer, name="a", max_concurrency=4)
    packs = [pack(i) for i in range(25)]
    vs = run(cascade(a).review_many(packs))
    assert [v.rationale for v in vs] == [p.signal.id for p in packs]


def test_cascade_is_reusable_across_event_loops() -> None:
    a = ScriptedTier(script=[0.001], name="a", max_concurrency=1)
    c = cascade(a)
    for _ in range(3):
        assert [v.source for v in run(c.review_many([pack(i) for i in range(3)]))] == ["a"] * 3


# ------------------------------------------------------------------------------------------ cache


def test_cache_hit_returns_source_cache_and_skips_the_tier() -> None:
    cache = DictCache()
    a = ScriptedTier(script=[VETO], name="a", model="m1")
    c = cascade(a, cache=cache)
    first = run(c.review(pack(1)))
    second = run(c.review(pack(1)))
    assert first.source == "a" and second.source == "cache" and second.tier == "a"
    assert second.verdict is VerdictKind.VETO and second.confidence == 0.8
    assert [x.kind for x in second.attempts] == ["cache"]
    assert a.calls == 1
    assert list(cache.data) == [("a", "m1", "scripted-v1", pack(1).hash)]
    assert run(c.review(pack(2))).source == "a"  # another pack: a miss
    assert c.stats["a"].cache_hits == 1


def test_review_cached_answers_a_batch_as_review_would_and_leaves_misses_to_a_full_review() -> None:
    cache = DictCache()
    a = ScriptedTier(script=[VETO, ACCEPT], name="a", model="m1")
    c = cascade(a, cache=cache)
    fresh = [run(c.review(pack(i))) for i in (1, 2)]
    hashes = [pack(1).hash, pack(3).hash, pack(2).hash, pack(1).hash]
    got = c.review_cached(hashes)
    assert got[1] is None  # pack 3 was never reviewed: a miss, not counted
    assert [(v.verdict, v.confidence, v.rationale, v.source, v.tier) for v in (got[0], got[2], got[3])] == [
        (fresh[0].verdict, 0.8, "no", "cache", "a"), (fresh[1].verdict, 0.7, "fine", "cache", "a"),
        (fresh[0].verdict, 0.8, "no", "cache", "a")]
    assert got[0] == got[3] and got[0] != got[2]  # the answers of one cached verdict are equal
    assert all([x.kind for x in v.attempts] == ["cache"] and v.latency_ms >= 0 and v.reviewed_at_ms == 0
               for v in (got[0], got[2]))
    assert (c.reviews, c.stats["a"].cache_hits, a.calls) == (2 + 3, 3, 2)
    assert c.review_cached([pack(4).hash]) == [None] and c.reviews == 5
    c.mode = "off"
    assert c.review_cached(hashes) == [None] * 4


class BatchCache(DictCache):
    """A cache that answers many hashes at once (``BatchVerdictCache``): counts its calls, may fail."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.batches: list[int] = []

    def get_many(self, tier: str, model: str, prompt_version: str, context_hashes: Any) -> list[Verdict | None]:
        self.batches.append(len(context_hashes))
        if self.fail:
            raise OSError("cache gone")
        return [self.data.get((tier, model, prompt_version, h)) for h in context_hashes]


@pytest.mark.parametrize("batch", [False, True])
def test_review_cached_gives_one_answer_object_per_cached_verdict(batch: bool) -> None:
    cache = BatchCache() if batch else DictCache()
    c = cascade(ScriptedTier(script=[VETO, ACCEPT], name="a", model="m1"), cache=cache)
    fresh = [run(c.review(pack(i))) for i in (1, 2)]
    got = c.review_cached([pack(1).hash, pack(2).hash, pack(1).hash, "", pack(9).hash, pack(1).hash])
    assert got[0] is got[2] is got[5] and got[0] is not got[1]  # frozen and equal: one object
    assert got[3] is None and got[4] is None  # no hash, and a miss
    assert (got[0].rationale, got[1].rationale) == (fresh[0].rationale, fresh[1].rationale)
    assert c.stats["a"].cache_hits == 4 and c.reviews == 2 + 4
    if batch:
        assert cache.batches == [6]  # one call for the batch (a review looks one pack up)


def test_a_batch_cache_that_fails_is_a_miss_for_the_whole_batch() -> None:
    cache = BatchCache(fail=True)
    c = cascade(ScriptedTier(script=[VETO], name="a", model="m1"), cache=cache)
    assert c.review_cached([pack(1).hash, pack(2).hash]) == [None, None]
    assert c.cache_errors == 1 and c.reviews == 0


def test_cache_is_keyed_by_prompt_version() -> None:
    cache = DictCache()
    run(cascade(ScriptedTier(script=[VETO], name="a"), cache=cache).review(pack()))
    other = ScriptedTier(script=[ACCEPT], name="a", prompt_version="v2")
    v = run(cascade(other, cache=cache).review(pack()))
    assert v.source == "a" and other.calls == 1


def test_fallbacks_are_not_cached_and_a_broken_cache_is_a_miss() -> None:
    class Broken:
        def get(self, *a: Any) -> Verdict | None:
            raise OSError("disk gone")

        def put(self, *a: Any) -> None:
            raise OSError("disk gone")

    c = cascade(ScriptedTier(script=[ACCEPT], name="a"), cache=Broken())
    assert run(c.review(pack())).source == "a"
    assert c.cache_errors == 2
    cache = DictCache()
    run(cascade(ScriptedTier(script=[RuntimeError()], name="a"), cache=cache).review(pack()))
    assert cache.data == {}


# ------------------------------------------------------------------------------------ mode, close


def test_mode_is_settable_and_checked() -> None:
    a = ScriptedTier(script=[VETO], name="a")
    c = cascade(a)
    assert c.mode == "active"
    c.mode = "shadow"
    assert run(c.review(pack())).source == "a"  # shadow still reviews (the verdict is stored and scored)
    c.mode = "off"
    v = run(c.review(pack()))
    assert (v.source, v.verdict, a.calls) == ("off", VerdictKind.ACCEPT, 1)
    with pytest.raises(ValueError):
        c.mode = "passive"


def test_aclose_closes_every_tier_even_when_one_fails() -> None:
    class BadClose(ScriptedTier):
        async def aclose(self) -> None:
            raise RuntimeError("socket")

    a, b = BadClose(name="a"), ScriptedTier(name="b")
    c = cascade(a, b)
    run(c.aclose())
    assert b.closed
    assert [e.subject for e in c.drain_events()] == ["a"]


def test_stats_count_calls_successes_and_failures() -> None:
    a = ScriptedTier(script=[RuntimeError(), ACCEPT], name="a")
    b = ScriptedTier(script=[ACCEPT], name="b")
    c = cascade(a, b)

    async def main() -> None:
        for i in range(4):
            await c.review(pack(i))

    run(main())
    assert (c.stats["a"].calls, c.stats["a"].successes, dict(c.stats["a"].failures)) == (4, 2, {"error": 2})
    assert c.stats["b"].successes == 2 and c.reviews == 4
    snap = c.stats["a"].snapshot()
    assert snap["p50_ms"] is not None and snap["calls"] == 4


# ---------------------------------------------------------------------------------------- building


class KeyedTier(ScriptedTier):
    seen_keys: ClassVar[list[str | None]] = []

    def __init__(self, cfg: TierConfig, api_key: str | None) -> None:
        super().__init__(cfg, api_key)
        KeyedTier.seen_keys.append(api_key)


def test_build_reviewer_from_config() -> None:
    cfg = ReviewerConfig(deadline_s=3, mode="shadow", tiers=[
        TierConfig(name="llm", provider="keyed", api_key_env="FAKE_KEY", max_concurrency=2,
                   breaker={"failure_threshold": 2, "recovery_timeout_s": 7}),
        TierConfig(name="off_one", provider="anthropic", api_key_env="UNSET_KEY"),
        TierConfig(name="script", provider="scripted", params={"script": [{"verdict": "veto", "confidence": 0.9}]}),
        TierConfig(name="rules", provider="rules"),
    ])
    KeyedTier.seen_keys.clear()
    c = build_reviewer(cfg, cache=None, disabled=["off_one"], registry={**TIERS, "keyed": KeyedTier},
                       env={"FAKE_KEY": "sk-test"})
    assert [t.name for t in c.tiers] == ["llm", "script", "rules"]
    assert isinstance(c.tiers[2], RulesTier)
    assert KeyedTier.seen_keys == ["sk-test"]
    assert c.mode == "shadow" and c.deadline_s == 3
    br = c.breakers["llm"]
    assert (br.failure_threshold, br.recovery_timeout_s) == (2, 7)
    v = run(c.review(pack()))
    assert v.source == "llm"


def test_build_reviewer_unknown_provider_suggests_the_closest() -> None:
    cfg = ReviewerConfig(tiers=[TierConfig(name="x", provider="antropic")])
    with pytest.raises(ConfigError) as e:
        build_reviewer(cfg, cache=None)
    msg = str(e.value)
    assert msg.startswith("reviewer.tiers[0].provider: unknown tier provider 'antropic'")
    assert "openai_compatible" in msg and "did you mean 'anthropic'?" in msg


def test_build_reviewer_loads_module_class_user_code() -> None:
    cfg = ReviewerConfig(tiers=[TierConfig(name="user", provider="reviewer.scripted:ScriptedTier")])
    c = build_reviewer(cfg, cache=None)
    assert isinstance(c.tiers[0], ScriptedTier)
    bad = ReviewerConfig(tiers=[TierConfig(name="user", provider="no_such_module_xyz:Tier")])
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module_xyz'"):
        build_reviewer(bad, cache=None)


def test_build_reviewer_refuses_a_missing_key_and_bad_params() -> None:
    cfg = ReviewerConfig(tiers=[TierConfig(name="x", provider="scripted", api_key_env="NOT_SET_ANYWHERE")])
    with pytest.raises(ConfigError, match="environment variable NOT_SET_ANYWHERE is not set"):
        build_reviewer(cfg, cache=None, env={})
    cfg = ReviewerConfig(tiers=[TierConfig(name="rules", provider="rules", params={"veto_streek": 4})])
    with pytest.raises(ConfigError, match=r"reviewer\.tiers\[0\]\.params\.veto_streek"):
        build_reviewer(cfg, cache=None)


def test_default_config_builds_the_rules_tier_only_and_imports_no_sdk() -> None:
    c = build_reviewer(ReviewerConfig(), cache=None)
    assert [t.name for t in c.tiers] == ["rules"]
    # a fresh interpreter: other test files in this worker may have imported the SDKs already
    code = ("import sys; from engine.config import ReviewerConfig; from engine.app import build_reviewer; "
            "build_reviewer(ReviewerConfig(), cache=None); "
            "print(sorted(m for m in ('anthropic', 'openai', 'reviewer.tiers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"


def sources(vs: Sequence[Verdict]) -> list[str]:
    return [v.source for v in vs]


def test_scripted_tier_from_plain_config_data() -> None:
    cfg = TierConfig(name="s", provider="scripted", timeout_s=0.05, params={"script": [
        "veto", {"delay": 0.001, "then": {"verdict": "modify", "confidence": 0.6, "modified_size_pct": 50}},
        {"raise": "timeout"}, "hang"], "cycle": False})
    s = ScriptedTier(cfg, None)
    c = Cascade([s], breakers={}, deadline_s=5, fallback=FALLBACK)

    async def main() -> list[Verdict]:
        return [await c.review(pack(i)) for i in range(5)]

    vs = run(main())
    assert sources(vs) == ["s", "s", "fallback", "fallback", "fallback"]
    assert vs[1].modified_size_pct == 50
    assert [vs[i].attempts[0].kind for i in (2, 3, 4)] == ["timeout", "timeout", "timeout"]  # last step repeats
    with pytest.raises(ConfigError):
        ScriptedTier(TierConfig(name="s", provider="scripted", params={"script": [{"raise": "meteor"}]}), None)


def test_a_cached_verdict_is_the_stored_one_restamped() -> None:
    import dataclasses

    from engine.types import TierAttempt, Verdict, VerdictKind
    from reviewer.cascade import _from_cache_verdict

    stored = Verdict(VerdictKind.MODIFY, 0.8, "why", 50.0, 95.5, "sonnet", "sonnet", "m-1", "pv3", 812.5, 3400, 120,
                     3000, 0.0123, "", '{"verdict":"modify"}')
    attempts = (TierAttempt("sonnet", True, "cache", 0.2),)
    got = _from_cache_verdict(stored, "sonnet", 0.2, attempts)
    assert got == dataclasses.replace(stored, source="cache", tier="sonnet", latency_ms=0.2, attempts=attempts)
    assert got.source == "cache" and got.cost_usd == 0.0123 and got.attempts == attempts
