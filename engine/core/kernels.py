"""Compiled kernels (numba) for the per-signal statistics, bit for bit the numpy code they replace.

A context pack's regime figures are a few dozen short numpy reductions per signal, its correlations a few more;
each call costs more in numpy's dispatch than in arithmetic. Here the same arithmetic runs as one compiled loop.
"The same" is exact:

- a numpy sum (``np.add.reduce``) of a contiguous float64 run is 0.0 plus numpy's pairwise summation of it
  (runs of under 8 added in order; up to 128 in 8 interleaved partial sums joined as a tree; longer runs
  split in halves rounded down to a multiple of 8) — ``_sum`` is that algorithm;
- a running sum (``np.add.accumulate``) adds in order; elementwise + − × ÷ and √ are rounded by IEEE 754;
- numba compiles without fast-math, so nothing is reassociated or fused into an FMA.

So the figures, the tag and the pack's hash are the numpy path's on every CPU. ``tests/test_kernels.py`` checks
that against the numpy references (``engine.core.context._regime_numbers_numpy``,
``engine.core.market._correlation_rows_numpy``) on random and recorded series, window lengths from the shortest
to the longest; ``tests/test_portable.py`` replays with the kernels built for a generic x86-64 as well.

This module imports numba; a pipeline's context builder imports it and loads the kernels (``warm``) as it is
made, so ``tradevet --help`` and every command without a pipeline never pay for it. The kernels are compiled once
per machine and then loaded from numba's cache beside this file (``__pycache__``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

__all__ = ["correlation_rows", "numpy_sum", "regime_numbers", "warm"]

_njit = numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")


@_njit
def _run(a: np.ndarray, lo: int, n: int) -> float:
    """numpy's pairwise sum of a run of at most 128: in order under 8, else in 8 interleaved partial sums."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    end = n - n % 8
    while i < end:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@_njit
def _sum(a: np.ndarray, lo: int, n: int) -> float:
    """numpy's pairwise sum of ``a[lo:lo + n]`` (without the 0.0 a reduction starts from). Over 128 the run is
    split in two, the first part ``n // 2`` rounded down to a multiple of 8, and the parts' sums added: numpy
    recurses; here an explicit stack does the same additions (numba cannot cache a recursive function)."""
    if n <= 128:
        return _run(a, lo, n)
    seg_lo = np.empty(128, np.int64)
    seg_n = np.empty(128, np.int64)
    stage = np.zeros(128, np.int8)
    vals = np.empty(128)
    seg_lo[0], seg_n[0] = lo, n
    sp, vp = 1, 0
    while sp:
        top = sp - 1
        k, m = seg_lo[top], seg_n[top]
        if m <= 128:
            vals[vp] = _run(a, k, m)
            vp += 1
            sp -= 1
            continue
        n2 = m // 2
        n2 -= n2 % 8
        if stage[top] == 0:  # the first part
            stage[top] = 1
            seg_lo[sp], seg_n[sp], stage[sp] = k, n2, 0
            sp += 1
        elif stage[top] == 1:  # then the second
            stage[top] = 2
            seg_lo[sp], seg_n[sp], stage[sp] = k + n2, m - n2, 0
            sp += 1
        else:  # both done: their sum
            vals[vp - 2] = vals[vp - 2] + vals[vp - 1]
            vp -= 1
            sp -= 1
    return vals[0]


@_njit
def _sum0(a: np.ndarray) -> float:
    return 0.0 + _sum(a, 0, a.shape[0])


