"""Market state: closed bars in → per-symbol history with O(1) incremental indicators and rolling stats.

Indicators are created on first use and then updated on every appended bar, so a strategy asking for
``sma(48)`` costs a dict lookup per bar, not a pass over the window. Everything here is causal: a value
is computed only from bars that have closed.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from engine.core import portable
from engine.types import Bar

__all__ = ["MarketState", "SymbolHistory", "var"]

_DAY_MS = 86_400_000


class _Indicator:
    __slots__ = ("prev", "value")

    def __init__(self) -> None:
        self.value: float | None = None
        self.prev: float | None = None

    def push(self, v: float | None) -> None:
        self.prev = self.value
        self.value = v


class _Sma(_Indicator):
    __slots__ = ("n", "total", "window")

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.window: deque[float] = deque()
        self.total = 0.0

    def update(self, h: float, low: float, c: float, pc: float | None) -> None:
        w = self.window
        w.append(c)
        self.total += c
        if len(w) > self.n:
            self.total -= w.popleft()
        self.push(self.total / self.n if len(w) == self.n else None)


class _Ema(_Indicator):
    __slots__ = ("alpha", "n", "seed")

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.alpha = 2.0 / (n + 1)
        self.seed: list[float] = []

    def update(self, h: float, low: float, c: float, pc: float | None) -> None:
        if self.value is None:
            self.seed.append(c)
            self.push(sum(self.seed) / self.n if len(self.seed) == self.n else None)
        else:
            self.push(self.value + self.alpha * (c - self.value))


class _Atr(_Indicator):
    __slots__ = ("n", "seed")

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.seed: list[float] = []

    def update(self, h: float, low: float, c: float, pc: float | None) -> None:
        tr = h - low if pc is None else max(h - low, abs(h - pc), abs(low - pc))
        if self.value is None:
            self.seed.append(tr)
            self.push(sum(self.seed) / self.n if len(self.seed) == self.n else None)
        else:
            self.push((self.value * (self.n - 1) + tr) / self.n)


class _Rsi(_Indicator):
    __slots__ = ("avg_gain", "avg_loss", "gains", "losses", "n")

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.gains: list[float] = []
        self.losses: list[float] = []
        self.avg_gain = 0.0
        self.avg_loss = 0.0

    def update(self, h: float, low: float, c: float, pc: float | None) -> None:
        if pc is None:
            self.push(None)
            return
        d = c - pc
        g, lo = (d, 0.0) if d > 0 else (0.0, -d)
        if len(self.gains) < self.n:
            self.gains.append(g)
            self.losses.append(lo)
            if len(self.gains) < self.n:
                self.push(None)
                return
            self.avg_gain = sum(self.gains) / self.n
            self.avg_loss = sum(self.losses) / self.n
        else:
            self.avg_gain = (self.avg_gain * (self.n - 1) + g) / self.n
            self.avg_loss = (self.avg_loss * (self.n - 1) + lo) / self.n
        if self.avg_loss == 0.0:
            self.push(100.0 if self.avg_gain > 0 else 50.0)
        else:
            self.push(100.0 - 100.0 / (1.0 + self.avg_gain / self.avg_loss))


class _Extreme(_Indicator):
    """Highest high / lowest low of the n bars before the current one (monotonic deque, O(1) amortised)."""

    __slots__ = ("count", "dq", "highest", "n", "pending")

    def __init__(self, n: int, highest: bool) -> None:
        super().__init__()
        self.n = n
        self.highest = highest
        self.dq: deque[tuple[int, float]] = deque()
        self.count = 0
        self.pending: float | None = None  # the current bar enters the window on the next update

    def update(self, h: float, low: float, c: float, pc: float | None) -> None:
        if self.pending is not None:
            v = self.pending
            dq = self.dq
            if self.highest:
                while dq and dq[-1][1] <= v:
                    dq.pop()
            else:
                while dq and dq[-1][1] >= v:
                    dq.pop()
            dq.append((self.count, v))
            self.count += 1
            while dq[0][0] <= self.count - 1 - self.n:
                dq.popleft()
        self.pending = h if self.highest else low
        self.push(self.dq[0][1] if self.count >= self.n else None)


_FACTORIES = {
    "sma": _Sma,
    "ema": _Ema,
    "atr": _Atr,
    "rsi": _Rsi,
    "highest": lambda n: _Extreme(n, True),
    "lowest": lambda n: _Extreme(n, False),
}


# ------------------------------------------------------------------------------------ whole series
# A finite replay knows its bars in advance (``SymbolHistory.preload``): each indicator is then computed
# once over the whole column, with exactly the arithmetic of its incremental class above (same
# operations, same order: the results are the same bits), and read by index as bars are appended.


def _sma_series(c: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    # running total: (total + c[i]) - c[i-n] at every step, as _Sma; the interleaved sequence
    # c0, 0, c1, 0, ..., cn, -c0, ... accumulated in order gives exactly those partial sums
    m = len(c)
    seq = np.zeros(2 * m)
    seq[0::2] = c
    if m > n:
        seq[2 * n + 1 :: 2] = -c[: m - n]
    return np.add.accumulate(seq)[1::2] / n, n - 1


def _ema_series(c: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    out = np.full(len(c), np.nan)
    if len(c) < n:
        return out, n - 1
    closes = c.tolist()
    alpha = 2.0 / (n + 1)
    v = sum(closes[:n]) / n
    vals = [v]
    for x in closes[n:]:
        v = v + alpha * (x - v)
        vals.append(v)
    out[n - 1 :] = vals
    return out, n - 1


def _true_range(h: np.ndarray, low: np.ndarray, c: np.ndarray) -> np.ndarray:
    tr = h - low
    if len(c) > 1:
        pc = c[:-1]
        tr[1:] = np.maximum(np.maximum(tr[1:], np.abs(h[1:] - pc)), np.abs(low[1:] - pc))
    return tr


def _atr_series(h: np.ndarray, low: np.ndarray, c: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    out = np.full(len(c), np.nan)
    if len(c) < n:
        return out, n - 1
    tr = _true_range(h, low, c).tolist()
    m = n - 1
    v = sum(tr[:n]) / n
    vals = [v]
    for x in tr[n:]:
        v = (v * m + x) / n
        vals.append(v)
    out[n - 1 :] = vals
    return out, n - 1


def _rsi_series(c: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    out = np.full(len(c), np.nan)
    if len(c) <= n:
        return out, n
    d = c[1:] - c[:-1]  # from the second bar on, as _Rsi: gain d or 0.0, loss 0.0 or -d
    up = d > 0
    gains, losses = np.where(up, d, 0.0).tolist(), np.where(up, 0.0, -d).tolist()
    m = n - 1
    ag, al = sum(gains[:n]) / n, sum(losses[:n]) / n
    avg_gain, avg_loss = [ag], [al]
    for g, lo in zip(gains[n:], losses[n:], strict=True):
        ag = (ag * m + g) / n
        al = (al * m + lo) / n
        avg_gain.append(ag)
        avg_loss.append(al)
    g_arr, l_arr = np.array(avg_gain), np.array(avg_loss)
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = 100.0 - 100.0 / (1.0 + g_arr / l_arr)
    out[n:] = np.where(l_arr == 0.0, np.where(g_arr > 0, 100.0, 50.0), rsi)
    return out, n


def _extreme_series(x: np.ndarray, n: int, highest: bool) -> tuple[np.ndarray, int]:
    # the n bars before the current one: value at i is max/min of x[i-n .. i-1] (exact, like the deque)
    out = np.full(len(x), np.nan)
    if len(x) > n:
        w = np.lib.stride_tricks.sliding_window_view(x[:-1], n)
        out[n:] = w.max(axis=1) if highest else w.min(axis=1)
    return out, n


def _series(name: str, n: int, h: np.ndarray, low: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, int]:
    if name == "sma":
        return _sma_series(c, n)
    if name == "ema":
        return _ema_series(c, n)
    if name == "atr":
        return _atr_series(h, low, c, n)
    if name == "rsi":
        return _rsi_series(c, n)
    if name in ("highest", "lowest"):
        return _extreme_series(h if name == "highest" else low, n, name == "highest")
    raise KeyError(name)


class _SeriesIndicator:
    """An indicator of a preloaded history: its whole series, read at the history's last appended bar."""

    __slots__ = ("_first", "_hist", "_values", "array")

    def __init__(self, hist: SymbolHistory, array: np.ndarray, first: int) -> None:
        array.flags.writeable = False
        self.array = array  # NaN before ``first``
        self._values = memoryview(array)  # indexing gives Python floats
        self._first = first
        self._hist = hist

    @property
    def value(self) -> float | None:
        i = self._hist._n - 1
        return self._values[i] if i >= self._first else None

    @property
    def prev(self) -> float | None:
        i = self._hist._n - 2
        return self._values[i] if i >= self._first else None


