"""Statistics of verdict quality: Wilson intervals, exact hypergeometric and binomial tails, percentiles, the
bootstrap, multiple-testing corrections and the deflated Sharpe ratio (stdlib, and numpy for the bootstrap).

Used by the scorecard and the analysis of recorded runs and by the live retire rule alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["Z95", "benjamini_hochberg", "binom_sf", "bootstrap_mean", "deflated_sharpe", "holm", "hypergeom_range",
           "hypergeom_sf", "newcombe_diff", "percentile", "wilson"]

Z95 = 1.959963984540054

def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when there are no trials."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _log_comb(a: int, b: int) -> float:
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)


_TINY = 1e-300  # pmf terms this far below the mode's cannot move a double-precision sum


def _hypergeom_terms(N: int, K: int, n: int) -> tuple[int, float, list[float]]:
    """(first value, pmf at the mode, pmf / pmf at the mode for first, first + 1, ...) of Hypergeom(N, K, n).

    Walks out from the mode by the ratio recurrence (one multiplication per value, no log-gamma) and stops
    where the terms vanish, so a run with 100,000 signals costs a few thousand steps, not its whole support.
    """
    if not (0 <= K <= N and 0 <= n <= N):
        raise ValueError(f"hypergeometric needs 0 <= K <= N and 0 <= n <= N (got N={N}, K={K}, n={n})")
    lo, hi = max(0, n - (N - K)), min(n, K)
    mode = min(hi, max(lo, (n + 1) * (K + 1) // (N + 2)))
    peak = math.exp(_log_comb(K, mode) + _log_comb(N - K, n - mode) - _log_comb(N, n))
    up: list[float] = []
    w, i = 1.0, mode
    while i < hi:  # pmf(i + 1) / pmf(i)
        w *= (K - i) * (n - i) / ((i + 1) * (N - K - n + i + 1))
        if w < _TINY:
            break
        up.append(w)
        i += 1
    down: list[float] = []
    w, i = 1.0, mode
    while i > lo:  # pmf(i - 1) / pmf(i)
        w *= i * (N - K - n + i) / ((K - i + 1) * (n - i + 1))
        if w < _TINY:
            break
        down.append(w)
        i -= 1
    return mode - len(down), peak, [*reversed(down), 1.0, *up]


def hypergeom_sf(k: int, N: int, K: int, n: int) -> float:
    """P(X ≥ k) for X ~ Hypergeom(N, K, n): exact up to floating point (relative 1e-12 or so)."""
    first, peak, w = _hypergeom_terms(N, K, n)
    if k <= first:  # every term that matters is in the tail (those cut below ``first`` are < 1e-300 each)
        return 1.0
    if k >= first + len(w):
        return 0.0
    return min(1.0, peak * math.fsum(w[k - first:]))


def hypergeom_range(N: int, K: int, n: int, mass: float = 0.95) -> tuple[int, int]:
    """Central ``mass`` range (lo, hi) of X ~ Hypergeom(N, K, n): P(X < lo) ≤ α/2 and P(X > hi) ≤ α/2."""
    first, _, w = _hypergeom_terms(N, K, n)
    total = math.fsum(w)
    tail = (1 - mass) / 2 * total
    acc, lo = 0.0, first
    for i, x in enumerate(w):
        if acc + x > tail:
            lo = first + i
            break
        acc += x
    acc, hi = 0.0, first + len(w) - 1
    for i in range(len(w) - 1, -1, -1):
        if acc + w[i] > tail:
            hi = first + i
            break
        acc += w[i]
    return lo, hi


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p): the exact one-sided tail, summed in log space (relative 1e-12 or so)."""
    if n < 0:
        raise ValueError(f"binomial needs n >= 0 (got {n})")
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.exp(_log_comb(n, i) + i * lp + (n - i) * lq) for i in range(k, n + 1)]
    return min(1.0, math.fsum(terms))


