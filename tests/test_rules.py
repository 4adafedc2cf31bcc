"""RulesTier: each rule on a hand-built pack, combinations, the accept path, determinism, params."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.config import TierConfig
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
    Verdict,
    VerdictKind,
)
from reviewer.rules import RULES_VERSION, RulesParams, RulesTier

ACCEPT, MODIFY, VETO = VerdictKind.ACCEPT, VerdictKind.MODIFY, VerdictKind.VETO


def make_pack(*, side: Side = Side.LONG, style: str | None = "trend", regime: RegimeTag = RegimeTag.TRENDING,
              streak: int = 0, correlated: Sequence[tuple[Side, float, float | None]] = (),
              news: Sequence[tuple[NewsCategory, float]] = (), vol_pct: float | None = 50.0,
              entry: float = 100.0, stop: float | None = None, losses_closed_h_ago: Sequence[float] = ()
              ) -> ContextPack:
    """A pack with only what the rules read. ``correlated``: (side, size % equity, corr); ``news``: (category, age);
    ``losses_closed_h_ago``: losing trades of the strategy, by how long ago they closed."""
    sl = stop if stop is not None else (95.0 if side is Side.LONG else 105.0)
    tp = entry + (entry - sl) * 2
    tags = (f"style:{style}", "x") if style else ("x",)
    t = 1_735_689_600_000
    sig = Signal("s1", "strat", "ETH/USDT", side, t, entry, sl, tp, 0.1, "5m", tags)
    trades = tuple(TradeSummary("ETH/USDT", Side.LONG, t - int((h + 1) * 3_600_000), t - int(h * 3_600_000), -1.0,
                                -1.0, "stop") for h in sorted(losses_closed_h_ago, reverse=True))
    return ContextPack.build(
        signal=sig,
        recent_trades=trades,
        trade_stats=TradeStats(10, 0.4, streak),
        regime=RegimeInfo(regime, 1.0, 0.6, vol_pct, 96, 8),
        correlated=tuple(CorrelatedPosition(f"C{i}/USDT", s, size, corr, 0.5, "other")
                         for i, (s, size, corr) in enumerate(correlated)),
        news=tuple(NewsFlag(cat, age, f"headline {i}", "test") for i, (cat, age) in enumerate(news)),
        gate_note="all gates passed",
        equity=10_000.0,
    )


# the rules of rules-v1, every one switched on: most tests below check each rule's logic this way; the
# calibrated defaults (rules-v2: vetoes only on low volatility and adverse news) have their own tests at the end
V1 = {"streak_veto": True, "regime_veto": True, "chop_modify": True, "corr_veto_pct": 35, "low_vol_veto_pct": None}


def review(pack: ContextPack, **params: object) -> Verdict:
    tier = RulesTier(TierConfig(name="rules", provider="rules", params={**V1, **params}), None)
    return asyncio.run(tier.review(pack))


def review_default(pack: ContextPack) -> Verdict:
    return asyncio.run(RulesTier(TierConfig(name="rules", provider="rules"), None).review(pack))


# ------------------------------------------------------------------------------------------ accept


def test_accept_when_nothing_fires() -> None:
    v = review_default(make_pack())
    assert v.verdict is ACCEPT and v.confidence == 0.55
    assert v.modified_size_pct is None and v.modified_sl is None
    assert v.rationale.startswith("Accept: no rule fired") and v.rationale.endswith(".")
    assert (v.source, v.tier, v.model, v.prompt_version) == ("rules", "rules", "rules-v2", "rules-v2")
    assert (v.input_tokens, v.output_tokens, v.cost_usd) == (0, 0, 0.0)


@pytest.mark.parametrize(("style", "regime"), [
    ("trend", RegimeTag.TRENDING), ("breakout", RegimeTag.TRENDING), ("mean_reversion", RegimeTag.MEAN_REVERTING),
    ("mean_reversion", RegimeTag.CHOP), ("trend", RegimeTag.UNKNOWN), (None, RegimeTag.MEAN_REVERTING),
    ("other", RegimeTag.CHOP),
])
def test_fitting_or_unknown_regimes_accept(style: str | None, regime: RegimeTag) -> None:
    assert review(make_pack(style=style, regime=regime)).verdict is ACCEPT


# -------------------------------------------------------------------------------------- each rule


def test_loss_streak_modifies_then_vetoes() -> None:
    assert review(make_pack(streak=2)).verdict is ACCEPT
    v = review(make_pack(streak=3))
    assert (v.verdict, v.modified_size_pct, v.confidence) == (MODIFY, 50, 0.55)
    assert "loss streak of 3 (≥ 3)" in v.rationale
    v = review(make_pack(streak=5))
    assert (v.verdict, v.confidence) == (VETO, 0.65) and "fresh loss streak of 5 (≥ 5)" in v.rationale
    assert review(make_pack(streak=5), veto_streak=8).verdict is MODIFY


def test_an_old_streak_only_cuts_the_size_so_the_strategy_can_trade_out_of_it() -> None:
    fresh = review(make_pack(streak=5, losses_closed_h_ago=[9, 8, 7, 6, 2]))
    assert fresh.verdict is VETO
    stale = review(make_pack(streak=5, losses_closed_h_ago=[13, 12, 11, 10, 7]))
    assert (stale.verdict, stale.modified_size_pct) == (MODIFY, 50)
    assert "loss streak of 5" in stale.rationale and "fresh" not in stale.rationale
    assert review(make_pack(streak=5, losses_closed_h_ago=[13, 12, 11, 10, 7]), streak_fresh_h=8).verdict is VETO


@pytest.mark.parametrize(("style", "regime"), [
    ("trend", RegimeTag.MEAN_REVERTING), ("breakout", RegimeTag.MEAN_REVERTING),
])
def test_strategy_regime_mismatch_vetoes(style: str, regime: RegimeTag) -> None:
    v = review(make_pack(style=style, regime=regime))
    assert (v.verdict, v.confidence) == (VETO, 0.6)
    assert f"{style} signal in a {regime} regime" in v.rationale
    cut = review(make_pack(style=style, regime=regime), regime_veto=False)
    assert cut.verdict is MODIFY and cut.modified_size_pct == 60


def test_mean_reversion_in_a_trend_is_cut_by_default_and_vetoed_on_request() -> None:
    pack = make_pack(style="mean_reversion", regime=RegimeTag.TRENDING)
    v = review(pack)
    assert (v.verdict, v.modified_size_pct) == (MODIFY, 60)
    assert "mean_reversion signal in a trending regime" in v.rationale
    strict = review(pack, mean_reversion_in_trend="veto")
    assert (strict.verdict, strict.confidence) == (VETO, 0.6)
    assert review(pack, mean_reversion_in_trend="veto", regime_veto=False).verdict is MODIFY


@pytest.mark.parametrize("style", ["trend", "breakout"])
def test_trend_in_chop_is_sized_down(style: str) -> None:
    v = review(make_pack(style=style, regime=RegimeTag.CHOP))
    assert (v.verdict, v.modified_size_pct, v.modified_sl) == (MODIFY, 60, None)


def test_correlated_concentration_modifies_then_vetoes() -> None:
    two = [(Side.LONG, 10.0, 0.8), (Side.LONG, 10.0, 0.7)]
    v = review(make_pack(correlated=two))
    assert (v.verdict, v.modified_size_pct) == (MODIFY, 50)
    assert "correlated long-side exposure 20 % of equity (> 15 %)" in v.rationale
    four = [*two, (Side.LONG, 10.0, 0.9), (Side.LONG, 10.0, 1.0)]
    v = review(make_pack(correlated=four))
    assert (v.verdict, v.confidence) == (VETO, 0.7)


@pytest.mark.parametrize("rows", [
    [(Side.SHORT, 30.0, 0.9)],  # other side: an offset, not a concentration
    [(Side.LONG, 30.0, 0.3)],  # weakly correlated
    [(Side.LONG, 30.0, None)],  # unknown correlation
    [(Side.LONG, 30.0, -0.9)],  # same side but anti-correlated: a hedge
    [(Side.LONG, 30.0, float("nan"))],  # a broken number is no evidence
    [(Side.LONG, 10.0, 0.9), (Side.LONG, 5.0, 0.9)],  # within the budget
])
def test_correlation_that_is_not_a_concentration_is_ignored(rows: list[tuple[Side, float, float | None]]) -> None:
    assert review(make_pack(correlated=rows)).verdict is ACCEPT


def test_opposite_side_anticorrelated_positions_count() -> None:
    v = review(make_pack(correlated=[(Side.SHORT, 12.0, -0.9), (Side.LONG, 8.0, 0.95)]))
    assert v.verdict is MODIFY and "exposure 20 %" in v.rationale


@pytest.mark.parametrize("cat", [NewsCategory.HACK, NewsCategory.DELISTING, NewsCategory.REGULATORY,
                                 NewsCategory.OUTAGE])
def test_adverse_news_vetoes_a_long_with_high_confidence(cat: NewsCategory) -> None:
    v = review(make_pack(news=[(cat, 30.0)]))
    assert (v.verdict, v.confidence) == (VETO, 0.9)
    assert f"adverse news ({cat}) against a long" in v.rationale
    # a short on bad news is not against the news
    assert review(make_pack(side=Side.SHORT, news=[(cat, 30.0)])).verdict is ACCEPT


def test_stale_or_neutral_news_is_ignored() -> None:
    assert review(make_pack(news=[(NewsCategory.HACK, 300.0)])).verdict is ACCEPT
    assert review(make_pack(news=[(NewsCategory.OTHER, 5.0)])).verdict is ACCEPT
    assert review(make_pack(news=[(NewsCategory.LISTING, 5.0)])).verdict is ACCEPT  # good news, long


@pytest.mark.parametrize("cat", [NewsCategory.LISTING, NewsCategory.PARTNERSHIP])
def test_positive_news_against_a_short_is_sized_down(cat: NewsCategory) -> None:
    v = review(make_pack(side=Side.SHORT, news=[(cat, 10.0)]))
    assert (v.verdict, v.modified_size_pct) == (MODIFY, 50)
    assert "against a short" in v.rationale


@pytest.mark.parametrize(("side", "stop", "expected"), [(Side.LONG, 95.0, 96.5), (Side.SHORT, 105.0, 103.5)])
def test_very_high_vol_tightens_the_stop(side: Side, stop: float, expected: float) -> None:
    v = review(make_pack(side=side, stop=stop, vol_pct=97.0))
    assert v.verdict is MODIFY and v.modified_size_pct is None
    assert v.modified_sl == pytest.approx(expected)
    assert "volatility percentile 97 (≥ 95)" in v.rationale
    assert review(make_pack(side=side, stop=stop, vol_pct=94.0)).verdict is ACCEPT
    assert review(make_pack(side=side, stop=stop, vol_pct=None)).verdict is ACCEPT


def test_high_vol_with_a_stop_on_the_wrong_side_suggests_no_stop() -> None:
    assert review(make_pack(stop=101.0, vol_pct=99.0)).verdict is ACCEPT


# ------------------------------------------------------------------------------------ combinations


def test_several_modifies_take_the_smallest_size_and_the_tightest_stop() -> None:
    v = review(make_pack(regime=RegimeTag.CHOP, streak=3, vol_pct=99.0))
    assert v.verdict is MODIFY
    assert v.modified_size_pct == 50 and v.modified_sl == pytest.approx(96.5)
    assert v.confidence == pytest.approx(0.55 + 2 * 0.05)  # strongest modify + agreement of two more
    assert v.rationale.count(";") == 2 and v.rationale.endswith(".")


def test_a_veto_beats_modifies_and_agreement_raises_confidence() -> None:
    alone = review(make_pack(regime=RegimeTag.MEAN_REVERTING))
    both = review(make_pack(regime=RegimeTag.MEAN_REVERTING, streak=3))
    assert alone.verdict is both.verdict is VETO
    assert both.confidence > alone.confidence
    assert both.modified_size_pct is None
    assert both.rationale.startswith("Veto: trend signal in a mean_reverting regime; loss streak of 3")


def test_confidence_is_capped() -> None:
    v = review(make_pack(regime=RegimeTag.MEAN_REVERTING, streak=9, news=[(NewsCategory.HACK, 1.0)],
                         correlated=[(Side.LONG, 50.0, 0.9)], vol_pct=100.0))
    assert v.verdict is VETO and v.confidence == 0.95
    assert v.rationale.startswith("Veto: adverse news (hack) against a long;")


# ----------------------------------------------------------------------------------- determinism


def test_same_pack_same_verdict_including_a_rebuilt_pack() -> None:
    p = make_pack(regime=RegimeTag.CHOP, streak=4, vol_pct=96.0, correlated=[(Side.LONG, 20.0, 0.9)])
    rebuilt = ContextPack.from_json(p.json)
    assert rebuilt.hash == p.hash
    assert review(p) == review(p) == review(rebuilt)


packs = st.builds(
    make_pack,
    side=st.sampled_from(list(Side)),
    style=st.sampled_from([None, "trend", "breakout", "mean_reversion", "other"]),
    regime=st.sampled_from(list(RegimeTag)),
    streak=st.integers(0, 30),
    correlated=st.lists(st.tuples(st.sampled_from(list(Side)), st.floats(0, 100),
                                  st.one_of(st.none(), st.floats(-1, 1))), max_size=5),
    news=st.lists(st.tuples(st.sampled_from(list(NewsCategory)), st.floats(0, 400)), max_size=3),
    vol_pct=st.one_of(st.none(), st.floats(0, 100)),
)


@settings(max_examples=300, deadline=None)
@given(pack=packs)
def test_any_well_formed_pack_gets_a_bounded_verdict(pack: ContextPack) -> None:
    v = RulesTier().review_sync(pack)
    assert v.verdict in (ACCEPT, MODIFY, VETO)
    assert 0.0 <= v.confidence <= 0.95
    assert v.rationale.endswith(".") and "\n" not in v.rationale
    if v.modified_size_pct is not None:
        assert v.verdict is MODIFY and 0 < v.modified_size_pct <= 100
    if v.modified_sl is not None:  # only ever a tightening the clamp will accept
        s = pack.signal
        if s.side is Side.LONG:
            assert s.stop_loss <= v.modified_sl < s.entry
        else:
            assert s.entry < v.modified_sl <= s.stop_loss
    if v.verdict is MODIFY:
        assert v.modified_size_pct is not None or v.modified_sl is not None
    assert v == RulesTier().review_sync(pack)


# ------------------------------------------------------------------------------------------ params


def test_params_are_strict_and_ordered() -> None:
    with pytest.raises(ValidationError):
        RulesParams(veto_streek=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="veto_streak must be >= modify_streak"):
        RulesParams(modify_streak=4, veto_streak=3)
    with pytest.raises(ValidationError, match="corr_veto_pct must be >= corr_budget_pct"):
        RulesParams(corr_budget_pct=40, corr_veto_pct=30)
    assert all(f.description for f in RulesParams.model_fields.values())


def test_changed_params_change_the_cache_key() -> None:
    default = RulesTier(TierConfig(name="rules", provider="rules"), None)
    explicit_default = RulesTier(TierConfig(name="rules", provider="rules", params={"veto_streak": 5}), None)
    tuned = RulesTier(TierConfig(name="rules", provider="rules", params={"veto_streak": 6}), None)
    assert default.prompt_version == explicit_default.prompt_version == RULES_VERSION
    assert tuned.prompt_version.startswith(RULES_VERSION + "+") and tuned.prompt_version != RULES_VERSION
    assert tuned.model == default.model == RULES_VERSION


# ------------------------------------------------------------------------ calibrated defaults (rules-v2)


def test_by_default_only_low_volatility_and_adverse_news_veto() -> None:
    low = review_default(make_pack(vol_pct=5.0))
    assert low.verdict is VETO and "volatility percentile 5 (≤ 7)" in low.rationale
    assert review_default(make_pack(vol_pct=7.0)).verdict is VETO  # at the threshold
    assert review_default(make_pack(vol_pct=7.5)).verdict is ACCEPT
    assert review_default(make_pack(news=[(NewsCategory.HACK, 30.0)])).verdict is VETO
    # the fields that did not predict losses on the dev data cut the size instead of vetoing
    streak = review_default(make_pack(streak=7, losses_closed_h_ago=[5, 4, 3, 2, 1]))
    assert streak.verdict is MODIFY and streak.modified_size_pct == 50
    mismatch = review_default(make_pack(style="breakout", regime=RegimeTag.MEAN_REVERTING))
    assert mismatch.verdict is MODIFY and mismatch.modified_size_pct == 60
    crowded = review_default(make_pack(correlated=[(Side.LONG, 50.0, 0.9)]))
    assert crowded.verdict is MODIFY and crowded.modified_size_pct == 50
    # chop, the usual state at the trade's horizon, is silent
    assert review_default(make_pack(style="trend", regime=RegimeTag.CHOP)).verdict is ACCEPT


def test_the_low_volatility_veto_is_a_setting() -> None:
    assert review(make_pack(vol_pct=3.0), low_vol_veto_pct=None).verdict is ACCEPT
    assert review(make_pack(vol_pct=3.0), low_vol_veto_pct=2).verdict is ACCEPT
    assert review(make_pack(vol_pct=None), low_vol_veto_pct=10).verdict is ACCEPT  # unknown vol: no veto
