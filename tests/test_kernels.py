"""The compiled regime kernel (``engine.core.kernels``) computes the numpy reference's numbers to the bit.

Its figures go into every context pack's hash, so "close" is not enough: every number is compared by its bits,
on random walks from the shortest window the regime reads to the longest, on degenerate series (flat, sparse
moves, prices rounded to a tick) and on windows of every real data set present (skipped when none is).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest

from engine.config import load_config
from engine.core import context, kernels, portable

MARKET = Path(__file__).resolve().parents[2] / "shared" / "data" / "market"
RC = load_config().config.context.regime


def _bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", float(x)))[0]


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(
        (_bits(x) == _bits(y)) if isinstance(x, float) or isinstance(y, float) else x == y
        for x, y in zip(a, b, strict=True))


def _args(rc=RC, h: int = 48) -> tuple[int, int, int, int, int, int]:
    lb = rc.lookback
    return (lb, rc.vol_history * lb + lb, rc.test_lookback, rc.block_bars,
            max(rc.skip_lags + 2, (rc.horizon_bars or h) // rc.block_bars), rc.skip_lags)


def _check(logs: np.ndarray, args: tuple[int, ...]) -> None:
    want = context._regime_numbers_numpy(logs, *args)
    got = kernels.regime_numbers(logs, *args)
    assert _same(tuple(got), tuple(want)), f"{len(logs)} closes: compiled {got}, numpy {want}"


def test_the_compiled_sum_is_numpys_pairwise_sum() -> None:
    rng = np.random.default_rng(3)
    sequential_differs = 0
    for n in [*range(0, 300), 479, 480, 1000, 2016, 2305, 9000]:
        for _ in range(5):
            a = rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 6, n)
            want = float(np.add.reduce(a))
            assert _bits(kernels.numpy_sum(a)) == _bits(want), n
            sequential_differs += _bits(sum(a.tolist(), 0.0)) != _bits(want)
    assert sequential_differs > 100  # the data tell the orders of addition apart: the comparison can fail
    for special in ([-0.0], [-0.0, -0.0], [np.inf, 1.0], [np.inf, -np.inf], [np.nan, 2.0], [5e-324] * 9):
        a = np.array(special)
        with np.errstate(invalid="ignore"):
            want, got = float(np.add.reduce(a)), kernels.numpy_sum(a)
        assert (math.isnan(want) and math.isnan(got)) or _bits(got) == _bits(want), special


@pytest.mark.parametrize("seed", range(4))
def test_random_walks_of_every_window_length(seed: int) -> None:
    rng = np.random.default_rng(seed)
    args = _args()
    longest = context.regime_closes(RC)
    lengths = sorted({RC.lookback + 1, RC.lookback + 2, RC.test_lookback, RC.test_lookback + 1,
                      RC.test_lookback + 2, longest - 1, longest, *rng.integers(RC.lookback + 1, longest, 60)})
    for n in lengths:
        closes = 100.0 * np.exp(np.cumsum(rng.standard_normal(n) * 0.01 * rng.uniform(0.05, 4.0)))
        _check(portable.log(closes), args)


def test_degenerate_series() -> None:
    rng = np.random.default_rng(11)
    args = _args()
    n = context.regime_closes(RC)
    _check(portable.log(np.full(n, 3.0)), args)  # no variance at all
    for _ in range(150):
        steps = rng.standard_normal(n) * 0.01
        steps[rng.random(n) < rng.uniform(0.0, 0.98)] = 0.0  # mostly flat, the odd move
        closes = np.round(50.0 * np.exp(np.cumsum(steps + rng.uniform(-0.002, 0.002))), int(rng.integers(1, 6)))
        _check(portable.log(closes), args)


@pytest.mark.parametrize("block,skip,horizon,lookback", [(1, 0, 12, 20), (4, 1, 48, 96), (8, 2, 200, 30),
                                                         (16, 0, 64, 200)])
def test_other_settings(block: int, skip: int, horizon: int, lookback: int) -> None:
    rc = RC.model_copy(update={"block_bars": block, "skip_lags": skip, "horizon_bars": horizon,
                               "lookback": lookback, "test_lookback": max(RC.test_lookback, 4 * horizon)})
    args = _args(rc)
    rng = np.random.default_rng(block)
    for n in rng.integers(lookback + 1, context.regime_closes(rc) + 50, 40):
        _check(portable.log(100.0 * np.exp(np.cumsum(rng.standard_normal(int(n)) * 0.02))), args)


def test_the_regime_is_the_reference_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """regime_of with the kernel and with the numpy reference: the same RegimeInfo, field by field."""
    rng = np.random.default_rng(5)
    series = [100.0 * np.exp(np.cumsum(rng.standard_normal(int(n)) * 0.01)) for n in rng.integers(90, 2400, 80)]
    got = [context.regime_of(c, RC, 300_000) for c in series]
    monkeypatch.setattr(context, "_regime_numbers", context._regime_numbers_numpy)
    want = [context.regime_of(c, RC, 300_000) for c in series]
    assert got == want
    assert {g.tag for g in got} > {context.RegimeTag.UNKNOWN}  # tags were computed, not only unknowns


def _real_closes() -> list[tuple[str, np.ndarray]]:
    if not MARKET.is_dir():
        return []
    out = []
    for f in sorted(MARKET.glob("*/*.csv")):
        closes = np.loadtxt(f, delimiter=",", skiprows=1, usecols=4, dtype=np.float64, ndmin=1)
        out.append((f"{f.parent.name}/{f.stem}", closes[closes > 0]))
    return out


def test_windows_of_every_real_data_set() -> None:
    sets = _real_closes()
    if not sets:
        pytest.skip(f"no recorded market data under {MARKET}")
    args = _args()
    n = context.regime_closes(RC)
    checked = 0
    for _name, closes in sets:
        logs = portable.log(closes)
        ends = np.unique(np.linspace(RC.lookback + 1, len(logs), 40).astype(int))
        for end in ends:
            _check(logs[max(0, end - n):end], args)
            checked += 1
    assert checked > 40 * len(sets) // 2


def _check_rows(logs: np.ndarray) -> None:
    from engine.core import market

    want = market._correlation_rows_numpy(logs)
    got = kernels.correlation_rows(logs)
    assert _same(tuple(got[0]) + tuple(got[1]), tuple(want[0]) + tuple(want[1])), logs.shape


def test_correlation_rows_are_the_numpy_ones() -> None:
    rng = np.random.default_rng(17)
    for rows in (2, 3, 6, 11):
        for n in (2, 3, 9, 10, 97, 129, 130, 300, 1100):
            common = rng.standard_normal(n)
            walks = np.cumsum(common * rng.uniform(0.0, 1.0) + rng.standard_normal((rows, n)) * 0.01, axis=1)
            _check_rows(portable.log(100.0 * np.exp(walks)))
    flat = np.zeros((3, 50))  # no variance: std 0, the caller's None
    _check_rows(flat)


def test_correlation_rows_on_real_data() -> None:
    sets = _real_closes()
    if not sets:
        pytest.skip(f"no recorded market data under {MARKET}")
    by_dir: dict[str, list[np.ndarray]] = {}
    for name, closes in sets:
        by_dir.setdefault(name.split("/")[0], []).append(portable.log(closes))
    lookback = load_config().config.context.correlation.lookback
    for logs in by_dir.values():
        n = min(len(x) for x in logs)
        for end in np.linspace(lookback + 1, n, 25).astype(int):
            _check_rows(np.stack([x[end - lookback - 1:end] for x in logs]))