class SymbolHistory:
    """Closed history of one symbol (implements ``engine.ports.History``).

    Arrays live in a buffer that keeps at least ``keep`` recent bars; older bars are dropped so memory
    stays flat over arbitrarily long runs. Indicators see every bar regardless.
    """

    def __init__(self, symbol: str, timeframe_ms: int, keep: int = 4096) -> None:
        self.symbol = symbol
        self.timeframe_ms = timeframe_ms
        self.keep = max(keep, 64)
        cap = 2 * self.keep
        self._close_ms = np.zeros(cap, dtype=np.int64)
        self._open = np.zeros(cap)
        self._high = np.zeros(cap)
        self._low = np.zeros(cap)
        self._close = np.zeros(cap)
        self._volume = np.zeros(cap)
        self._n = 0  # bars in the buffer
        self.count = 0  # bars ever appended
        self._last: Bar | None = None
        self._prev_close: float | None = None
        self._prev_prev_close: float | None = None
        self._ind: dict[tuple[str, int], _Indicator] = {}
        self._ind_list: list[_Indicator] = []
        self._lr_cache: dict[tuple[str, int, int], Any] = {}  # see _per_window
        # Rolling 24h quote volume (volume × close), exact over the trailing day of bars.
        self._qv_window: deque[tuple[int, float]] = deque()
        self._qv_total = 0.0
        self._preloaded = 0  # > 0: the whole series is known (see preload); append only advances
        self._qv_series: memoryview | None = None
        self._first_volume = -1  # bar count at which the first bar with volume > 0 arrived (-1: none yet)
        self._logs: np.ndarray | None = None  # preloaded: log closes of the whole series (see log_closes)

    def preload(self, cols: dict[str, np.ndarray]) -> None:
        """Hand over the whole series in advance (a finite replay): ``close_ms`` (int64), ``high``, ``low``,
        ``close``, ``volume`` (and ``open``) columns of equal length, in time order.

        Bars must then be appended exactly in this order (each is checked against the series). Every query
        still answers as of the last appended bar — with the same values, to the bit, as without a preload
        (including the buffer size a non-preloaded history would have); indicators are computed once per
        column instead of once per bar.
        """
        if self.count:
            raise ValueError(f"{self.symbol}: preload must come before the first bar")
        cms = np.ascontiguousarray(cols["close_ms"], dtype=np.int64)
        if len(cms) > 1 and not bool((np.diff(cms) > 0).all()):
            raise ValueError(f"{self.symbol}: preloaded close times are not strictly increasing")
        arrays = [cms] + [np.ascontiguousarray(cols[k], dtype=np.float64)
                          for k in ("open", "high", "low", "close", "volume")]
        if any(len(a) != len(cms) for a in arrays):
            raise ValueError(f"{self.symbol}: preloaded columns differ in length")
        self._close_ms, self._open, self._high, self._low, self._close, self._volume = arrays
        self._preloaded = len(cms)
        nz = np.flatnonzero(arrays[5] > 0)
        self._first_volume_preloaded = int(nz[0]) + 1 if len(nz) else -1
        self._check = tuple(memoryview(a) for a in (cms, arrays[2], arrays[3], arrays[4], arrays[5]))

    @property
    def preloaded(self) -> bool:
        return self._preloaded > 0

    def _lo(self) -> int:
        """First buffer index visible to queries: for a preloaded history, where a non-preloaded one's
        buffer (kept between ``keep`` and ``2 × keep`` bars, see _compact) would start now."""
        if not self._preloaded:
            return 0
        c, k = self.count, self.keep
        return 0 if c <= 2 * k else c - (k + (c - 2 * k - 1) % k + 1)

    # --------------------------------------------------------------------------------------- update
    def append(self, bar: Bar) -> None:
        if self._preloaded:
            self._advance(bar)
            return
        if self._last is not None and bar.close_ms <= self._last.close_ms:
            raise ValueError(
                f"{self.symbol}: bar closing at {bar.close_ms} is not after the last one ({self._last.close_ms})"
            )
        if self._n == len(self._close):
            self._compact()
        i = self._n
        self._close_ms[i] = bar.close_ms
        self._open[i] = bar.open
        self._high[i] = bar.high
        self._low[i] = bar.low
        self._close[i] = bar.close
        self._volume[i] = bar.volume
        self._n = i + 1
        self.count += 1
        if self._first_volume < 0 and bar.volume > 0:
            self._first_volume = self.count
        pc = self._prev_close
        h, lo, c = bar.high, bar.low, bar.close
        for ind in self._ind_list:
            ind.update(h, lo, c, pc)  # type: ignore[attr-defined]
        self._prev_prev_close = self._prev_close
        self._prev_close = c
        self._last = bar
        qv = bar.volume * c
        self._qv_window.append((bar.close_ms, qv))
        self._qv_total += qv
        cutoff = bar.close_ms - _DAY_MS
        while self._qv_window and self._qv_window[0][0] <= cutoff:
            self._qv_total -= self._qv_window.popleft()[1]

    def _advance(self, bar: Bar) -> None:
        i = self._n
        cms, h, lo, c, v = self._check
        if i >= self._preloaded or bar.close_ms != cms[i] or bar.close != c[i] or bar.high != h[i] \
                or bar.low != lo[i] or bar.volume != v[i]:
            expected = f"the bar closing at {cms[i]}" if i < self._preloaded else "no more bars"
            raise ValueError(f"{self.symbol}: appended bar closing at {bar.close_ms} differs from the preloaded "
                             f"series (expected {expected})")
        self._n = i + 1
        self.count += 1
        self._prev_prev_close = self._prev_close
        self._prev_close = bar.close
        self._last = bar

    def _compact(self) -> None:
        k = self.keep
        for arr in (self._close_ms, self._open, self._high, self._low, self._close, self._volume):
            arr[:k] = arr[self._n - k : self._n]
        self._n = k

    # -------------------------------------------------------------------------------------- queries
    def __len__(self) -> int:
        return self.count

    @property
    def prev_close(self) -> float | None:
        """The close before the last one (None with fewer than two bars)."""
        return self._prev_prev_close

    @property
    def last(self) -> Bar:
        if self._last is None:
            raise IndexError(f"{self.symbol}: no bar has closed yet")
        return self._last

    def _end(self, as_of_ms: int | None) -> int:
        """Buffer index one past the last bar closed at or before ``as_of_ms`` (None = all)."""
        if as_of_ms is None or self._n == 0 or self._close_ms[self._n - 1] <= as_of_ms:
            return self._n
        lo = self._lo()
        return lo + int(np.searchsorted(self._close_ms[lo : self._n], as_of_ms, side="right"))

    def _view(self, arr: np.ndarray, n: int, as_of_ms: int | None = None) -> np.ndarray:
        end = self._end(as_of_ms)
        v = arr[max(self._lo(), end - n) : end]
        v.flags.writeable = False  # type: ignore[misc]  # views handed out must not be mutated
        return v

    def closes(self, n: int, as_of_ms: int | None = None) -> np.ndarray:
        return self._view(self._close, n, as_of_ms)

    def close_times(self, n: int, as_of_ms: int | None = None) -> np.ndarray:
        return self._view(self._close_ms, n, as_of_ms)

    @property
    def buffered(self) -> int:
        return self._n - self._lo()

    def cached_moments(self, n_closes: int, as_of_ms: int | None) -> tuple[np.ndarray, np.ndarray, float]:
        """Log returns of the last ``n_closes`` closes (as of ``as_of_ms``) with their demeaned values and
        std, memoised per window: every pair and signal of a slice reuses them."""
        return self._per_window(
            "moments", n_closes, as_of_ms, lambda: _moments(_diff(self.log_closes(n_closes, as_of_ms))))

    def cached_times(self, n_closes: int, as_of_ms: int | None) -> bytes:
        """The close times of the last ``n_closes`` bars (as of ``as_of_ms``) as bytes, memoised per window:
        two symbols cover the same closes iff these are equal."""
        return self._per_window("times", n_closes, as_of_ms, lambda: self.close_times(n_closes, as_of_ms).tobytes())

    def _per_window(self, what: str, n_closes: int, as_of_ms: int | None, compute: Callable[[], Any]) -> Any:
        """``compute()`` memoised per (``what``, window of the last ``n_closes`` closes as of ``as_of_ms``): a
        few entries, emptied when full."""
        end = self._end(as_of_ms)
        key = (what, int(self._close_ms[end - 1]) if end else 0, n_closes)
        hit = self._lr_cache.get(key)
        if hit is None:
            if len(self._lr_cache) > 8:
                self._lr_cache.clear()
            hit = self._lr_cache[key] = compute()
        return hit

    def has_volume(self) -> bool:
        """Has any bar so far carried volume? (False: the source has no volume data, e.g. FX.)"""
        if self._preloaded:
            return 0 < self._first_volume_preloaded <= self.count
        return self._first_volume > 0

    def quote_volume_24h(self) -> float:
        if self._preloaded:
            if self._qv_series is None:
                self._qv_series = memoryview(_qv_series(self._close_ms, self._close, self._volume))
            return self._qv_series[self._n - 1] if self._n else 0.0
        return self._qv_total

    def indicator(self, name: str, n: int) -> _Indicator:
        key = (name, n)
        ind = self._ind.get(key)
        if ind is None:
            if n <= 0:
                raise ValueError(f"{name}({n}): period must be positive")
            if self._preloaded:
                # as if created now and warmed on the buffer: the series starts at the buffer's first bar
                lo = self._lo()
                part, first = _series(name, n, self._high[lo:], self._low[lo:], self._close[lo:])
                full = np.full(self._preloaded, np.nan)
                full[lo:] = part
                ind = self._ind[key] = _SeriesIndicator(self, full, lo + first)  # type: ignore[assignment]
                return ind
            ind = _FACTORIES[name](n)
            # Warm the new indicator on the buffered history so the first answer is as if it had
            # always been there (identical whether it was asked for early or late).
            # (History older than the buffer is gone: warming starts at the buffer's first bar.)
            pc: float | None = None
            for i in range(self._n):
                c = float(self._close[i])
                ind.update(float(self._high[i]), float(self._low[i]), c, pc)  # type: ignore[attr-defined]
                pc = c
            self._ind[key] = ind
            self._ind_list.append(ind)
        return ind

    def sma(self, n: int) -> float | None:
        return self.indicator("sma", n).value

    def ema(self, n: int) -> float | None:
        return self.indicator("ema", n).value

    def atr(self, n: int) -> float | None:
        return self.indicator("atr", n).value

    def rsi(self, n: int) -> float | None:
        return self.indicator("rsi", n).value

    def highest(self, n: int) -> float | None:
        return self.indicator("highest", n).value

    def lowest(self, n: int) -> float | None:
        return self.indicator("lowest", n).value

    def prev(self, name: str, n: int) -> float | None:
        return self.indicator(name, n).prev

    def series(self, name: str, n: int) -> np.ndarray:
        """A preloaded history only: the indicator's values at every bar of the whole series (NaN where it has
        none yet), read-only. For precomputing where something *may* happen (``Strategy.candidates``);
        what a decision uses must come from the causal queries above."""
        ind = self.indicator(name, n)
        if not isinstance(ind, _SeriesIndicator):
            raise ValueError(f"{self.symbol}: series() needs a preloaded history")
        return ind.array

    def log_closes(self, n: int, as_of_ms: int | None = None) -> np.ndarray:
        """The log of ``closes(n, as_of_ms)`` (``engine.core.portable.log``: the same bits on every CPU): a
        preloaded history takes the log of its whole series once and hands out a read-only slice of it (the
        log of a close is the same number either way)."""
        if not self._preloaded:
            return portable.log(self.closes(n, as_of_ms))
        return self._view(self.series_logs(), n, as_of_ms)

    def series_logs(self) -> np.ndarray:
        """A preloaded history only: the log closes of the whole series (read-only; taken once). For the
        windows ``log_closes`` hands out, not for decisions."""
        logs = self._logs
        if logs is None:
            if not self._preloaded:
                raise ValueError(f"{self.symbol}: series_logs() needs a preloaded history")
            logs = self._logs = portable.log(self._close)
            logs.flags.writeable = False
        return logs

    def column(self, name: str) -> np.ndarray:
        """A preloaded history only: a whole column (close_ms, open, high, low, close, volume), read-only."""
        if not self._preloaded:
            raise ValueError(f"{self.symbol}: column() needs a preloaded history")
        v = getattr(self, f"_{name}")[:]
        v.flags.writeable = False
        return v


