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
