"""The same config and seed give the same run on every CPU: portable exp/log/cos, and a replay under the kernels
numpy, OpenBLAS and the C library pick by CPU feature (AVX-512 or not, BLAS core type, FMA) records the same
bits."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np
import pytest

from engine.core import portable

ROOT = Path(__file__).resolve().parents[1]
_PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494")


def _ulps(ours: float, exact: Decimal) -> float:
    ref = float(exact)
    return float(abs(Decimal(ours) - exact) / Decimal(math.ulp(ref) if ref else 5e-324))


def _worst_ulps(ours: np.ndarray, x: np.ndarray, exact: Callable[[Decimal], Decimal]) -> float:
    """The largest error of ``ours`` against ``exact`` of each ``x``, in ulps, at 50 digits."""
    with localcontext() as ctx:
        ctx.prec = 50
        return max(_ulps(float(o), exact(Decimal(float(v)))) for o, v in zip(ours, x, strict=True))


def _dcos(x: float) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 60
        d = Decimal(x)
        d -= 2 * _PI * (d / (2 * _PI)).to_integral_value()
        term = total = Decimal(1)
        n = 0
        while abs(term) > Decimal("1e-50"):
            n += 2
            term = -term * d * d / (n * (n - 1))
            total += term
        return total


def _samples(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_log_is_within_an_ulp_of_the_exact_value() -> None:
    rng = _samples(1)
    x = np.concatenate([rng.uniform(0.5, 2.0, 3000), np.exp(rng.uniform(-700, 700, 3000)),
                        rng.uniform(1.0, 1e5, 3000), [5e-324, 1e-310, 0.5, 1.0, 2.0, 1.7976931348623157e308]])
    assert _worst_ulps(portable.log(x), x, Decimal.ln) < 1.0
    assert portable.log(np.array([1.0]))[0] == 0.0


def test_exp_is_within_an_ulp_and_saturates_like_ieee() -> None:
    rng = _samples(2)
    x = np.concatenate([rng.uniform(-1, 1, 3000), rng.uniform(-700, 709, 3000), rng.normal(0, 0.01, 3000), [0.0]])
    assert _worst_ulps(portable.exp(x), x, Decimal.exp) < 1.0
    assert portable.exp(np.array([0.0]))[0] == 1.0


def test_cos_is_within_two_ulps_on_its_domain() -> None:
    rng = _samples(3)
    x = np.concatenate([rng.uniform(-7, 7, 3000), rng.uniform(-1e4, 1e4, 1000), [0.0, 1e-300]])
    ours = portable.cos(x)
    assert max(_ulps(float(o), _dcos(float(v))) for o, v in zip(ours, x, strict=True)) < 2.0
    with pytest.raises(ValueError, match=r"portable cos needs finite \|x\| < 2\*\*19 \(got max \|x\| = "):
        portable.cos(np.array([1.0, 1e6]))
    with pytest.raises(ValueError, match="portable cos needs finite"):
        portable.cos(np.array([np.nan]))


def test_special_values_are_numpy_s_without_warnings() -> None:
    with np.errstate(all="raise"):
        got_log = portable.log(np.array([0.0, -1.0, np.inf, np.nan, -np.inf]))
        got_exp = portable.exp(np.array([800.0, -800.0, np.inf, -np.inf, np.nan, -740.0]))
    np.testing.assert_array_equal(got_log, [-np.inf, np.nan, np.inf, np.nan, np.nan])
    np.testing.assert_array_equal(got_exp[:5], [np.inf, 0.0, np.inf, 0.0, np.nan])
    assert 0.0 < got_exp[5] < 1e-320  # a subnormal, not flushed to 0


def test_the_results_do_not_depend_on_the_array_s_layout() -> None:
    """Elementwise: a slice of the log of a series is the log of the slice (a replay takes it once)."""
    x = 100 * np.exp(np.cumsum(_samples(4).normal(0, 0.01, 3 * portable._CHUNK + 1002)))  # chunked, off-grid
    whole = portable.log(x)
    np.testing.assert_array_equal(portable.log(x[1234:4321]), whole[1234:4321])
    np.testing.assert_array_equal(portable.log(x[12345:]), whole[12345:])
    np.testing.assert_array_equal(portable.log(x[::7]), whole[::7])
    np.testing.assert_array_equal(portable.log(x.reshape(-1, 7))[3], whole[21:28])
    np.testing.assert_array_equal(portable.exp(whole[17:99]), portable.exp(whole)[17:99])
    np.testing.assert_array_equal(portable.exp(whole[70_000:]), portable.exp(whole)[70_000:])
    np.testing.assert_array_equal(portable.cos(whole[5:]), portable.cos(whole)[5:])
    assert portable.log(np.float64(1.0)) == 0.0 and portable.exp(0.0) == 1.0


_REPLAY_PROBE = """
import hashlib, itertools, sys
import numpy as np
sys.path.insert(0, {root!r})
from engine.app import build_feed, build_pipeline
from engine.config import load_config
from tests.conftest import record_digest, step_all
loaded = load_config(overrides={{"run": {{"name": "kernels", "db_url": "sqlite://"}},
                                 "market": {{"symbols": ["BTC/USDT", "ETH/USDT", "SOL/USDT", "DOT/USDT"],
                                            "synthetic": {{"bars": 4000}}}}}})