@_njit
def _regime_numbers(logs: np.ndarray, lb: int, vol_len: int, test_lb: int, block: int, m: int,
                   skip: int) -> tuple[float, int, int, int, float, float, int]:
    """See ``engine.core.context._regime_numbers_numpy``: the same numbers from the same operations."""
    n_r = logs.shape[0] - 1
    r_all = np.empty(n_r)
    for i in range(n_r):
        r_all[i] = logs[i + 1] - logs[i]
    # var(r_all[-lb:], 1)
    off = n_r - lb
    mean = (0.0 + _sum(r_all, off, lb)) / lb
    d = np.empty(lb)
    for i in range(lb):
        e = r_all[off + i] - mean
        d[i] = e * e
    var1 = (0.0 + _sum(d, 0, lb)) / (lb - 1)
    if not var1 > 0:
        return var1, 0, 0, 0, 0.0, 0.0, 0
    # the rolling variance of every lb-window of the last vol_len returns, from running sums
    v = min(n_r, vol_len)
    v0 = n_r - v
    nwin = v + 1 - lb
    thr = var1 * (1 + 1e-9)
    c1 = np.empty(v + 1)
    c2 = np.empty(v + 1)
    c1[0] = 0.0
    c2[0] = 0.0
    if v > 0:
        c1[1] = r_all[v0]
        c2[1] = r_all[v0] * r_all[v0]
    for i in range(1, v):
        x = r_all[v0 + i]
        c1[i + 1] = c1[i] + x
        c2[i + 1] = c2[i] + x * x
    below = 0
    for k in range(nwin):
        s1 = c1[k + lb] - c1[k]
        s2 = c2[k + lb] - c2[k]
        if (s2 - s1 * s1 / lb) / (lb - 1) <= thr:
            below += 1
    if n_r < test_lb:
        return var1, below, nwin, 0, 0.0, 0.0, 0
    # the variance ratio of block sums of the last test_lb returns (engine.core.context.variance_ratio_z)
    nb = test_lb // block
    if nb < 2 * m:
        return var1, below, nwin, 1, 0.0, 0.0, nb
    t0 = n_r - nb * block
    b = np.empty(nb)
    for k in range(nb):
        b[k] = 0.0 + _sum(r_all, t0 + k * block, block)
    bmean = (0.0 + _sum(b, 0, nb)) / nb
    x = np.empty(nb + 1)
    x2 = np.empty(nb + 1)
    for k in range(nb):
        e = b[k] - bmean
        x[k] = e
        x2[k] = e * e
    x[nb] = 0.0
    x2[nb] = 0.0
    dd = 0.0 + _sum(x2, 0, nb)
    if not dd > 0:
        return var1, below, nwin, 1, 0.0, 0.0, nb
    n_lags = m - skip - 1
    prod0 = np.empty(nb)
    prod1 = np.empty(nb)
    wr = np.empty(n_lags)
    w2d = np.empty(n_lags)
    for li in range(n_lags):
        j = skip + 1 + li
        for i in range(nb):
            src = i + j if i + j < nb else nb  # past the end: the zero pad
            prod0[i] = x[src] * x[i]
            prod1[i] = x2[src] * x2[i]
        rho = (0.0 + _sum(prod0, 0, nb)) / dd + 1.0 / nb
        delta = (0.0 + _sum(prod1, 0, nb)) * nb / (dd * dd)
        w = 2.0 * (1.0 - j / m)
        wr[li] = w * rho
        w2d[li] = (w * w) * delta
    vr = 1.0 + (0.0 + _sum(wr, 0, n_lags))
    theta = 0.0 + _sum(w2d, 0, n_lags)
    return var1, below, nwin, 2, vr, theta, nb


@_njit
def _correlation_rows_at(logs: np.ndarray, rows: np.ndarray, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    k = rows.shape[0]
    m = end - start - 1
    d = np.empty((k, m))
    sq = np.empty(m)
    sd = np.empty(k)
    for i in range(k):
        row = d[i]
        src = logs[rows[i]]
        for j in range(m):
            row[j] = src[start + j + 1] - src[start + j]
        mean = (0.0 + _sum(row, 0, m)) / m
        for j in range(m):
            e = row[j] - mean
            row[j] = e
            sq[j] = e * e
        sd[i] = np.sqrt((0.0 + _sum(sq, 0, m)) / m)
    cross = np.empty(k - 1)
    first = d[0]
    for i in range(1, k):
        row = d[i]
        for j in range(m):
            sq[j] = row[j] * first[j]
        cross[i - 1] = 0.0 + _sum(sq, 0, m)
    return sd, cross


def regime_numbers(logs: np.ndarray, lb: int, vol_len: int, test_lb: int, block: int, m: int,
                   skip: int) -> tuple[float, int, int, int, float, float, int]:
    """The lo_mackinlay regime's numbers of a window of log closes (at least ``lb`` + 1 of them):
    (var1, below, windows, state, VR, θ, blocks) — state 0: no test (too few returns, or var1 ≤ 0), 1: no
    variance ratio (too few blocks, or no variance), 2: VR and θ computed."""
    return _regime_numbers(_readonly(logs), lb, vol_len, test_lb, block, m, skip)


def correlation_rows(logs: np.ndarray, rows: Sequence[int] | None = None, start: int = 0,
                     end: int | None = None) -> tuple[list[float], list[float]]:
    """For windows ``logs[rows[i], start:end]`` of log closes (the first row the signal's symbol's, the rest its
    partners'; ``rows`` None: every row of ``logs``; at least 2 closes): each window's population std of its 1-bar
    log returns, and each partner's sum of demeaned return products with the first —
    ``engine.core.market.MarketState.correlations``' numbers, to the bit."""
    logs = _readonly(logs)
    at = np.arange(logs.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    sd, cross = _correlation_rows_at(logs, at, start, logs.shape[1] if end is None else end)
    return sd.tolist(), cross.tolist()


def _readonly(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous float64 array marked read-only: numba compiles (and loads) one version of each
    kernel per kind of array, and a preloaded series' windows are read-only, so every window is passed so."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def numpy_sum(a: np.ndarray) -> float:
    """The compiled ``np.add.reduce`` of a 1-D float64 array (for the tests)."""
    return float(_sum0(np.ascontiguousarray(a, dtype=np.float64)))


def warm() -> None:
    """Load (or compile) the kernels now: a pipeline calls this as it is built, so that the first signal's pack
    does not pay for it."""
    logs = np.linspace(0.0, 1.0, 20)
    regime_numbers(logs, 8, 16, 16, 1, 2, 0)
    correlation_rows(np.stack([logs, logs]), [1, 0], 2, 12)
