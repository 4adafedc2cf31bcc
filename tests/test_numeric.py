"""The fast numeric helpers must give numpy's answers bit for bit (run fingerprints depend on it)."""

from __future__ import annotations

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


def test_correlations_of_many_partners_are_each_pairs_correlation_bit_for_bit() -> None:
    from engine.core.market import MarketState
    from tests.conftest import bar_close_ms, flat_bar

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
        for lookback, as_of in ((12, None), (288, None), (48, bar_close_ms(max(0, i - 30)))):
            got = m.correlations(symbols[0], [*symbols[1:], symbols[0], symbols[2]], lookback, as_of_ms=as_of)
            for s in symbols:
                want = m.correlation(symbols[0], s, lookback, as_of_ms=as_of)
                assert got[s] == want or (got[s] is None and want is None), (i, s, got[s], want)
                compared += want is not None
    assert compared > 500
