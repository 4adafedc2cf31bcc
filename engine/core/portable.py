"""Elementwise ``exp``, ``log`` and ``cos`` of float64 arrays that give the same bits on every CPU.

numpy's float64 ``exp``, ``log`` and ``cos`` take a kernel chosen at run time from the CPU's features (an
AVX-512 kernel where there is one, the C library's elsewhere), and the C library's own functions switch
between an FMA variant and a plain one. Measured on one machine: 16 in 100,000 logs differ in the last bit
between its AVX-512 kernel and the plain one, and a synthetic replay of 10 × 100,000 bars gave the same 1,273
fills with different last digits in 1,258 of them — the same config and seed, a different run, depending
only on which machine of a cluster ran it.

These functions use only operations IEEE 754 rounds exactly and alike everywhere — + − × ÷ and the exact
``frexp``, ``ldexp``, ``rint`` — in a fixed order with fixed coefficients, so their bits do not depend on
the machine. The methods are the classic ones (argument reduction by ln 2 split in two parts or π/2 in
three, then a Taylor series long enough to fall below half an ulp): log and exp within one ulp of the true
value, cos within two (the tests hold them to exact decimal arithmetic). Every figure that reaches a
decision, a fill price or a pack hash takes its logs and exponentials from here.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np

__all__ = ["cos", "exp", "log"]


def _top_bits(value: float, keep_bits: int) -> float:
    """``value`` with only the top ``keep_bits`` bits of its significand kept: k · the result is exact for
    integers |k| < 2**(53 − keep_bits)."""
    bits = struct.unpack("<Q", struct.pack("<d", value))[0]
    return struct.unpack("<d", struct.pack("<Q", bits & ~((1 << (53 - keep_bits)) - 1)))[0]


with localcontext() as _ctx:
    _ctx.prec = 60
    _LN2 = Decimal(2).ln()
    _PIO2 = Decimal("3.14159265358979323846264338327950288419716939937510582097494") / 2
    # ln 2 = hi + lo and π/2 = hi + mid + lo, every part but the last with 32 bits: k · part exact, |k| < 2**21
    _LN2_HI = _top_bits(float(_LN2), 32)
    _LN2_LO = float(_LN2 - Decimal(_LN2_HI))
    _PIO2_HI = _top_bits(float(_PIO2), 32)
    _PIO2_MID = _top_bits(float(_PIO2 - Decimal(_PIO2_HI)), 32)
    _PIO2_LO = float(_PIO2 - Decimal(_PIO2_HI) - Decimal(_PIO2_MID))
    _INV_LN2 = float(1 / _LN2)
    _INV_PIO2 = float(1 / _PIO2)
    _SQRT_HALF = float(Decimal("0.5").sqrt())

# log(1 + f) = 2 atanh(s), s = f / (2 + f), |s| ≤ 0.1716: R = Σ_{k=1..11} 2 s^{2k} / (2k + 1); the next term is
# below 2**-60 of the result
_LOG_C = [float(Fraction(2, 2 * k + 1)) for k in range(1, 12)]
# exp(r), |r| ≤ ln 2 / 2: 1 + r + Σ_{n=2..14} r^n / n!; the next term is below 2**-60
_EXP_C = [float(Fraction(1, math.factorial(n))) for n in range(1, 15)]
# |r| ≤ π/4: cos through r^18, sin through r^19 (next terms below 2**-58)
_COS_C = [float(Fraction((-1) ** j, math.factorial(2 * j))) for j in range(1, 10)]
_SIN_C = [float(Fraction((-1) ** j, math.factorial(2 * j + 1))) for j in range(1, 10)]

_COS_LIMIT = 2.0**19  # the π/2 reduction is exact while k · hi is (|k| < 2**21)


_CHUNK = 65_536  # elements per pass: the series' dozen temporaries stay in cache (6× faster on 2M elements)


def _chunked(kernel: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """``kernel`` over ``x`` as float64, in chunks of ``_CHUNK``: elementwise, so the same bits either way."""
    x = np.asarray(x, dtype=np.float64)
    if x.size <= _CHUNK:
        return kernel(x)
    flat = x.ravel()
    out = np.empty_like(flat)
    for i in range(0, flat.size, _CHUNK):
        out[i:i + _CHUNK] = kernel(flat[i:i + _CHUNK])
    return out.reshape(x.shape)


def _horner(z: np.ndarray, coefs: list[float]) -> np.ndarray:
    """c0 + z (c1 + z (c2 + …)), in that order."""
    acc = np.full_like(z, coefs[-1])
    for c in reversed(coefs[:-1]):
        acc *= z
        acc += c
    return acc


def log(x: np.ndarray) -> np.ndarray:
    """Natural log, elementwise; log(0) = −inf, log(x < 0) = nan, log(inf) = inf, nan stays nan."""
    return _chunked(_log, x)


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):  # the special values, replaced below
        out = _log_finite(x)
    special = ~((x > 0.0) & (x < math.inf))
    if special.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            out[special] = np.log(x[special])  # −inf, nan, inf: exact everywhere
    return out


def _log_finite(x: np.ndarray) -> np.ndarray:
    m, e = np.frexp(x)  # x = m · 2^e, 0.5 ≤ m < 1 (exact, subnormals included)
    low = m < _SQRT_HALF
    m = np.where(low, m + m, m)  # now √½ ≤ m < √2
    k = (e - low).astype(np.float64)
    f = m - 1.0  # exact (Sterbenz)
    s = f / (2.0 + f)
    z = s * s
    r = z * _horner(z, _LOG_C)
    hfsq = 0.5 * f * f
    return k * _LN2_HI - ((hfsq - (s * (hfsq + r) + k * _LN2_LO)) - f)


def exp(x: np.ndarray) -> np.ndarray:
    """Exponential, elementwise; overflows to inf and underflows to 0 (through subnormals) as IEEE does."""
    return _chunked(_exp, x)


def _exp(x: np.ndarray) -> np.ndarray:
    nan = np.isnan(x)
    xc = np.clip(np.where(nan, 0.0, x), -746.0, 710.0)  # beyond, the result is 0 or inf: the same after the clip
    k = np.rint(xc * _INV_LN2)
    hi = xc - k * _LN2_HI  # exact (Sterbenz): x = k ln 2 + hi − lo
    lo = k * _LN2_LO
    r = hi - lo
    q = (r * r) * _horner(r, _EXP_C[1:])  # the terms from r²/2 on; hi and lo are added apart, unrounded
    with np.errstate(over="ignore", under="ignore"):
        out = np.ldexp(1.0 + (hi - (lo - q)), k.astype(np.int64))
    if nan.any():
        out[nan] = np.nan
    return out


def cos(x: np.ndarray) -> np.ndarray:
    """Cosine, elementwise, for |x| < 2**19 (an argument beyond is refused: its reduction would not be exact)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size and not float(np.max(np.abs(x))) < _COS_LIMIT:
        raise ValueError(f"portable cos needs finite |x| < 2**19 (got max |x| = {float(np.max(np.abs(x)))!r})")
    return _chunked(_cos, x)


def _cos(x: np.ndarray) -> np.ndarray:
    k = np.rint(x * _INV_PIO2)
    r = ((x - k * _PIO2_HI) - k * _PIO2_MID) - k * _PIO2_LO
    z = r * r
    c = 1.0 + z * _horner(z, _COS_C)
    s = r + r * (z * _horner(z, _SIN_C))
    quadrant = k.astype(np.int64) & 3  # cos(r + kπ/2): cos r, −sin r, −cos r, sin r
    return np.select([quadrant == 0, quadrant == 1, quadrant == 2], [c, -s, -c], s)