def newcombe_diff(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float] | None:
    """Newcombe's hybrid score interval for p1 − p2 from the two Wilson intervals; None without trials."""
    if n1 <= 0 or n2 <= 0:
        return None
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def bootstrap_mean(values: Sequence[float], *, seed: int, resamples: int = 2000,
                   mass: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (seeded: the same values and seed give the same
    interval, bit for bit, on any machine: numpy's PCG64 stream); None for fewer than two values.

    The resamples are drawn and averaged as arrays, a block of them at a time (at most ~4 M draws in memory): a
    backtest scores thousands of modified trades per reviewer, which a loop of 2,000 Python resamples made the
    slowest step of a cached backtest.
    """
    import numpy as np

    n = len(values)
    if n < 2:
        return None
    xs = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    block = max(1, min(resamples, 4_000_000 // n))
    means: list[float] = []
    for start in range(0, resamples, block):
        k = min(block, resamples - start)
        means.extend(xs[rng.integers(0, n, size=(k, n))].mean(axis=1).tolist())
    means.sort()
    tail = (1 - mass) / 2 * 100
    lo, hi = percentile(means, tail), percentile(means, 100 - tail)
    assert lo is not None and hi is not None
    return (lo, hi)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (family-wise error across the tests given; None stays None)."""
    idx = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def benjamini_hochberg(pvalues: Sequence[float | None]) -> list[float | None]:
    """Benjamini–Hochberg q-values (false discovery rate across the tests given; None stays None)."""
    idx = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 1.0
    for rank in range(m - 1, -1, -1):
        p, i = idx[rank]
        running = min(running, p * m / (rank + 1))
        out[i] = min(1.0, running)
    return out


def _moments(xs: Sequence[float]) -> tuple[float, float, float, float]:
    """Mean, standard deviation (n − 1), skewness and (non-excess) kurtosis of ``xs`` (n ≥ 2)."""
    n = len(xs)
    mean = math.fsum(xs) / n
    d = [x - mean for x in xs]
    var = math.fsum(v * v for v in d) / (n - 1)
    sd = math.sqrt(var)
    if sd == 0:
        return mean, 0.0, 0.0, 3.0
    m2 = math.fsum(v * v for v in d) / n
    skew = (math.fsum(v**3 for v in d) / n) / m2**1.5
    kurt = (math.fsum(v**4 for v in d) / n) / m2**2
    return mean, sd, skew, kurt


def deflated_sharpe(returns: Sequence[float], trial_sharpes: Sequence[float]) -> dict[str, float | None]:
    """The deflated Sharpe ratio (Bailey and López de Prado, 2014) of one strategy's per-period ``returns``, chosen
    as the best of ``trial_sharpes`` (every trial's per-period Sharpe ratio, this one included): the probability
    that its true Sharpe ratio is above the best that ``len(trial_sharpes)`` trials of zero skill would show by
    luck, given the returns' length, skewness and kurtosis. Near 1: an edge that survives the search; ≤ 0.95: not
    distinguishable from the luck of trying that many.
    """
    from statistics import NormalDist

    nd = NormalDist()
    t = len(returns)
    out: dict[str, float | None] = {"sharpe": None, "sharpe0": None, "dsr": None, "trials": float(len(trial_sharpes))}
    if t < 3:
        return out
    _, sd, skew, kurt = _moments(returns)
    if sd == 0:
        return out
    sr = (math.fsum(returns) / t) / sd
    out["sharpe"] = sr
    n = len(trial_sharpes)
    if n >= 2:
        m = math.fsum(trial_sharpes) / n
        var_sr = math.fsum((x - m) ** 2 for x in trial_sharpes) / (n - 1)
        gamma = 0.5772156649015329
        sr0 = math.sqrt(var_sr) * ((1 - gamma) * nd.inv_cdf(1 - 1 / n) + gamma * nd.inv_cdf(1 - 1 / (n * math.e)))
    else:
        sr0 = 0.0
    out["sharpe0"] = sr0
    denom = 1 - skew * sr + (kurt - 1) / 4 * sr * sr
    if denom <= 0:
        return out
    out["dsr"] = nd.cdf((sr - sr0) * math.sqrt(t - 1) / math.sqrt(denom))
    return out
