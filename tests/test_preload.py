"""Preloaded histories (finite replays): the whole series is known in advance, indicators are computed per
column and strategies are evaluated only where their ``candidates`` mask allows — and every answer, signal
and record is the same, to the bit, as bar by bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.app import build_feed, build_pipeline
from engine.config import load_config
from engine.core.market import SymbolHistory
from engine.drivers.replay import fills_fingerprint
from engine.types import Bar, SliceRecord
from strategies.donchian import DonchianBreakout
from strategies.rsi_reversion import RsiReversion
from strategies.sma_cross import SmaCross
from tests.conftest import SYM, TF, bars_from_closes, random_bars, record_digest, step_all

INDICATORS = [("sma", 1), ("sma", 7), ("sma", 48), ("ema", 5), ("ema", 30), ("atr", 14), ("atr", 2), ("rsi", 14),
              ("rsi", 3), ("highest", 48), ("lowest", 20), ("highest", 1)]


def columns(bars: list[Bar]) -> dict[str, np.ndarray]:
    return {"close_ms": np.array([b.close_ms for b in bars], dtype=np.int64),
            "open": np.array([b.open for b in bars]), "high": np.array([b.high for b in bars]),
            "low": np.array([b.low for b in bars]), "close": np.array([b.close for b in bars]),
            "volume": np.array([b.volume for b in bars])}


def pair(bars: list[Bar], keep: int) -> tuple[SymbolHistory, SymbolHistory]:
    plain, pre = SymbolHistory(SYM, TF, keep=keep), SymbolHistory(SYM, TF, keep=keep)
    pre.preload(columns(bars))
    return plain, pre


def with_flats(bars: list[Bar]) -> list[Bar]:
    """Runs of unchanged closes (RSI's 0/0 case, ties in the extremes) inside a random walk."""
    closes = [b.close for b in bars]
    for a in range(50, len(closes) - 40, 97):
        closes[a : a + 30] = [closes[a]] * 30
    return bars_from_closes(closes, wick=0.0)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("keep", [64, 4096])
def test_every_query_answers_the_same_bits_as_bar_by_bar(seed: int, keep: int) -> None:
    bars = random_bars(600, seed) if seed != 3 else with_flats(random_bars(600, seed))
    plain, pre = pair(bars, keep)
    late = {200: [("sma", 30), ("atr", 7)], 450: [("rsi", 9), ("lowest", 5)]}  # asked for mid-run
    asked = list(INDICATORS)
    for i, bar in enumerate(bars):
        plain.append(bar)
        pre.append(bar)
        asked += late.get(i, [])
        for name, n in asked:
            assert plain.indicator(name, n).value == pre.indicator(name, n).value, (name, n, i)
            assert plain.prev(name, n) == pre.prev(name, n), (name, n, i)
        assert pre.buffered == plain.buffered
        assert pre.quote_volume_24h() == plain.quote_volume_24h()
        assert pre.prev_close == plain.prev_close and pre.last == plain.last and len(pre) == len(plain)
        if i % 37 == 0:
            for n in (5, 96, 2000):
                assert np.array_equal(pre.closes(n), plain.closes(n))
            as_of = bar.close_ms - 10 * TF
            assert np.array_equal(pre.closes(50, as_of_ms=as_of), plain.closes(50, as_of_ms=as_of))
            assert np.array_equal(pre.close_times(50, as_of_ms=as_of), plain.close_times(50, as_of_ms=as_of))


def test_values_are_python_floats_not_numpy_scalars() -> None:
    bars = random_bars(100, 5)
    _, pre = pair(bars, 4096)
    pre.sma(10)
    for b in bars:
        pre.append(b)
    assert type(pre.sma(10)) is float and type(pre.quote_volume_24h()) is float


def test_nothing_after_the_last_appended_bar_is_visible() -> None:
    bars = random_bars(300, 6)
    _, pre = pair(bars, 4096)
    for b in bars[:120]:
        pre.append(b)
    assert pre.closes(1000)[-1] == bars[119].close and len(pre.closes(1000)) == 120
    assert pre.last == bars[119] and pre.highest(10) == max(b.high for b in bars[109:119])


def test_a_bar_other_than_the_preloaded_one_is_refused() -> None:
    bars = random_bars(50, 7)
    _, pre = pair(bars, 4096)
    pre.append(bars[0])
    with pytest.raises(ValueError, match="differs from the preloaded series"):
        pre.append(bars[2])
    pre.append(bars[1])
    moved = Bar(SYM, bars[2].open_ms, bars[2].close_ms, bars[2].open, bars[2].high, bars[2].low,
                bars[2].close * 1.001, bars[2].volume)
    with pytest.raises(ValueError, match="differs from the preloaded series"):
        pre.append(moved)


def test_preload_refuses_bad_columns() -> None:
    bars = random_bars(20, 8)
    h = SymbolHistory(SYM, TF)
    cols = columns(bars)
    cols["close_ms"] = cols["close_ms"][::-1].copy()
    with pytest.raises(ValueError, match="not strictly increasing"):
        h.preload(cols)
    h.append(bars[0])
    with pytest.raises(ValueError, match="before the first bar"):
        h.preload(columns(bars))
    with pytest.raises(ValueError, match="needs a preloaded history"):
        h.series("sma", 3)


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
@pytest.mark.parametrize("strategy", [
    SmaCross("s", {"fast": 3, "slow": 8}), SmaCross("s2"), DonchianBreakout("d", {"period": 10}),
    DonchianBreakout("d2"), RsiReversion("r", {"period": 5}), RsiReversion("r2"),
], ids=lambda s: f"{type(s).__name__}-{s.id}")
def test_candidates_never_miss_a_bar_where_evaluate_fires(strategy, seed: int) -> None:  # type: ignore[no-untyped-def]
    bars = random_bars(1500, seed, vol=0.02) if seed != 14 else with_flats(random_bars(1500, seed))
    plain, pre = pair(bars, 4096)
    mask = strategy.candidates(pre)
    assert mask.shape == (len(bars),)
    fired = 0
    for i, bar in enumerate(bars):
        plain.append(bar)
        sig = strategy.evaluate(plain)
        if sig is not None:
            fired += 1
            assert mask[i], f"{strategy.id} fired at bar {i} outside its candidates"
    assert fired > 5  # the data exercises the strategy
    assert fired <= mask.sum() < len(bars) / 4  # and it does skip most bars


def _records(loaded, preload: bool) -> list[SliceRecord]:  # type: ignore[no-untyped-def]
    feed = build_feed(loaded)
    pipe = build_pipeline(loaded, feed=feed, preload=preload)
    assert pipe.market.histories[loaded.config.market.symbols[0]].preloaded is preload
    return step_all(pipe, feed.slices(), loaded.config.execution.starting_equity)


@pytest.mark.parametrize("extra", [
    {},
    {"strategies": [{"id": "sma", "kind": "sma_cross", "params": {"fast": 5, "slow": 20}},
                    {"id": "custom", "kind": "tests.test_preload:EveryBar"}]},
], ids=["default", "with-a-strategy-without-candidates"])
def test_a_preloaded_replay_records_exactly_what_bar_by_bar_records(tmp_path: Path, extra: dict) -> None:
    over = {"run": {"db_url": "sqlite://"}, "market": {"synthetic": {"bars": 1500}}} | extra
    loaded = load_config(overrides=over)
    a, b = _records(loaded, True), _records(loaded, False)
    fills = [f for r in a for f in r.fills]
    assert len(fills) > 5 and sum(len(r.reviews) for r in a) > 20
    assert record_digest(a) == record_digest(b)
    assert fills_fingerprint(fills) == fills_fingerprint(f for r in b for f in r.fills)


class EveryBar(SmaCross):
    """A user strategy without a candidates mask: evaluated on every bar, next to masked ones."""

    def candidates(self, history):  # type: ignore[no-untyped-def,override]
        return None


def test_quote_volume_over_holes_in_time_matches_bar_by_bar() -> None:
    bars = random_bars(2000, 21)
    rng = np.random.default_rng(3)
    holes = [b for i, b in enumerate(bars) if not (300 < i < 700) and rng.random() > 0.3]  # a 33h hole, gaps
    plain, pre = pair(holes, 4096)
    for b in holes:
        plain.append(b)
        pre.append(b)
        assert pre.quote_volume_24h() == plain.quote_volume_24h()
