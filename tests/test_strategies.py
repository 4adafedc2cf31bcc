"""Bundled strategies: each fires exactly where a reference computation says it should on a price path built
to trigger it, not on a flat path; stop/target from ATR and rr; tags; deterministic ids; bad params."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from engine.app import build_strategies
from engine.core.market import SymbolHistory
from engine.errors import ConfigError
from engine.ports import Strategy
from engine.types import Bar, Side, Signal
from strategies import REGISTRY, DonchianBreakout, RsiReversion, SmaCross
from tests.conftest import (
    SYM,
    TF,
    bars_from_closes,
    make_config,
    ref_atr,
    ref_highest,
    ref_lowest,
    ref_rsi,
    ref_sma,
)


def run(strategy: Strategy, bars: list[Bar]) -> dict[int, Signal]:
    """Feed bars one by one; {bar index: signal}."""
    h = SymbolHistory(bars[0].symbol, TF)
    out: dict[int, Signal] = {}
    for i, b in enumerate(bars):
        h.append(b)
        sig = strategy.evaluate(h)
        if sig is not None:
            out[i] = sig
    return out


def arrays(bars: list[Bar]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([b.high for b in bars]), np.array([b.low for b in bars]), np.array([b.close for b in bars]))


def defined(*xs: float) -> bool:
    return all(not math.isnan(x) for x in xs)


def check_levels(sig: Signal, bar: Bar, atr: float, atr_stop: float, rr: float, side: Side) -> None:
    dist = atr_stop * atr
    assert sig.side is side
    assert sig.entry == bar.close
    assert sig.created_ms == bar.close_ms
    assert sig.stop_loss == pytest.approx(bar.close - side.sign * dist, rel=1e-9)
    assert sig.take_profit == pytest.approx(bar.close + side.sign * rr * dist, rel=1e-9)
    assert sig.risk_per_unit == pytest.approx(dist, rel=1e-9)
    if side is Side.LONG:
        assert sig.stop_loss < sig.entry < sig.take_profit
    else:
        assert sig.take_profit < sig.entry < sig.stop_loss


def flat_bars(n: int = 200) -> list[Bar]:
    return bars_from_closes(np.full(n, 100.0), wick=0.003)


# ---------------------------------------------------------------------------------------- sma cross


def v_path() -> np.ndarray:
    """Down, up, down: two crosses of a fast SMA over a slow one, plus noise."""
    rng = np.random.default_rng(11)
    legs = np.concatenate([np.linspace(120, 100, 40), np.linspace(100, 125, 40), np.linspace(125, 105, 40)])
    return legs + rng.normal(0, 0.15, len(legs))


def test_sma_cross_fires_exactly_at_the_crosses() -> None:
    params = {"fast": 3, "slow": 8, "atr_period": 5, "atr_stop": 2.0, "rr": 2.5, "size_hint": 0.2}
    bars = bars_from_closes(v_path())
    hi, lo, c = arrays(bars)
    f, s, atr = ref_sma(c, 3), ref_sma(c, 8), ref_atr(hi, lo, c, 5)
    want: dict[int, Side] = {}
    for i in range(1, len(c)):
        if not defined(f[i - 1], s[i - 1], f[i], s[i], atr[i]):
            continue
        if f[i - 1] <= s[i - 1] and f[i] > s[i]:
            want[i] = Side.LONG
        elif f[i - 1] >= s[i - 1] and f[i] < s[i]:
            want[i] = Side.SHORT
    assert Side.LONG in want.values() and Side.SHORT in want.values()

    got = run(SmaCross("sma_t", params), bars)
    assert {i: sig.side for i, sig in got.items()} == want
    for i, sig in got.items():
        check_levels(sig, bars[i], atr[i], 2.0, 2.5, want[i])
        assert sig.size_hint == 0.2
        assert sig.tags[0] == "style:trend"
        assert sig.tags[1] == ("sma_cross_up" if sig.side is Side.LONG else "sma_cross_down")
        assert sig.strategy_id == "sma_t" and sig.symbol == SYM and sig.timeframe == "5m"


def test_sma_cross_silent_on_a_flat_path() -> None:
    assert run(SmaCross("sma_t", {"fast": 3, "slow": 8, "atr_period": 5}), flat_bars()) == {}


def test_sma_cross_first_crossing_after_a_flat_start() -> None:
    closes = np.concatenate([np.full(20, 100.0), [101.0, 102.0, 103.0]])
    got = run(SmaCross("s", {"fast": 2, "slow": 5, "atr_period": 3}), bars_from_closes(closes))
    assert list(got) == [20] and got[20].side is Side.LONG


# --------------------------------------------------------------------------------------- donchian


def breakout_path() -> np.ndarray:
    rng = np.random.default_rng(5)
    rangebound = 100 + rng.uniform(-1, 1, 40)
    up = np.array([103.0, 104.0, 105.5, 106.0])  # one breakout, then a running breakout that must not re-fire
    back = 104 + rng.uniform(-1, 1, 30)
    down = np.array([98.0, 97.0, 95.0])
    return np.concatenate([rangebound, up, back, down])


def test_donchian_fires_on_the_first_close_beyond_the_channel_only() -> None:
    period = 10
    params = {"period": period, "atr_period": 5, "atr_stop": 1.5, "rr": 2.0}
    bars = bars_from_closes(breakout_path(), wick=0.001)
    hi, lo, c = arrays(bars)
    up, dn, atr = ref_highest(hi, period), ref_lowest(lo, period), ref_atr(hi, lo, c, 5)
    want: dict[int, Side] = {}
    for i in range(1, len(c)):
        if not defined(up[i], dn[i], atr[i]):
            continue
        if c[i] > up[i] and not (defined(up[i - 1]) and c[i - 1] > up[i - 1]):
            want[i] = Side.LONG
        elif c[i] < dn[i] and not (defined(dn[i - 1]) and c[i - 1] < dn[i - 1]):
            want[i] = Side.SHORT
    assert 40 in want and want[40] is Side.LONG  # the designed breakout
    assert 41 not in want  # running breakout: no second signal
    assert Side.SHORT in want.values()

    got = run(DonchianBreakout("don", params), bars)
    assert {i: sig.side for i, sig in got.items()} == want
    for i, sig in got.items():
        check_levels(sig, bars[i], atr[i], 1.5, 2.0, want[i])
        assert sig.tags == ("style:breakout", "donchian_high" if sig.side is Side.LONG else "donchian_low")


def test_donchian_silent_on_a_flat_path() -> None:
    assert run(DonchianBreakout("don", {"period": 10, "atr_period": 5}), flat_bars()) == {}


# ------------------------------------------------------------------------------------------- rsi


def swing_path() -> np.ndarray:
    return np.concatenate([
        np.linspace(100, 110, 15),
        np.linspace(110, 90, 15),  # sell-off: oversold
        np.linspace(90, 95, 10),  # recovery: RSI leaves oversold → long
        np.linspace(95, 115, 20),  # rally: overbought
        np.linspace(115, 108, 10),  # pull-back: RSI leaves overbought → short
    ]) + np.random.default_rng(3).normal(0, 0.05, 70)


def test_rsi_reversion_fires_when_rsi_leaves_the_extremes() -> None:
    params = {"period": 5, "lower": 30, "upper": 70, "atr_period": 5, "atr_stop": 1.5, "rr": 1.5}
    bars = bars_from_closes(swing_path())
    hi, lo, c = arrays(bars)
    rsi, atr = ref_rsi(c, 5), ref_atr(hi, lo, c, 5)
    want: dict[int, Side] = {}
    for i in range(1, len(c)):
        if not defined(rsi[i - 1], rsi[i], atr[i]):
            continue
        if rsi[i - 1] < 30 <= rsi[i]:
            want[i] = Side.LONG
        elif rsi[i - 1] > 70 >= rsi[i]:
            want[i] = Side.SHORT
    assert Side.LONG in want.values() and Side.SHORT in want.values()
    assert all(30 <= i < 45 for i, s in want.items() if s is Side.LONG)

    got = run(RsiReversion("rsi", params), bars)
    assert {i: sig.side for i, sig in got.items()} == want
    for i, sig in got.items():
        check_levels(sig, bars[i], atr[i], 1.5, 1.5, want[i])
        assert sig.tags == ("style:mean_reversion",
                            "rsi_oversold_exit" if sig.side is Side.LONG else "rsi_overbought_exit")


def test_rsi_reversion_silent_on_a_flat_path() -> None:
    assert run(RsiReversion("rsi", {"period": 5, "atr_period": 5}), flat_bars()) == {}


# -------------------------------------------------------------------------------------- common


@pytest.mark.parametrize(
    ("cls", "params", "closes"),
    [
        (SmaCross, {"fast": 3, "slow": 8, "atr_period": 5}, v_path),
        (DonchianBreakout, {"period": 10, "atr_period": 5}, breakout_path),
        (RsiReversion, {"period": 5, "atr_period": 5}, swing_path),
    ],
)
def test_signal_ids_are_deterministic_and_unique(cls, params, closes) -> None:  # type: ignore[no-untyped-def]
    bars = bars_from_closes(closes())
    a = run(cls("strat_a", params), bars)
    b = run(cls("strat_a", params), bars)
    other = run(cls("strat_b", params), bars)
    assert a and a == b  # same bars, same params → identical signals, ids included
    ids = [s.id for s in a.values()]
    assert len(set(ids)) == len(ids)
    assert {s.id for s in other.values()}.isdisjoint(ids)
    for i, s in a.items():
        assert s.id == f"strat_a:{SYM}:{bars[i].close_ms}"
        assert isinstance(cls("x", params), Strategy)


def test_degenerate_stop_gives_no_signal() -> None:
    # a stop 1000 ATRs away would be below zero for a long: no signal rather than a nonsense one
    bars = bars_from_closes(v_path())
    assert run(SmaCross("s", {"fast": 3, "slow": 8, "atr_period": 5, "atr_stop": 1000.0}), bars) == {}


def test_registry_names() -> None:
    want = {"sma_cross": SmaCross, "donchian_breakout": DonchianBreakout, "rsi_reversion": RsiReversion}
    assert dict(REGISTRY) == want
    assert {c.style for c in REGISTRY.values()} == {"trend", "breakout", "mean_reversion"}


@pytest.mark.parametrize(
    ("cls", "params", "needle"),
    [
        (SmaCross, {"fast": 48, "slow": 12}, "fast must be < slow"),
        (SmaCross, {"fast": 12, "slow": 12}, "fast must be < slow"),
        (RsiReversion, {"lower": 70, "upper": 30}, "lower must be < upper"),
        (RsiReversion, {"lower": 50, "upper": 50}, "lower must be < upper"),
        (DonchianBreakout, {"period": 1}, "period"),
        (SmaCross, {"atr_stop": 0}, "atr_stop"),
        (SmaCross, {"size_hint": 1.5}, "size_hint"),
        (SmaCross, {"fats": 3}, "fats"),
    ],
)
def test_bad_params_are_rejected(cls, params, needle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match=needle):
        cls("x", params)


def test_bad_params_through_config_name_the_strategy() -> None:
    cfg = make_config({"strategies": [
        {"id": "ok", "kind": "rsi_reversion"},
        {"id": "bad", "kind": "sma_cross", "params": {"fast": 48, "slow": 12}},
    ]})
    with pytest.raises(ConfigError) as ei:
        build_strategies(cfg)
    assert str(ei.value).startswith("strategies[1].params: fast must be < slow (got fast=48, slow=12)")

    cfg = make_config({"strategies": [{"id": "bad", "kind": "rsi_reversion", "params": {"lower": 80}}]})
    with pytest.raises(ConfigError, match=r"^strategies\[0\]\.params: lower must be < upper"):
        build_strategies(cfg)


def test_unknown_strategy_kind_suggests_the_closest() -> None:
    cfg = make_config({"strategies": [{"id": "x", "kind": "sma_crosss"}]})
    with pytest.raises(ConfigError) as ei:
        build_strategies(cfg)
    assert str(ei.value) == ("strategies[0].kind: unknown strategy kind 'sma_crosss' (known: donchian_breakout, "
                             "rsi_reversion, sma_cross); did you mean 'sma_cross'?")


def test_configured_strategies_get_symbols_and_timeframe() -> None:
    cfg = make_config({"market": {"timeframe": "1h"},
                       "strategies": [{"id": "a", "kind": "sma_cross", "symbols": ["ETH/USDT"]},
                                      {"id": "b", "kind": "donchian_breakout"}]})
    a, b = build_strategies(cfg)
    assert a.symbols == ("ETH/USDT",) and b.symbols is None
    assert a.timeframe == b.timeframe == "1h"