feed = build_feed(loaded)
pipe = build_pipeline(loaded, feed=feed)
records = step_all(pipe, feed.slices(), loaded.config.execution.starting_equity, at_ms=None)
reviewed = sum(len(r.reviews) for r in records)
fills = sum(len(r.fills) for r in records)
# what the kernels themselves give here: if no variant changes these, the test has nothing to tell apart
x = np.random.default_rng(5).uniform(1, 200, 200_000)
raw = hashlib.sha256(np.log(x).tobytes() + np.exp(x / 100).tobytes() + np.cos(x).tobytes()
                     + repr([float(np.dot(x[j:], x[:-j])) for j in range(1, 30)]).encode()).hexdigest()
print(record_digest(records), reviewed, fills, raw)
"""


def _variants(numba_cache: str) -> list[dict[str, str]]:
    """Environments that switch numpy's CPU-dispatched kernels off (above X86-64-v3, then all), OpenBLAS's core
    type, the C library's FMA variants and the CPU numba compiles the kernels for (a generic x86-64, compiled
    into ``numba_cache``): what another machine of a cluster would run."""
    from bench.__main__ import numpy_dispatch

    dispatch = numpy_dispatch()  # empty without run-time dispatch: the other variants still apply
    above_v3 = [f for f in dispatch if f not in ("X86_V2", "X86_V3")]
    out: list[dict[str, str]] = [{}]
    if above_v3:
        out.append({"NPY_DISABLE_CPU_FEATURES": " ".join(above_v3)})
    if dispatch:
        out.append({"NPY_DISABLE_CPU_FEATURES": " ".join(dispatch)})
    out += [{"OPENBLAS_CORETYPE": "Sandybridge"}, {"OPENBLAS_CORETYPE": "Nehalem"},
            {"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA"},  # the C library's plain exp/log (glibc only)
            {"NUMBA_CPU_NAME": "generic", "NUMBA_CACHE_DIR": numba_cache}]  # kernels without AVX or FMA
    return out


@pytest.mark.slow
def test_a_replay_records_the_same_bits_under_every_cpu_kernel(tmp_path: Path) -> None:
    """Synthetic bars, regime tags, correlations, packs, verdicts and fills: one digest whatever kernels numpy
    and OpenBLAS pick. Fails on code that takes numpy's exp/log (they differ with AVX-512) or a BLAS dot."""
    runs = []
    for extra in _variants(str(tmp_path / "numba")):
        env = {k: v for k, v in os.environ.items() if k not in ("NPY_DISABLE_CPU_FEATURES", "OPENBLAS_CORETYPE",
                                                              "GLIBC_TUNABLES", "NUMBA_CPU_NAME", "NUMBA_CACHE_DIR")}
        done = subprocess.run([sys.executable, "-c", _REPLAY_PROBE.format(root=str(ROOT))], env={**env, **extra},
                              capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert done.returncode == 0, f"{extra}: {done.stderr[-2000:]}"
        digest, reviewed, fills, raw = done.stdout.split()
        runs.append((extra, digest, int(reviewed), int(fills), raw))
    assert runs[0][2] > 20 and runs[0][3] > 20, "the probe replay must review and fill enough to mean something"
    if len({r[4] for r in runs}) == 1:
        pytest.skip("numpy and OpenBLAS give the same bits under every kernel on this CPU: nothing to tell apart")
    assert {r[1] for r in runs} == {runs[0][1]}, [(r[0], r[1][:12]) for r in runs]