def _qv_series(close_ms: np.ndarray, close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """Rolling 24h quote volume at every bar, with exactly SymbolHistory.append's running-total arithmetic:
    at each bar, + its quote volume, then − each bar that left the trailing day, oldest first. Those events
    in that order, accumulated in sequence, give the same partial sums; the value at a bar is the sum after
    its last event."""
    qv = volume * close
    n = len(qv)
    # bar j leaves the window at the first bar i with close_ms[i] - DAY >= close_ms[j]
    leaves_at = np.searchsorted(close_ms, close_ms + _DAY_MS, side="left")
    gone = leaves_at < n
    steps = np.concatenate([np.arange(n), leaves_at[gone]])
    kinds = np.concatenate([np.zeros(n, dtype=np.int8), np.ones(int(gone.sum()), dtype=np.int8)])
    order = np.lexsort((kinds, steps))  # by bar, its addition first, then departures oldest first (stable)
    sums = np.add.accumulate(np.concatenate([qv, -qv[gone]])[order])
    return sums[np.cumsum(np.bincount(steps, minlength=n)) - 1]


class MarketState:
    """All symbols' histories. Bars are appended slice by slice; nothing from after the slice is here."""

    def __init__(self, timeframe_ms: int, symbols: Iterable[str] = (), keep: int = 4096) -> None:
        self.timeframe_ms = timeframe_ms
        self.keep = keep
        self.histories: dict[str, SymbolHistory] = {}
        self._grids: dict[str, tuple[dict[str, int], np.ndarray] | None] = {}  # see _grid
        for s in symbols:
            self.history(s)

    def history(self, symbol: str) -> SymbolHistory:
        h = self.histories.get(symbol)
        if h is None:
            h = self.histories[symbol] = SymbolHistory(symbol, self.timeframe_ms, self.keep)
        return h

    def append(self, bar: Bar) -> None:
        self.history(bar.symbol).append(bar)

    def preload(self, arrays: dict[str, dict[str, np.ndarray]]) -> None:
        """The whole series of each symbol in advance (a finite replay; see SymbolHistory.preload)."""
        for sym, cols in arrays.items():
            self.history(sym).preload(cols)

    def last_close(self, symbol: str) -> float | None:
        h = self.histories.get(symbol)
        return h.last.close if h is not None and h.count else None

    def marks(self) -> dict[str, float]:
        return {s: h._last.close for s, h in self.histories.items() if h._last is not None}

    def correlation(self, a: str, b: str, lookback: int, min_overlap: int = 10,
                    as_of_ms: int | None = None) -> float | None:
        """Pearson correlation of 1-bar log returns over the last ``lookback`` bars common to both
        (closed at or before ``as_of_ms`` when given)."""
        if a == b:
            return 1.0
        ha, hb = self.histories.get(a), self.histories.get(b)
        if ha is None or hb is None or ha.count < 2 or hb.count < 2:
            return None
        aligned = _aligned_moments(ha, hb, lookback, as_of_ms)
        if aligned is None or aligned[0][0].size < min_overlap:
            return None
        (_, da, sa), (_, db, sb) = aligned
        if sa == 0.0 or sb == 0.0 or not (math.isfinite(sa) and math.isfinite(sb)):
            return None
        c = float(_add(da * db) / da.shape[0] / (sa * sb))  # (da * db).mean(): the same operations
        return max(-1.0, min(1.0, c))

    def correlations(self, a: str, others: Iterable[str], lookback: int, min_overlap: int = 10,
                     as_of_ms: int | None = None) -> dict[str, float | None]:
        """``correlation(a, b, …)`` for each b in ``others``, to the bit, the pairs whose windows cover the same
        closes in one pass: every window's log closes stacked in one 2-D array, and each figure computed per row
        exactly as ``_moments`` computes it on a lone window (element-wise arithmetic, and sums of C-contiguous
        rows, which numpy takes pairwise as it sums a 1-D array). A preloaded series' log closes are taken once."""
        out: dict[str, float | None] = {}
        ha = self.histories.get(a)
        n = lookback + 1
        others = list(dict.fromkeys(others))
        if ha is None or ha.count < 2 or len(others) < _BATCH_FROM:
            return {b: self.correlation(a, b, lookback, min_overlap, as_of_ms) for b in others}
        grid = self._grid(ha) if ha._preloaded else None
        if grid is not None:
            return self._grid_correlations(ha, others, grid, n, min_overlap, as_of_ms)
        window_a = ha.log_closes(n, as_of_ms)
        batch: list[tuple[str, np.ndarray]] = []
        for b in others:
            hb = self.histories.get(b)
            if b == a or hb is None or hb.count < 2 or window_a.shape[0] < 2 \
                    or not self._aligned(ha, hb, n, as_of_ms):
                out[b] = self.correlation(a, b, lookback, min_overlap, as_of_ms)
                continue
            wb = hb.log_closes(n, as_of_ms)
            if wb.shape != window_a.shape:
                out[b] = self.correlation(a, b, lookback, min_overlap, as_of_ms)
                continue
            batch.append((b, wb))
        if not batch:
            return out
        logs = np.stack([window_a] + [w for _, w in batch])
        m = logs.shape[1] - 1
        if m < min_overlap:
            out.update((b, None) for b, _ in batch)
            return out
        sd, cross = _correlation_rows(logs)
        return self._correlated_out(out, [b for b, _ in batch], sd, cross, m)

    def _grid(self, ha: SymbolHistory) -> tuple[dict[str, int], np.ndarray] | None:
        """The preloaded symbols whose close times are ``ha``'s, and their whole series' log closes stacked as the
        rows of one read-only array (row of each symbol); None when no other symbol shares them."""
        hit = self._grids.get(ha.symbol, False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        times = ha.column("close_ms")
        group = [h for h in self.histories.values()
                 if h._preloaded and (h is ha or np.array_equal(h.column("close_ms"), times))]
        found = None
        if len(group) > 1:
            logs = np.stack([h.series_logs() for h in group])
            logs.flags.writeable = False
            found = ({h.symbol: i for i, h in enumerate(group)}, logs)
        for h in group:
            self._grids[h.symbol] = found
        return found

    def _grid_correlations(self, ha: SymbolHistory, others: list[str], grid: tuple[dict[str, int], np.ndarray],
                           n: int, min_overlap: int, as_of_ms: int | None) -> dict[str, float | None]:
        """``correlations`` of a preloaded symbol with the partners on its close times, read in place from their
        stacked log closes (the same windows, so the same numbers); other partners pair by pair."""
        a, lookback = ha.symbol, n - 1
        index, logs = grid
        end = ha._end(as_of_ms)
        start = max(ha._lo(), end - n)
        out: dict[str, float | None] = {}
        rows = [index[a]]
        names: list[str] = []
        for b in others:
            j = index.get(b)
            hb = self.histories.get(b)
            # the same close times, stepped as far: the same window (end and buffer start follow from the count)
            if b == a or j is None or hb is None or hb.count != ha.count or end - start < 2:
                out[b] = self.correlation(a, b, lookback, min_overlap, as_of_ms)
                continue
            rows.append(j)
            names.append(b)
        if not names:
            return out
        m = end - start - 1
        if m < min_overlap:
            out.update((b, None) for b in names)
            return out
        sd, cross = _correlation_rows(logs, rows, start, end)
        return self._correlated_out(out, names, sd, cross, m)

    @staticmethod
    def _correlated_out(out: dict[str, float | None], names: Sequence[str], sd: list[float], cross: list[float],
                        m: int) -> dict[str, float | None]:
        sa = sd[0]
        for b, sb, s in zip(names, sd[1:], cross, strict=True):
            if sa == 0.0 or sb == 0.0 or not (math.isfinite(sa) and math.isfinite(sb)):
                out[b] = None
            else:
                out[b] = max(-1.0, min(1.0, s / m / (sa * sb)))  # correlation's arithmetic, in its order
        return out

    @staticmethod
    def _aligned(ha: SymbolHistory, hb: SymbolHistory, n: int, as_of_ms: int | None) -> bool:
        """Do the two windows cover the same closes? (Preloaded symbols on identical close times never get here:
        ``_grid`` serves them.)"""
        times = ha.cached_times(n, as_of_ms)
        return bool(times) and times == hb.cached_times(n, as_of_ms)


_BATCH_FROM = 3  # partners from which one stacked pass is cheaper than pair by pair (measured)


def _correlation_rows(logs: np.ndarray, rows: Sequence[int] | None = None, start: int = 0,
                      end: int | None = None) -> tuple[list[float], list[float]]:
    """The windows' stds and cross sums (``correlations``), compiled: ``engine.core.kernels.correlation_rows``."""
    from engine.core import kernels

    return kernels.correlation_rows(logs, rows, start, end)


def _correlation_rows_numpy(logs: np.ndarray) -> tuple[list[float], list[float]]:
    """The reference: per row, exactly as ``_moments`` computes a lone window (element-wise arithmetic, and sums
    of C-contiguous rows, which numpy takes pairwise as it sums a 1-D array)."""
    r = logs[:, 1:] - logs[:, :-1]  # np.diff, per row
    m = r.shape[1]
    d = r - (_add(r, axis=1) / m)[:, None]  # as r - r.mean()
    sd = np.sqrt(_add(d * d, axis=1) / m).tolist()  # as r.std()
    return sd, _add(np.multiply(d[1:], d[0], order="C"), axis=1).tolist()


_Moments = tuple[np.ndarray, np.ndarray, float]  # returns, demeaned returns, population std


_add = np.add.reduce


def _diff(a: np.ndarray) -> np.ndarray:
    """``np.diff(a)`` of a 1-D float array: the same subtraction, without its Python-level wrapper."""
    return a[1:] - a[:-1]


def var(a: np.ndarray, ddof: int = 0) -> float:
    """``a.var(ddof=ddof)`` for a 1-D float array, the same arithmetic (so the same bits) without numpy's
    Python-level wrapper, which costs more than the sum itself on the short windows used here."""
    d = a - _add(a) / a.shape[0]
    return float(_add(d * d) / max(a.shape[0] - ddof, 0))


def _moments(r: np.ndarray) -> _Moments:
    d = r - _add(r) / r.shape[0]  # as r - r.mean()
    return r, d, math.sqrt(float(_add(d * d) / r.shape[0]))  # as r.std()


def _aligned_moments(ha: SymbolHistory, hb: SymbolHistory, lookback: int,
                     as_of_ms: int | None) -> tuple[_Moments, _Moments] | None:
    times_a = ha.cached_times(lookback + 1, as_of_ms)
    if times_a and times_a == hb.cached_times(lookback + 1, as_of_ms):
        # the common case: both series cover the same closes (the feeds forward-fill gaps); the moments
        # of each symbol's window are computed once per slice and shared by every pair and signal
        return ha.cached_moments(lookback + 1, as_of_ms), hb.cached_moments(lookback + 1, as_of_ms)
    ta, tb = ha.close_times(lookback + 1, as_of_ms), hb.close_times(lookback + 1, as_of_ms)
    common, ia, ib = np.intersect1d(ta, tb, assume_unique=True, return_indices=True)
    if len(common) < 2:
        return None
    # returns only between consecutive common closes that are one bar apart in both series
    ca_c, cb_c = ha.log_closes(lookback + 1, as_of_ms)[ia], hb.log_closes(lookback + 1, as_of_ms)[ib]
    consecutive = np.diff(common) == ha.timeframe_ms
    return _moments(np.diff(ca_c)[consecutive]), _moments(np.diff(cb_c)[consecutive])
