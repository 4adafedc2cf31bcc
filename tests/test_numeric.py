"""The fast numeric helpers must give numpy's answers bit for bit (run fingerprints depend on it)."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine.core.market import _moments, var

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(arrays(np.float64, st.integers(2, 400), elements=finite))
def test_var_and_moments_equal_numpy_bit_for_bit(a: np.ndarray) -> None:
    assert var(a, 1) == float(a.var(ddof=1))
    assert var(a) == float(a.var())
    r, d, sd = _moments(a)
    assert r is a
    assert np.array_equal(d, a - a.mean())
    assert sd == float(a.std())


def _compare_correlations(m: Any, symbols: list[str], i: int, lookbacks: tuple[int, int]) -> int:
    """``correlations`` of the first symbol with all the others (itself and one twice among them) against
    ``correlation`` pair by pair, bit for bit, at bar ``i``: over the given lookbacks now, and over 48 bars as
    of 30 bars ago. Returns how many pairs had a figure."""
    from tests.conftest import bar_close_ms

    compared = 0
    for lookback, as_of in ((lookbacks[0], None), (lookbacks[1], None), (48, bar_close_ms(max(0, i - 30)))):
        got = m.correlations(symbols[0], [*symbols[1:], symbols[0], symbols[2]], lookback, as_of_ms=as_of)
        for s in symbols:
            want = m.correlation(symbols[0], s, lookback, as_of_ms=as_of)
            assert got[s] == want or (got[s] is None and want is None), (i, s, got[s], want)
            compared += want is not None
    return compared


def test_correlations_of_many_partners_are_each_pairs_correlation_bit_for_bit() -> None:
    from engine.core.market import MarketState
    from tests.conftest import flat_bar

    rng = np.random.default_rng(9)
    symbols = [f"S{i}/USDT" for i in range(7)]
    m = MarketState(300_000)
    prices = {s: 100.0 for s in symbols}
    compared = 0
    for i in range(700):
        for k, s in enumerate(symbols):
            if k == 5 and 300 < i < 340:
                continue  # a hole: its windows cover other closes than the rest
            prices[s] *= float(np.exp(rng.normal(0, 0.01)))
            if k == 6 and i > 600:
                prices[s] = 100.0  # flat: no variance
            m.history(s).append(flat_bar(i, prices[s], symbol=s))
        if i % 5:
            continue
        compared += _compare_correlations(m, symbols, i, (12, 288))
    assert compared > 500


def test_preloaded_correlations_read_in_place_are_each_pairs_correlation_bit_for_bit() -> None:
    """A preloaded market reads the windows of the symbols sharing its close times from one stacked array
    (``MarketState._grid``): the same numbers as pair by pair, with a symbol on other close times (a hole), a
    flat one, a symbol not stepped as far, and a small buffer (windows cut at its start)."""
    from engine.core.market import MarketState
    from tests.conftest import bar_close_ms, flat_bar

    rng = np.random.default_rng(21)
    symbols = [f"S{i}/USDT" for i in range(7)]
    n = 900
    bars = {}
    for k, s in enumerate(symbols):
        prices = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n) + (0.3 * rng.normal(0, 0.01, n) if k else 0)))
        if k == 6:
            prices[600:] = 100.0  # flat: no variance
        idx = [i for i in range(n) if not (k == 5 and 300 < i < 340)]  # a hole: other close times
        bars[s] = [flat_bar(i, float(prices[i]), symbol=s) for i in idx]
    m = MarketState(300_000, symbols, keep=64)
    m.preload({s: {"close_ms": np.array([b.close_ms for b in bs]), **{
        c: np.array([getattr(b, c) for b in bs]) for c in ("open", "high", "low", "close", "volume")}}
        for s, bs in bars.items()})
    at = dict.fromkeys(symbols, 0)
    compared = 0
    for i in range(n):
        for s in symbols:
            if s == symbols[4] and i % 97 == 0:
                continue  # this slice's bar comes later: stepped less far than the others for a while
            bs = bars[s]
            while at[s] < len(bs) and bs[at[s]].close_ms <= bar_close_ms(i):
                m.history(s).append(bs[at[s]])
                at[s] += 1
        if i % 7:
            continue
        compared += _compare_correlations(m, symbols, i, (12, 100))
    assert m._grids[symbols[0]] is not None and symbols[5] not in m._grids[symbols[0]][0]
    assert compared > 300
