"""The regime tag at the trade's horizon (context-v2): Lo–MacKinlay's robust z of the block-return variance ratio."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine.config import RegimeConfig
from engine.core.context import regime_closes, regime_of, variance_ratio_z
from engine.types import PACK_VERSION, ContextPack, RegimeInfo, RegimeTag, Side, Signal, TradeStats

TF = 300_000


def _path(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(0, 0.001, n)
    if kind == "rw":
        lp = np.cumsum(e)
    elif kind == "bounce":  # a random walk seen through bid–ask noise: 1-bar returns strongly anti-correlated
        lp = np.cumsum(e) + rng.normal(0, 0.002, n)
    elif kind == "trend":  # a slowly wandering drift: moves persist over the horizon
        mu = np.zeros(n)
        for i in range(1, n):
            mu[i] = 0.99 * mu[i - 1] + rng.normal(0, 0.0003)
        lp = np.cumsum(e + mu)
    else:  # "revert": a large stationary deviation with a half-life near the horizon
        u = np.zeros(n)
        for i in range(1, n):
            u[i] = 0.97 * u[i - 1] + rng.normal(0, 0.01)
        lp = np.cumsum(e) + u
    return 100 * np.exp(lp)


def _reference(r: np.ndarray, q: int, m: int, skip: int) -> tuple[float, float]:
    """The textbook formula, one term at a time."""
    nb = len(r) // q
    b = [sum(r[len(r) - nb * q + i * q: len(r) - nb * q + (i + 1) * q]) for i in range(nb)]
    mu = sum(b) / nb
    x = [v - mu for v in b]
    d = sum(v * v for v in x)
    vr, theta = 1.0, 0.0
    for j in range(skip + 1, m):
        rho = sum(x[t] * x[t - j] for t in range(j, nb)) / d + 1 / nb
        delta = nb * sum(x[t] ** 2 * x[t - j] ** 2 for t in range(j, nb)) / d ** 2
        w = 2 * (1 - j / m)
        vr += w * rho
        theta += w * w * delta
    return vr, (vr - 1) / math.sqrt(theta / nb)


@pytest.mark.parametrize("seed", range(3))
def test_variance_ratio_z_is_the_textbook_formula(seed: int) -> None:
    r = np.random.default_rng(seed).standard_t(4, 480) * 0.001
    got = variance_ratio_z(r, 4, 12, 1)
    assert got is not None
    assert got == pytest.approx(_reference(r, 4, 12, 1), rel=1e-9)
    assert variance_ratio_z(r, 4, 12, 0) == pytest.approx(_reference(r, 4, 12, 0), rel=1e-9)
    assert variance_ratio_z(np.zeros(480), 4, 12, 1) is None  # no variance: nothing to test
    assert variance_ratio_z(r[:40], 4, 12, 1) is None  # fewer than 2 m blocks


def _tags(kind: str, cfg: RegimeConfig, seeds: range) -> dict[str, int]:
    tags = [str(regime_of(_path(kind, 2500, s), cfg, TF).tag) for s in seeds]
    return {t: tags.count(t) for t in sorted(set(tags))}


def test_bid_ask_bounce_is_not_mean_reversion_at_the_horizon() -> None:
    # the tag of context-v1 calls almost every bounced random walk mean_reverting; the horizon tag does not
    old = _tags("bounce", RegimeConfig(method="fixed"), range(20))
    assert old.get("mean_reverting", 0) >= 18
    assert _tags("bounce", RegimeConfig(), range(20)) == {"chop": 20}


def test_persistent_drift_is_trending_and_a_random_walk_mostly_chop() -> None:
    assert _tags("trend", RegimeConfig(), range(20)) == {"trending": 20}
    rw = _tags("rw", RegimeConfig(), range(40))
    assert rw.get("chop", 0) >= 34  # one-sided 5 % tests either way: about 90 % chop
    assert rw.get("trending", 0) <= 3 and rw.get("mean_reverting", 0) <= 3


def test_mean_reversion_at_the_horizon_is_found_with_enough_history() -> None:
    got = _tags("revert", RegimeConfig(test_lookback=1920), range(20))
    assert got.get("mean_reverting", 0) >= 14 and got.get("trending", 0) == 0


def test_warm_up_is_unknown_but_volatility_is_already_there() -> None:
    cfg = RegimeConfig()
    closes = _path("rw", cfg.test_lookback, 1)  # one close short of test_lookback returns
    info = regime_of(closes, cfg, TF)
    assert info.tag is RegimeTag.UNKNOWN and info.variance_ratio is None and info.z is None
    assert info.realized_vol_ann is not None and info.realized_vol_ann > 0
    enough = regime_of(_path("rw", cfg.test_lookback + 1, 1), cfg, TF)
    assert enough.tag is not RegimeTag.UNKNOWN and enough.z is not None
    assert (enough.lookback_bars, enough.k, enough.block_bars) == (480, 48, 4)
    assert regime_closes(cfg) == max(cfg.vol_history * cfg.lookback + cfg.lookback, cfg.test_lookback) + 1


def test_the_horizon_is_the_time_stop_unless_named() -> None:
    closes = _path("rw", 2500, 2)
    assert regime_of(closes, RegimeConfig(), TF, horizon_bars=96).k == 96
    assert regime_of(closes, RegimeConfig(horizon_bars=24), TF, horizon_bars=96).k == 24


def test_bad_regime_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="horizon_bars // block_bars"):
        RegimeConfig(horizon_bars=8, block_bars=4)
    with pytest.raises(ValueError, match="test_lookback must be >= 4"):
        RegimeConfig(horizon_bars=200, test_lookback=480)


def _pack(regime: RegimeInfo, version: str = PACK_VERSION) -> ContextPack:
    sig = Signal("s1", "st", "BTC/USDT", Side.LONG, 1_700_000_000_000, 100.0, 98.0, 104.0, 0.1, "5m", ("style:trend",))
    return ContextPack.build(signal=sig, recent_trades=(), trade_stats=TradeStats(0, None, 0), regime=regime,
                             correlated=(), news=(), gate_note="no gates", equity=10_000.0, version=version)


def test_the_pack_version_is_in_the_hash_and_old_packs_keep_theirs() -> None:
    new = _pack(RegimeInfo(RegimeTag.CHOP, 0.9, 0.5, 40.0, 480, 48, -0.7, 4))
    d = json.loads(new.json)
    assert d["version"] == PACK_VERSION == "context-v2" and d["regime"]["z"] == -0.7
    assert ContextPack.from_json(new.json).hash == new.hash
    # a context-v1 pack (no version key, no z): rebuilt from its stored JSON with the same hash
    old = _pack(RegimeInfo(RegimeTag.CHOP, 0.9, 0.5, 40.0, 96, 8), version="context-v1")
    assert "version" not in json.loads(old.json) and "z" not in json.loads(old.json)["regime"]
    again = ContextPack.from_json(old.json)
    assert again.hash == old.hash and again.version == "context-v1"
    # the same facts under another version never share a hash (nor a cached verdict)
    assert _pack(RegimeInfo(RegimeTag.CHOP, 0.9, 0.5, 40.0, 96, 8)).hash != old.hash


_KERNEL_PROBE = """
import hashlib, json, sys
import numpy as np
from engine.config import RegimeConfig
from engine.core.context import regime_of
rng = np.random.default_rng(7)
cfg = RegimeConfig()
out, dots = [], []
for k in range(200):
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.001 * (1 + k % 5), 700)))
    info = regime_of(closes, cfg, 300_000)
    out.append(repr((info.tag.value, info.variance_ratio, info.z, info.realized_vol_ann, info.vol_percentile)))
    x = np.diff(np.log(closes))
    dots.append(float(np.dot(x[3:], x[:-3])))
print(hashlib.sha256(json.dumps(out).encode()).hexdigest(), hashlib.sha256(json.dumps(dots).encode()).hexdigest())
"""


def test_the_regime_does_not_depend_on_the_cpu_s_blas_kernel() -> None:
    """A BLAS dot adds in an order its CPU kernel picks: the regime's figures (and so a pack's hash) must not
    follow it, or two cluster workers seal the same signal differently. Runs the regime under several of the
    bundled OpenBLAS's kernels; meaningful only where those kernels give np.dot different bits (else skipped)."""
    import os
    import subprocess
    import sys

    regimes, dots = set(), set()
    for core in ("Haswell", "Sandybridge", "Nehalem", "Prescott"):
        env = {**os.environ, "OPENBLAS_CORETYPE": core}
        done = subprocess.run([sys.executable, "-c", _KERNEL_PROBE], env=env, capture_output=True, text=True,
                              check=True, timeout=120)
        regime, dot = done.stdout.split()
        regimes.add(regime)
        dots.add(dot)
    if len(dots) == 1:
        pytest.skip("this machine's BLAS gives the same dots under every kernel: nothing to tell apart")
    assert len(regimes) == 1
