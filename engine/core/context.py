"""Context builder: a Signal plus everything known at its time → the sealed ``ContextPack``.

Strictly as of ``signal.created_ms``: market history holds only closed bars, trades only closed ones,
news only items published in (t − window, t]. The canonical JSON hash makes this checkable: a pack rebuilt
from data cut at the signal time must hash the same.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from engine.config import ContextConfig, RegimeConfig
from engine.core import portable
from engine.core.headlines import sanitize_headline, symbol_matches
from engine.core.market import MarketState, var
from engine.core.portfolio import Portfolio
from engine.ports import NewsSource
from engine.types import (
    ContextPack,
    CorrelatedPosition,
    NewsFlag,
    Position,
    RegimeInfo,
    RegimeTag,
    Signal,
    Trade,
    TradeStats,
    TradeSummary,
)

__all__ = ["ContextBuilder", "regime_closes", "regime_of", "regime_of_logs", "trade_stats", "variance_ratio_z"]

_YEAR_MS = 365 * 86_400_000
_add = np.add.reduce


def regime_of(closes: np.ndarray, cfg: RegimeConfig, timeframe_ms: int, horizon_bars: int = 48) -> RegimeInfo:
    """The regime of a symbol from its closes up to now: the tag, the variance ratio, realized vol and its percentile.

    Realized vol: the last ``cfg.lookback`` 1-bar log returns, annualised; its percentile ranks it among every
    ``lookback``-window over up to ``vol_history`` lookbacks. The tag (``cfg.method``):

    - ``lo_mackinlay`` (context-v2): the last ``test_lookback`` returns summed into non-overlapping blocks of
      ``block_bars`` (aligned at now); the variance ratio at the horizon ``h`` (``cfg.horizon_bars``, else
      ``horizon_bars``: the time stop) in blocks, m = h // block_bars, written through the block returns'
      autocorrelations, VR = 1 + 2 Σ_{j=s+1}^{m−1} (1 − j/m) ρ_j (ρ_j bias-corrected by + 1/n), leaving out
      the first ``skip_lags`` = s (bid–ask bounce lives there); z = (VR − 1) / √(θ / n),
      θ = Σ (2 (1 − j/m))² δ_j, δ_j Lo and MacKinlay's (1988) heteroskedasticity-consistent variance of ρ_j.
      |z| > ``z_crit``: trending (VR > 1) or mean_reverting; else chop (no persistence to tell from a random
      walk at the horizon). Unknown before ``test_lookback`` + 1 closes.
    - ``fixed`` (context-v1): VR of overlapping k-bar sums of the last ``lookback`` returns against
      ``trend_above`` / ``revert_below``.
    """
    return regime_of_logs(portable.log(closes[-regime_closes(cfg):]), cfg, timeframe_ms, horizon_bars)


def regime_of_logs(logs: np.ndarray, cfg: RegimeConfig, timeframe_ms: int, horizon_bars: int = 48) -> RegimeInfo:
    """``regime_of`` from the log closes of its window (the last ``regime_closes(cfg)`` at most): a replay hands
    over a slice of a preloaded series' logs, taken once (the log of a close is the same number either way)."""
    lb = cfg.lookback
    fixed = cfg.method == "fixed"
    h = cfg.k if fixed else (cfg.horizon_bars or horizon_bars)
    test_lb = lb if fixed else cfg.test_lookback
    block = None if fixed else cfg.block_bars

    def unknown(ann: float | None = None, pct: float | None = None) -> RegimeInfo:
        return RegimeInfo(RegimeTag.UNKNOWN, None, ann, pct, test_lb, h, None, block)

    if len(logs) < lb + 1:
        return unknown()
    if fixed:
        return _regime_fixed(logs, cfg, timeframe_ms, h)
    m = max(cfg.skip_lags + 2, h // cfg.block_bars)
    numbers = _regime_numbers(logs, lb, cfg.vol_history * lb + lb, test_lb, cfg.block_bars, m, cfg.skip_lags)
    var1, below, windows, state, vr, theta, nb = numbers
    if not var1 > 0:
        return unknown(0.0)
    ann = math.sqrt(var1 * _YEAR_MS / timeframe_ms)
    # the current window's rank among every lookback-window ending in the trailing history
    pct = float(below / windows * 100.0) if windows > 1 else None
    if state == 0:  # fewer than test_lookback returns
        return unknown(ann, pct)
    if state == 1 or not theta > 0:  # too few blocks, or no variance in them
        return unknown(ann, pct)
    z = (vr - 1.0) / math.sqrt(theta / nb)
    if z > cfg.z_crit and vr > 1:
        tag = RegimeTag.TRENDING
    elif z < -cfg.z_crit and vr < 1:
        tag = RegimeTag.MEAN_REVERTING
    else:
        tag = RegimeTag.CHOP
    return RegimeInfo(tag, vr, ann, pct, test_lb, h, z, block)


def _regime_numbers(logs: np.ndarray, lb: int, vol_len: int, test_lb: int, block: int, m: int,
                    skip: int) -> tuple[float, int, int, int, float, float, int]:
    """The lo_mackinlay regime's numbers, compiled (``engine.core.kernels``: the same bits as the numpy
    reference below, which is what defines them). numba is loaded by the first ContextBuilder, not with the engine."""
    from engine.core import kernels

    return kernels.regime_numbers(logs, lb, vol_len, test_lb, block, m, skip)


def _regime_numbers_numpy(logs: np.ndarray, lb: int, vol_len: int, test_lb: int, block: int, m: int,
                          skip: int) -> tuple[float, int, int, int, float, float, int]:
    """The reference definition of the lo_mackinlay regime's numbers of a window of log closes (at least
    ``lb`` + 1): (var1, below, windows, state, VR, θ, blocks). var1: the sample variance of the last ``lb``
    returns; below: how many of the ``windows`` ``lb``-windows of the last ``vol_len`` returns have a variance
    at or under var1 (× (1 + 1e-9)); state 0: var1 ≤ 0 or fewer than ``test_lb`` returns (no test), 1: no
    variance ratio (``variance_ratio_z`` is None before θ), 2: VR and θ of the last ``test_lb`` returns."""
    r_all = logs[1:] - logs[:-1]  # np.diff
    r = r_all[-lb:]
    var1 = var(r, 1)
    if not var1 > 0:
        return var1, 0, 0, 0, 0.0, 0.0, 0
    below, windows = _vol_rank(r_all, lb, vol_len, var1)
    if len(r_all) < test_lb:
        return var1, below, windows, 0, 0.0, 0.0, 0
    parts = _variance_ratio_parts(r_all[-test_lb:], block, m, skip)
    if parts is None:
        return var1, below, windows, 1, 0.0, 0.0, test_lb // block
    vr, theta, nb = parts
    return var1, below, windows, 2, vr, theta, nb


def _vol_rank(r_all: np.ndarray, lb: int, vol_len: int, var1: float) -> tuple[int, int]:
    """How many of the ``lb``-windows of the last ``vol_len`` returns have a variance at or under ``var1``
    (× (1 + 1e-9)), and how many windows there are."""
    rolling_var = _rolling_var(r_all[-vol_len:], lb)
    return int(np.count_nonzero(rolling_var <= var1 * (1 + 1e-9))), rolling_var.shape[0]


def _regime_fixed(logs: np.ndarray, cfg: RegimeConfig, timeframe_ms: int, h: int) -> RegimeInfo:
    """context-v1: the variance ratio of overlapping ``h``-bar sums of the last ``lookback`` returns."""
    lb = cfg.lookback
    r_all = logs[1:] - logs[:-1]  # np.diff
    r = r_all[-lb:]
    var1 = var(r, 1)
    if not var1 > 0:
        return RegimeInfo(RegimeTag.UNKNOWN, None, 0.0, None, lb, h, None, None)
    ann = math.sqrt(var1 * _YEAR_MS / timeframe_ms)
    below, windows = _vol_rank(r_all, lb, cfg.vol_history * lb + lb, var1)
    pct = float(below / windows * 100.0) if windows > 1 else None
    csum = np.empty(lb + 1)  # np.concatenate(([0.0], np.cumsum(r))): the same additions, fewer calls
    csum[0] = 0.0
    np.add.accumulate(r, out=csum[1:])
    rk = csum[h:] - csum[:-h]
    vr = var(rk, 1) / (h * var1)
    if vr >= cfg.trend_above:
        tag = RegimeTag.TRENDING
    elif vr <= cfg.revert_below:
        tag = RegimeTag.MEAN_REVERTING
    else:
        tag = RegimeTag.CHOP
    return RegimeInfo(tag, vr, ann, pct, lb, h)


def variance_ratio_z(r: np.ndarray, block: int, m: int, skip: int) -> tuple[float, float] | None:
    """(VR, robust z) of the ``m``-block variance ratio of ``r`` summed into blocks of ``block`` (aligned at the
    end), autocorrelation lags 1..``skip`` left out; None when the blocks have no variance or are too few.

    Every sum is a numpy reduction, never a BLAS dot: a dot's order of additions depends on the CPU's BLAS
    kernel, so the same window gave figures that differ in the last bits (and packs that hash differently)
    on two machines. The lag products are laid out zero-padded to the full length, one row per lag, and
    reduced along the rows: the same order of additions on every CPU."""
    parts = _variance_ratio_parts(r, block, m, skip)
    if parts is None or not parts[1] > 0:
        return None
    vr, theta, nb = parts
    return vr, (vr - 1.0) / math.sqrt(theta / nb)


def _variance_ratio_parts(r: np.ndarray, block: int, m: int, skip: int) -> tuple[float, float, int] | None:
    """``variance_ratio_z``'s VR, θ and number of blocks (None: too few blocks, or no variance in them)."""
    nb = r.shape[0] // block
    if nb < 2 * m:
        return None
    b = _add(r[r.shape[0] - nb * block:].reshape(nb, block), axis=1)
    src, w, w2 = _lag_plan(nb, m, skip)
    # x = b − b.mean() and x² written straight into the lag products' buffer, with the zero pad every
    # out-of-range lag index points to (the same operations as the array methods, without their wrappers)
    series = np.empty((2, nb + 1))
    x, x2 = series[0, :nb], series[1, :nb]
    np.subtract(b, _add(b) / nb, out=x)
    np.multiply(x, x, out=x2)
    d = float(_add(x2))
    if not d > 0:
        return None
    series[:, nb] = 0.0
    # lag_sums[0, k] = Σ_i x[i + j_k] x[i], lag_sums[1, k] the same of x²: each a row of zero-padded products
    lag_sums = _add(np.take(series, src) * series[:, None, :nb], axis=2)
    # + 1/n: the sample autocorrelation's first-order bias under the null (Kendall), which otherwise pulls a
    # random walk's ratio below 1 by Σw/n (measured: 15 % of random walks tagged mean_reverting at n = 120)
    rho = lag_sums[0] / d + 1.0 / nb
    delta = lag_sums[1] * nb / (d * d)
    vr = 1.0 + float(_add(w * rho))
    theta = float(_add(w2 * delta))
    return vr, theta, nb


@functools.lru_cache(maxsize=64)
def _lag_plan(nb: int, m: int, skip: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For ``nb`` blocks and lags ``skip`` + 1 .. ``m`` − 1: the flat index of x[i + j] (and of x²[i + j]) in
    the (2, ``nb`` + 1) buffer for every lag row and i (the zero pad where i + j runs past the end), the
    weights 2 (1 − j/m) and their squares. Read-only."""
    lags = np.arange(skip + 1, m)
    one = np.arange(nb)[None, :] + lags[:, None]
    one[one >= nb] = nb
    src = np.stack([one, one + (nb + 1)])  # flat indices into the (2, nb + 1) buffer of x and x²
    w = 2.0 * (1.0 - lags / m)
    plan = (src, w, w * w)
    for a in plan:
        a.flags.writeable = False
    return plan


def regime_closes(cfg: RegimeConfig) -> int:
    """How many closes ``regime_of`` reads."""
    lb = cfg.lookback
    return max(cfg.vol_history * lb + lb, lb if cfg.method == "fixed" else cfg.test_lookback) + 1


def _rolling_var(r: np.ndarray, lb: int) -> np.ndarray:
    """Sample variance of every ``lb``-window of ``r``, from running sums (O(n)). This exact sequence of
    operations defines the vol percentile's figures."""
    # c1, c2 = np.concatenate(([0.0], np.cumsum(r))), the same of r * r, and their window sums c[lb:] − c[:-lb]:
    # accumulated as the real and imaginary parts of one complex series, since a complex addition is the two
    # real additions (the same bits; the two running sums' additions overlap in one pass)
    n = r.shape[0]
    both = np.empty(n, dtype=np.complex128)
    both.real = r
    np.multiply(r, r, out=both.imag)
    c = np.empty(n + 1, dtype=np.complex128)
    c[0] = 0.0
    np.add.accumulate(both, out=c[1:])
    s = c[lb:] - c[:-lb]
    s1, s2 = s.real, s.imag
    return (s2 - s1 * s1 / lb) / (lb - 1)


def trade_stats(trades: Sequence[Trade]) -> TradeStats:
    if not trades:
        return TradeStats(0, None, 0)
    wins = sum(1 for t in trades if t.pnl > 0)
    streak = 0
    for t in reversed(trades):
        if t.pnl > 0:
            break
        streak += 1
    return TradeStats(len(trades), wins / len(trades), streak)


@functools.lru_cache(maxsize=4096)
def _sanitized_str(text: str, max_chars: int) -> str:
    return sanitize_headline(text, max_chars)


def _sanitized(text: str, max_chars: int) -> str:
    """``sanitize_headline``: a headline stays in the news window for hours, so it is cleaned once (a pure
    function of its arguments)."""
    if type(text) is str:
        return _sanitized_str(text, max_chars)
    return sanitize_headline(text, max_chars)


class ContextBuilder:
    def __init__(self, cfg: ContextConfig, market: MarketState, portfolio: Portfolio, news: NewsSource,
                 timeframe_ms: int, horizon_bars: int = 48) -> None:
        self.cfg = cfg
        self.horizon_bars = horizon_bars  # the time stop: the regime's horizon unless context.regime names one
        self.market = market
        self.portfolio = portfolio
        self.news = news
        self.timeframe_ms = timeframe_ms
        self._regime_cache: dict[tuple[str, int], RegimeInfo] = {}
        self._recent_cache: dict[tuple[int, ...], tuple[tuple[Trade, ...], tuple[TradeSummary, ...], TradeStats]] = {}
        if cfg.regime.method != "fixed":  # the compiled regime is loaded with the pipeline, not with its first pack
            from engine.core import kernels

            kernels.warm()

    def build(self, signal: Signal, gate_note: str, marks: Mapping[str, float]) -> ContextPack:
        t = signal.created_ms
        summaries, stats = self._recent_parts(self._recent(signal.strategy_id, t))
        regime = self._regime(signal.symbol, t)
        equity = self.portfolio.equity(marks)
        correlated = self._correlated(signal, self.portfolio.positions.values(), marks, equity)
        return ContextPack.build(
            signal=signal,
            recent_trades=summaries,
            trade_stats=stats,
            regime=regime,
            correlated=correlated,
            news=self._news(signal, t),
            gate_note=gate_note,
            equity=equity,
        )

    def _recent(self, strategy_id: str, t: int) -> list[Trade]:
        """The last N trades of the strategy closed by ``t``: filter first, then take the last N (later
        trades must not crowd out earlier ones). In a running pipeline nothing has closed after t yet."""
        n = self.cfg.recent_trades
        if n <= 0:
            return []
        last = self.portfolio.recent_trades(strategy_id, n)
        if not last or last[-1].closed_ms <= t:
            return last
        known = self.portfolio.recent_trades(strategy_id, self.portfolio.recent_capacity)
        return [tr for tr in known if tr.closed_ms <= t][-n:]

    def _recent_parts(self, recent: list[Trade]) -> tuple[tuple[TradeSummary, ...], TradeStats]:
        """The trades' summaries and stats. A strategy's list changes only when one of its trades closes: they
        are kept per list, by the identities of its (immutable) trades, which each entry holds, so that no
        key's ids can be taken by other objects while it is here."""
        key = tuple(map(id, recent))
        hit = self._recent_cache.get(key)
        if hit is None:
            if len(self._recent_cache) >= 256:
                self._recent_cache.clear()
            summary = self.portfolio.summary
            hit = self._recent_cache[key] = (tuple(recent), tuple([summary(tr) for tr in recent]), trade_stats(recent))
        return hit[1], hit[2]

    def _regime(self, symbol: str, t: int) -> RegimeInfo:
        # signals of several strategies on one symbol in one slice share the computation
        key = (symbol, t)
        hit = self._regime_cache.get(key)
        if hit is None:
            if len(self._regime_cache) > 64:
                self._regime_cache.clear()
            rc = self.cfg.regime
            logs = self.market.history(symbol).log_closes(regime_closes(rc), as_of_ms=t)
            hit = regime_of_logs(logs, rc, self.timeframe_ms, self.horizon_bars)
            self._regime_cache[key] = hit
        return hit

    def _correlated(self, signal: Signal, positions: Sequence[Position] | object, marks: Mapping[str, float],
                    equity: float) -> tuple[CorrelatedPosition, ...]:
        if self.cfg.correlated_top <= 0:
            return ()
        rows: list[CorrelatedPosition] = []
        held = sorted(positions, key=lambda p: p.signal_id)  # type: ignore[arg-type]
        corr = self.market.correlations(signal.symbol, [p.symbol for p in held], self.cfg.correlation.lookback,
                                        as_of_ms=signal.created_ms) if held else {}
        for pos in held:
            mark = marks.get(pos.symbol, pos.entry_price)
            rows.append(CorrelatedPosition(
                symbol=pos.symbol,
                side=pos.side,
                size_pct_equity=pos.qty * mark / equity * 100.0 if equity > 0 else 0.0,
                corr=corr[pos.symbol],
                unrealized_pnl_pct=pos.side.sign * (mark - pos.entry_price) / pos.entry_price * 100.0,
                strategy_id=pos.strategy_id,
            ))
        rows.sort(key=lambda c: (-(abs(c.corr) if c.corr is not None else -1.0), c.symbol, c.strategy_id))
        return tuple(rows[: self.cfg.correlated_top])

    def _news(self, signal: Signal, t: int) -> tuple[NewsFlag, ...]:
        start = t - int(self.cfg.news_window_h * 3_600_000)
        items = self.news.items(start, t)
        if not items:
            return ()
        flags = []
        for item in items:
            if symbol_matches(item, signal.symbol):
                flags.append(NewsFlag(item.category, (t - item.published_ms) / 60_000.0,
                                      _sanitized(item.headline, self.cfg.headline_chars),
                                      _sanitized(item.source, 40)))
        return tuple(flags)
