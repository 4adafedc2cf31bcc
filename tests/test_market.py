"""Market state: incremental indicators against straightforward reference computations, compaction,
rolling 24h quote volume, and correlation (aligned and misaligned series)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from engine.core.market import MarketState, SymbolHistory
from engine.types import Bar
from tests.conftest import (
    DAY_MS,
    SYM,
    TF,
    bar_close_ms,
    flat_bar,
    make_bar,
    random_bars,
    ref_atr,
    ref_ema,
    ref_highest,
    ref_lowest,
    ref_rsi,
    ref_sma,
    true_range,
)

N_BARS = 400
PERIODS = (2, 7, 14, 50)


def arrays(bars: list[Bar]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([b.high for b in bars]), np.array([b.low for b in bars]), np.array([b.close for b in bars]))


def reference(name: str, bars: list[Bar], n: int) -> np.ndarray:
    h, lo, c = arrays(bars)
    return {
        "sma": lambda: ref_sma(c, n),
        "ema": lambda: ref_ema(c, n),
        "atr": lambda: ref_atr(h, lo, c, n),
        "rsi": lambda: ref_rsi(c, n),
        "highest": lambda: ref_highest(h, n),
        "lowest": lambda: ref_lowest(lo, n),
    }[name]()


def same(got: float | None, want: float, rel: float = 1e-9) -> bool:
    if math.isnan(want):
        return got is None
    return got is not None and math.isclose(got, want, rel_tol=rel, abs_tol=1e-12)


NAMES = ("sma", "ema", "atr", "rsi", "highest", "lowest")


# ------------------------------------------------------------------------------------- indicators


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", PERIODS)
def test_indicator_matches_reference_on_every_bar(name: str, n: int) -> None:
    bars = random_bars(N_BARS, seed=100 + n)
    want = reference(name, bars, n)
    h = SymbolHistory(SYM, TF)
    getattr(h, name)(n)  # requested before any bar: updated incrementally from the start
    for i, b in enumerate(bars):
        h.append(b)
        got = getattr(h, name)(n)
        assert same(got, want[i]), f"{name}({n}) at bar {i}: {got} != {want[i]}"
        prev_want = want[i - 1] if i > 0 else float("nan")
        assert same(h.prev(name, n), prev_want), f"prev {name}({n}) at bar {i}"


@pytest.mark.parametrize(("name", "ewm_alpha"), [("ema", lambda n: 2 / (n + 1)), ("atr", lambda n: 1 / n)])
def test_recursive_indicators_converge_to_pandas_ewm(name: str, ewm_alpha) -> None:  # type: ignore[no-untyped-def]
    """Seeding conventions differ, but after a long history the seed no longer matters (independent check)."""
    bars = random_bars(N_BARS, seed=7)
    h_arr, lo_arr, c_arr = arrays(bars)
    n = 10
    series = pd.Series(c_arr) if name == "ema" else pd.Series(true_range(h_arr, lo_arr, c_arr))
    want = series.ewm(alpha=ewm_alpha(n), adjust=False).mean().iloc[-1]
    h = SymbolHistory(SYM, TF)
    for b in bars:
        h.append(b)
    assert getattr(h, name)(n) == pytest.approx(want, rel=1e-9)


def test_rsi_converges_to_pandas_ewm_formula() -> None:
    bars = random_bars(N_BARS, seed=8)
    c = np.array([b.close for b in bars])
    d = pd.Series(np.diff(c))
    n = 14
    ag = d.clip(lower=0).ewm(alpha=1 / n, adjust=False).mean().iloc[-1]
    al = (-d).clip(lower=0).ewm(alpha=1 / n, adjust=False).mean().iloc[-1]
    h = SymbolHistory(SYM, TF)
    for b in bars:
        h.append(b)
    assert h.rsi(n) == pytest.approx(100 - 100 / (1 + ag / al), rel=1e-9)


def test_rsi_edge_values() -> None:
    up = SymbolHistory(SYM, TF)
    for i in range(20):
        up.append(flat_bar(i, 100.0 + i))
    assert up.rsi(14) == 100.0
    down = SymbolHistory(SYM, TF)
    for i in range(20):
        down.append(flat_bar(i, 100.0 - i))
    assert down.rsi(14) == 0.0
    flat = SymbolHistory(SYM, TF)
    for i in range(20):
        flat.append(flat_bar(i, 100.0))
    assert flat.rsi(14) == 50.0


def test_highest_and_lowest_exclude_the_last_bar() -> None:
    h = SymbolHistory(SYM, TF)
    for i, (hi, lo) in enumerate([(10, 9), (12, 8), (11, 9.5), (30, 1)]):
        h.append(make_bar(i, lo, hi, lo, lo))
    assert h.highest(3) == 12 and h.lowest(3) == 8  # the 30/1 bar is the current one: not in the window
    assert h.highest(4) is None and h.lowest(4) is None  # needs 4 bars *before* the last
    assert h.prev("highest", 3) is None  # one bar earlier there were only 2 bars before the last


@pytest.mark.parametrize("name", NAMES)
def test_indicator_requested_late_equals_requested_early(name: str) -> None:
    bars = random_bars(300, seed=21)
    early, late = SymbolHistory(SYM, TF, keep=4096), SymbolHistory(SYM, TF, keep=4096)
    for n in PERIODS:
        getattr(early, name)(n)
    for b in bars[:150]:
        early.append(b)
        late.append(b)
    for n in PERIODS:  # asked for mid-way, then updated incrementally
        assert getattr(late, name)(n) == getattr(early, name)(n)
        assert late.prev(name, n) == early.prev(name, n)
    for b in bars[150:]:
        early.append(b)
        late.append(b)
    fresh = SymbolHistory(SYM, TF, keep=4096)
    for b in bars:
        fresh.append(b)
    for n in PERIODS:
        assert getattr(late, name)(n) == getattr(early, name)(n)
        assert getattr(fresh, name)(n) == getattr(early, name)(n)  # asked for only at the very end
        assert fresh.prev(name, n) == early.prev(name, n)


def test_unknown_or_bad_indicator_period() -> None:
    h = SymbolHistory(SYM, TF)
    with pytest.raises(ValueError, match="period must be positive"):
        h.sma(0)
    with pytest.raises((KeyError, ValueError)):
        h.indicator("macd", 3)


def test_indicators_are_none_until_warm() -> None:
    h = SymbolHistory(SYM, TF)
    for i in range(4):
        h.append(make_bar(i, 100 + i, 101 + i, 99 + i, 100 + i))
    assert h.sma(5) is None and h.ema(5) is None and h.atr(5) is None and h.rsi(4) is None
    h.append(make_bar(4, 104, 105, 103, 104))
    assert h.sma(5) == pytest.approx(102.0)
    assert h.rsi(4) == 100.0


# --------------------------------------------------------------------------------------- the buffer


def test_compaction_keeps_the_last_bars_and_bounded_memory() -> None:
    bars = random_bars(1000, seed=5)
    closes = np.array([b.close for b in bars])
    times = np.array([b.close_ms for b in bars])
    h = SymbolHistory(SYM, TF, keep=64)
    h.sma(20)
    h.atr(14)
    for i, b in enumerate(bars):
        h.append(b)
        assert h.buffered <= 2 * h.keep
        assert h.buffered >= min(i + 1, h.keep)
    assert len(h) == 1000
    np.testing.assert_array_equal(h.closes(64), closes[-64:])
    np.testing.assert_array_equal(h.close_times(64), times[-64:])
    everything = h.closes(10**6)
    assert h.keep <= len(everything) <= 2 * h.keep
    np.testing.assert_array_equal(everything, closes[-len(everything):])
    # indicators see every bar, not just the buffer
    assert same(h.sma(20), reference("sma", bars, 20)[-1])
    assert same(h.atr(14), reference("atr", bars, 14)[-1])
    assert h.last == bars[-1]


def test_views_are_read_only() -> None:
    h = SymbolHistory(SYM, TF)
    for b in random_bars(10, seed=1):
        h.append(b)
    v = h.closes(5)
    with pytest.raises(ValueError):
        v[0] = 1.0


def test_appending_a_bar_that_does_not_move_time_forward_raises() -> None:
    h = SymbolHistory(SYM, TF)
    h.append(flat_bar(5, 100))
    with pytest.raises(ValueError, match="is not after the last one"):
        h.append(flat_bar(5, 101))
    with pytest.raises(ValueError, match="is not after the last one"):
        h.append(flat_bar(4, 101))
    assert len(h) == 1 and h.last.close == 100


def test_empty_history() -> None:
    h = SymbolHistory(SYM, TF)
    with pytest.raises(IndexError):
        _ = h.last
    assert len(h) == 0 and h.closes(5).size == 0
    assert h.quote_volume_24h() == 0.0


# ------------------------------------------------------------------------------------ 24h volume


def test_quote_volume_24h_is_exact_over_the_trailing_day() -> None:
    bars = random_bars(800, seed=9)
    h = SymbolHistory(SYM, TF)
    for i, b in enumerate(bars):
        h.append(b)
        window = [x for x in bars[: i + 1] if x.close_ms > b.close_ms - DAY_MS]
        assert len(window) == min(i + 1, DAY_MS // TF)
        want = sum(x.volume * x.close for x in window)
        assert h.quote_volume_24h() == pytest.approx(want, rel=1e-9)


def test_quote_volume_24h_with_holes_in_time() -> None:
    rng = np.random.default_rng(3)
    steps = rng.choice([1, 1, 1, 2, 7, 40], size=300)
    idx = np.cumsum(steps)
    bars = [make_bar(int(i), 10, 20, 5, 10 + (j % 5), float(rng.uniform(1, 9))) for j, i in enumerate(idx)]
    h = SymbolHistory(SYM, TF)
    for j, b in enumerate(bars):
        h.append(b)
        want = sum(x.volume * x.close for x in bars[: j + 1] if x.close_ms > b.close_ms - DAY_MS)
        assert h.quote_volume_24h() == pytest.approx(want, rel=1e-9)


# ----------------------------------------------------------------------------------- correlation


def correlated_closes(n: int, rho: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z1, z2 = rng.normal(0, 0.01, n), rng.normal(0, 0.01, n)
    ra, rb = z1, rho * z1 + math.sqrt(1 - rho * rho) * z2
    return 100 * np.exp(np.cumsum(ra)), 50 * np.exp(np.cumsum(rb))


def feed(m: MarketState, sym: str, closes: np.ndarray, skip: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    for i, c in enumerate(closes):
        if i not in skip:
            m.append(flat_bar(i, float(c), symbol=sym))


def ref_corr_by_time(ca: np.ndarray, cb: np.ndarray, skip_a: set[int], skip_b: set[int]) -> tuple[float, int]:
    """Correlation of one-bar log returns at close times where both symbols have this bar and the one before."""

    def one_bar_returns(cs: np.ndarray, skip: set[int]) -> pd.Series:
        idx = [bar_close_ms(i) for i in range(len(cs)) if i not in skip]
        s = pd.Series(np.log([cs[i] for i in range(len(cs)) if i not in skip]), index=idx)
        gap = pd.Series(s.index, index=s.index).diff()
        return s.diff()[gap == TF]

    both = pd.concat([one_bar_returns(ca, skip_a), one_bar_returns(cb, skip_b)], axis=1, join="inner").dropna()
    return float(np.corrcoef(both.iloc[:, 0], both.iloc[:, 1])[0, 1]), len(both)


@pytest.mark.parametrize("lookback", [50, 120, 1000])
def test_correlation_matches_numpy_on_aligned_series(lookback: int) -> None:
    ca, cb = correlated_closes(300, 0.7, seed=4)
    m = MarketState(TF)
    feed(m, "A/USDT", ca)
    feed(m, "B/USDT", cb)
    k = min(lookback, 299)
    want = np.corrcoef(np.diff(np.log(ca))[-k:], np.diff(np.log(cb))[-k:])[0, 1]
    assert m.correlation("A/USDT", "B/USDT", lookback) == pytest.approx(want, abs=1e-12)
    assert m.correlation("B/USDT", "A/USDT", lookback) == pytest.approx(want, abs=1e-12)


def test_correlation_with_missing_bars_uses_the_common_one_bar_returns() -> None:
    ca, cb = correlated_closes(200, 0.6, seed=12)
    skip_b = {17, 18, 90, 150}
    m = MarketState(TF)
    feed(m, "A/USDT", ca)
    feed(m, "B/USDT", cb, skip_b)
    want, overlap = ref_corr_by_time(ca, cb, set(), skip_b)
    assert overlap < 199
    assert m.correlation("A/USDT", "B/USDT", 1000) == pytest.approx(want, abs=1e-12)


def test_correlation_when_each_series_misses_a_different_bar() -> None:
    """Same length, same first and last close, different holes: the series are NOT aligned."""
    ca, cb = correlated_closes(80, 0.5, seed=2)
    skip_a, skip_b = {20}, {40}
    m = MarketState(TF)
    feed(m, "A/USDT", ca, skip_a)
    feed(m, "B/USDT", cb, skip_b)
    want, _ = ref_corr_by_time(ca, cb, skip_a, skip_b)
    assert m.correlation("A/USDT", "B/USDT", 1000) == pytest.approx(want, abs=1e-12)


def test_correlation_degenerate_cases() -> None:
    ca, cb = correlated_closes(40, 0.9, seed=1)
    m = MarketState(TF, symbols=["A/USDT", "B/USDT", "C/USDT", "D/USDT"])
    feed(m, "A/USDT", ca)
    feed(m, "B/USDT", cb[:8])  # too little overlap
    feed(m, "C/USDT", np.full(40, 7.0))  # no variance
    assert m.correlation("A/USDT", "A/USDT", 100) == 1.0
    assert m.correlation("A/USDT", "B/USDT", 100) is None
    assert m.correlation("A/USDT", "B/USDT", 100, min_overlap=5) is not None
    assert m.correlation("A/USDT", "C/USDT", 100) is None
    assert m.correlation("A/USDT", "D/USDT", 100) is None  # D has no bars
    assert m.correlation("A/USDT", "Z/USDT", 100) is None  # unknown symbol


def test_perfectly_anti_correlated() -> None:
    ca, _ = correlated_closes(100, 0.0, seed=6)
    m = MarketState(TF)
    feed(m, "A/USDT", ca)
    feed(m, "B/USDT", 1e4 / ca)
    assert m.correlation("A/USDT", "B/USDT", 288) == pytest.approx(-1.0, abs=1e-12)


def test_marks_and_last_close() -> None:
    m = MarketState(TF, symbols=["A/USDT", "B/USDT"])
    m.append(flat_bar(0, 10.0, symbol="A/USDT"))
    m.append(flat_bar(1, 11.0, symbol="A/USDT"))
    assert m.marks() == {"A/USDT": 11.0}
    assert m.last_close("A/USDT") == 11.0 and m.last_close("B/USDT") is None and m.last_close("X/Y") is None
