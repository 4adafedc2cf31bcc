"""Live market data: a ccxt exchange's public OHLCV → closed bars aligned into slices (warm-up, then poll).

No API keys: only public market data. ccxt errors are mapped here and go no further: a transient one
(network, timeout, 429/418, 5xx, maintenance) is retried with exponential backoff and seeded jitter, a
bounded number of times per call; after that ``poll()`` returns the complete slices it has and logs,
and the next poll resumes from the same place (no gap, no duplicate). A permanent one (unknown symbol,
bad request) is a ``DataError``.

Alignment: a slice at time T holds every symbol's bar closing at T. A bar is delivered only when it has
closed by the feed's clock (``open + timeframe <= now``): the exchange's still-forming last candle is never
delivered. When the exchange has no candle for a symbol at T (a hole in its data), the previous close is
repeated as a flat zero-volume bar, counted in ``forward_filled``. A symbol whose latest candle is merely
late is waited for up to ``stale_bars`` bars before it is filled that way, so a lagging exchange does not
turn real bars into made-up ones.
"""

from __future__ import annotations

import difflib
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from engine.config import CcxtConfig, parse_timeframe
from engine.errors import ConfigError, DataError, describe
from engine.ports import Clock
from engine.types import Bar, MarketLimits, NewsItem

__all__ = ["CcxtClient", "CcxtFeed", "ExchangeUnavailable", "bar_grid_offset_ms", "last_closed_open_ms"]

log = logging.getLogger("tradevet.feeds.ccxt")

T = TypeVar("T")
_DAY_MS = 86_400_000
_PAGE_LIMIT = 1000  # Binance's (and many exchanges') maximum candles per klines request


class ExchangeUnavailable(DataError):
    """The exchange kept failing transiently after the bounded retries (``poll`` absorbs it; others raise)."""


# ---------------------------------------------------------------------------------------------- time


def bar_grid_offset_ms(timeframe: str) -> int:
    """Where a timeframe's bar grid starts relative to the epoch (weekly candles open on Mondays)."""
    # 1970-01-01 was a Thursday; exchanges open weekly candles on Monday 00:00 UTC, four days later.
    return 4 * _DAY_MS if timeframe.endswith("w") else 0


def last_closed_open_ms(now_ms: int, tf_ms: int, offset_ms: int = 0) -> int:
    """Open time of the latest bar with ``open + tf <= now`` on the grid ``offset + k·tf``."""
    return ((now_ms - tf_ms - offset_ms) // tf_ms) * tf_ms + offset_ms


# -------------------------------------------------------------------------------------------- client


def _deep_merge(dst: dict[str, Any], src: Mapping[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _deep_merge(dst[k], v)
        else:
            dst[k] = _copy(v)


def _copy(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v


def _http_status(e: BaseException) -> int | None:
    """The HTTP status behind a ccxt error, when ccxt raised it while handling a requests HTTPError."""
    for inner in (e.__cause__, e.__context__):
        resp = getattr(inner, "response", None)
        code = getattr(resp, "status_code", None)
        if isinstance(code, int):
            return code
    return None


def _is_transient(e: BaseException) -> bool:
    import ccxt

    if isinstance(e, ccxt.OperationFailed):  # NetworkError (timeouts, 429/418, 5xx, maintenance), BadResponse
        return True
    if isinstance(e, ccxt.ExchangeError):
        # binance maps some 5xx bodies to plain ExchangeError; the status code says it was the server's fault
        status = _http_status(e)
        return status is not None and status >= 500
    # anything else came from parsing a reply that was not what the API promises (an HTML error page...)
    return not isinstance(e, ccxt.BaseError)


def _retry_after_s(exchange: Any) -> float | None:
    headers = getattr(exchange, "last_response_headers", None) or {}
    try:
        value = headers.get("Retry-After") or headers.get("retry-after")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class CcxtClient:
    """One ccxt exchange (public endpoints) with bounded, jittered retries and paged OHLCV fetches.

    ``rate_limit_ms`` overrides ccxt's per-request spacing (tests against a local fake); ``enableRateLimit``
    stays on either way.
    """

    def __init__(self, cfg: CcxtConfig, *, retries: int = 4, backoff_s: float = 0.5, backoff_max_s: float = 8.0,
                 seed: int = 0, sleep: Callable[[float], None] = time.sleep, rate_limit_ms: float | None = None
                 ) -> None:
        import ccxt

        self.cfg = cfg
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._rng = random.Random(seed)
        self._sleep = sleep
        cls = getattr(ccxt, cfg.exchange, None)
        if not isinstance(cls, type) or cfg.exchange not in ccxt.exchanges:
            hint = difflib.get_close_matches(cfg.exchange, ccxt.exchanges, n=1)
            raise ConfigError(f"unknown ccxt exchange {cfg.exchange!r}"
                              + (f"; did you mean {hint[0]!r}?" if hint else ""), path="market.ccxt.exchange")
        params: dict[str, Any] = {"enableRateLimit": True, "timeout": cfg.timeout_ms, "options": _copy(cfg.options)}
        if rate_limit_ms is not None:
            params["rateLimit"] = rate_limit_ms
        self.exchange: Any = cls(params)
        if cfg.sandbox:
            try:
                self.exchange.set_sandbox_mode(True)
            except ccxt.NotSupported as e:
                raise ConfigError(f"{cfg.exchange} has no testnet "
                                  f"({describe(e, 300, with_type=False)})", path="market.ccxt.sandbox") from None
        # after the sandbox switch, so an explicit URL (a fake on 127.0.0.1, a proxy) wins over the testnet's
        _deep_merge(self.exchange.urls, cfg.urls)
        self.id: str = self.exchange.id
        self.calls = 0
        self.retried = 0
        self.gave_up = 0
        self._markets_loaded = False

    # -------------------------------------------------------------------------------------- calls
    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` with bounded retries. Raises: DataError (permanent), ExchangeUnavailable (transient)."""
        attempt = 0
        while True:
            self.calls += 1
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                if not _is_transient(e):
                    raise DataError(f"{self.id}: {what}: {describe(e, 300, with_type=False)}") from e
                if attempt >= self.retries:
                    self.gave_up += 1
                    raise ExchangeUnavailable(
                        f"{self.id}: {what}: still failing after {attempt + 1} tries "
                        f"({type(e).__name__}: {describe(e, 160, with_type=False)})") from e
                delay = min(self.backoff_max_s, self.backoff_s * 2**attempt) * (0.5 + self._rng.random())
                import ccxt

                if isinstance(e, (ccxt.RateLimitExceeded, ccxt.DDoSProtection)):
                    ra = _retry_after_s(self.exchange)
                    if ra is not None:
                        # honour the server's wait, but never beyond our own per-try bound
                        delay = max(delay, min(ra, self.backoff_max_s))
                log.info("%s: %s: %s, retry %d/%d in %.2f s", self.id, what, type(e).__name__, attempt + 1,
                         self.retries, delay)
                self.retried += 1
                attempt += 1
                self._sleep(delay)

    def load_markets(self) -> dict[str, Any]:
        """Load markets once. Raises: DataError, ExchangeUnavailable."""
        if not self._markets_loaded:
            self.call("load_markets", self.exchange.load_markets)
            self._markets_loaded = True
        return self.exchange.markets

    def market(self, symbol: str) -> dict[str, Any]:
        """The ccxt market of ``symbol``. Raises: DataError naming it and a few close matches."""
        markets = self.load_markets()
        m = markets.get(symbol)
        if m is None:
            known = list(markets)
            close = difflib.get_close_matches(symbol, known, n=3, cutoff=0.6)
            base = symbol.split("/")[0].upper()
            close += [s for s in known if s.split("/")[0] == base and s not in close][: max(0, 5 - len(close))]
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise DataError(f"market.symbols: {symbol!r} is not a market on {self.id} "
                            f"({len(known)} markets loaded){hint}")
        return m

    def check_timeframe(self, timeframe: str) -> None:
        """Raises: DataError when the exchange does not serve ``timeframe``."""
        tfs = getattr(self.exchange, "timeframes", None) or {}
        if tfs and timeframe not in tfs:
            raise DataError(f"market.timeframe: {self.id} has no {timeframe!r} candles "
                            f"(it has {', '.join(list(tfs)[:20])})")

    def fetch_closed(self, symbol: str, timeframe: str, since_ms: int, last_open_ms: int,
                     on_page: Callable[[list[Bar]], None] | None = None) -> list[Bar]:
        """Closed candles with ``since_ms <= open <= last_open_ms``, paging forward with ``since``.

        Raises: DataError (permanent), ExchangeUnavailable (pages fetched before it are passed to
        ``on_page`` already).
        """
        tf = parse_timeframe(timeframe)
        offset = bar_grid_offset_ms(timeframe)
        out: list[Bar] = []
        since = since_ms
        while since <= last_open_ms:
            rows = self.call(f"fetch_ohlcv {symbol} {timeframe} since {since}", self.exchange.fetch_ohlcv,
                             symbol, timeframe, since=since, limit=_PAGE_LIMIT)
            page: dict[int, Bar] = {}
            newest = None
            for r in rows or ():
                try:
                    t = int(r[0])
                except (TypeError, ValueError, IndexError):
                    continue
                newest = t if newest is None else max(newest, t)
                if t < since or t > last_open_ms or (t - offset) % tf:
                    continue  # before the page, still forming / not closed yet, or off the bar grid
                bar = _to_bar(symbol, t, tf, r)
                if bar is not None:
                    page[t] = bar
            bars = [page[t] for t in sorted(page)]
            out.extend(bars)
            if on_page is not None and bars:
                on_page(bars)
            if newest is None or newest < since:
                break  # nothing at or after ``since`` (yet): the exchange has no more
            since = max(since, newest) + tf - (newest - offset) % tf  # next grid point after the newest seen
        return out

    def close(self) -> None:
        session = getattr(self.exchange, "session", None)
        if session is not None:
            session.close()


def _to_bar(symbol: str, open_ms: int, tf: int, row: Sequence[Any]) -> Bar | None:
    try:
        o, h, lo, c = (float(x) for x in row[1:5])
        v = float(row[5]) if len(row) > 5 and row[5] is not None else 0.0
    except (TypeError, ValueError):
        return None  # a candle with a missing price is a hole: alignment fills it
    if not all(math.isfinite(x) for x in (o, h, lo, c, v)):
        return None
    return Bar(symbol, open_ms, open_ms + tf, o, h, lo, c, v)


# ---------------------------------------------------------------------------------------------- feed


class CcxtFeed:
    """Public OHLCV of ``symbols`` on one ccxt exchange: ``warmup(n)`` once, then ``poll()`` at each bar close.

    Both return every bar that has closed since the last delivery (by ``clock``), aligned into slices in
    time order; ``poll`` never raises on a transient exchange error. Implements the ``Feed`` protocol.
    """

    def __init__(self, cfg: CcxtConfig, symbols: Sequence[str], timeframe: str, *, clock: Clock,
                 min_notional_default: float = 0.0, stale_bars: int = 2, retries: int = 4,
                 backoff_s: float = 0.5, backoff_max_s: float = 8.0, seed: int = 0,
                 sleep: Callable[[float], None] = time.sleep, rate_limit_ms: float | None = None) -> None:
        if not symbols:
            raise ConfigError("at least one symbol is needed", path="market.symbols")
        self.cfg = cfg
        self.symbols: tuple[str, ...] = tuple(symbols)
        self.timeframe = timeframe
        self.timeframe_ms = parse_timeframe(timeframe)
        self.clock = clock
        self.min_notional_default = min_notional_default
        self.stale_bars = max(0, stale_bars)
        self._offset = bar_grid_offset_ms(timeframe)
        self.client = CcxtClient(cfg, retries=retries, backoff_s=backoff_s, backoff_max_s=backoff_max_s, seed=seed,
                                 sleep=sleep, rate_limit_ms=rate_limit_ms)
        self._loaded = False
        self._cursor: int | None = None  # open time of the next slice to deliver
        self._pending: dict[str, dict[int, Bar]] = {s: {} for s in self.symbols}  # fetched, not yet delivered
        self._fetched_to: dict[str, int] = {}  # newest open fetched per symbol
        self._last: dict[str, Bar] = {}  # last delivered bar per symbol (the forward-fill source)
        self.forward_filled: Counter[str] = Counter()
        self.failed_polls = 0
        self.delivered_slices = 0

    # ---------------------------------------------------------------------------------- markets
    def load(self) -> None:
        """Load markets once and check symbols and timeframe. Raises: DataError, ExchangeUnavailable."""
        if self._loaded:
            return
        self.client.load_markets()
        self.client.check_timeframe(self.timeframe)
        for s in self.symbols:
            self.client.market(s)
        self._loaded = True

    def limits(self) -> dict[str, MarketLimits]:
        """Exchange minimums and precision per symbol (min cost, min amount, amount/price steps)."""
        self.load()
        mode = getattr(self.client.exchange, "precisionMode", None)
        out: dict[str, MarketLimits] = {}
        for s in self.symbols:
            m = self.client.market(s)
            lim = m.get("limits") or {}
            prec = m.get("precision") or {}
            out[s] = MarketLimits(
                s,
                min_notional=float(_num((lim.get("cost") or {}).get("min")) or self.min_notional_default),
                min_qty=float(_num((lim.get("amount") or {}).get("min")) or 0.0),
                qty_step=_step(prec.get("amount"), mode),
                price_tick=_step(prec.get("price"), mode),
                market_type=str(m.get("type") or ""),
            )
        return out

    def news(self) -> Sequence[NewsItem]:
        return ()

    # ------------------------------------------------------------------------------------- bars
    def warmup(self, n_bars: int) -> list[tuple[Bar, ...]]:
        """The last ``n_bars`` closed bars of every symbol, aligned into slices; sets where ``poll`` resumes.

        Raises: DataError (unknown symbol, permanent exchange error), ExchangeUnavailable (markets could not
        be loaded). A transient failure while fetching bars is absorbed as in ``poll``.
        """
        self.load()
        last = last_closed_open_ms(self.clock.now_ms(), self.timeframe_ms, self._offset)
        self._cursor = last - (max(0, n_bars) - 1) * self.timeframe_ms
        self._pending = {s: {} for s in self.symbols}
        self._fetched_to = {s: self._cursor - self.timeframe_ms for s in self.symbols}
        return self.poll() if n_bars > 0 else []

    def poll(self) -> list[tuple[Bar, ...]]:
        """Every bar closed since the last delivery, aligned into slices in time order (possibly none).

        Never raises on a transient exchange error: it logs and returns the complete slices it has.
        Raises: DataError on a permanent error (e.g. the exchange no longer knows a symbol).
        """
        try:
            self.load()
        except ExchangeUnavailable as e:
            self.failed_polls += 1
            log.warning("%s: poll skipped, markets not loaded: %s", self.client.id, e)
            return []
        tf = self.timeframe_ms
        last = last_closed_open_ms(self.clock.now_ms(), tf, self._offset)
        if self._cursor is None:  # never warmed up: start with the latest closed bar
            self._cursor = last
            self._fetched_to = {s: last - tf for s in self.symbols}
        if last < self._cursor:
            return []
        known: dict[str, int] = {}
        failures: list[str] = []
        for s in self.symbols:
            since = max(self._cursor, self._fetched_to[s] + tf)
            ok = True
            if since <= last:
                pending = self._pending[s]

                def keep(bars: list[Bar], pending: dict[int, Bar] = pending, s: str = s) -> None:
                    for b in bars:
                        pending[b.open_ms] = b
                    self._fetched_to[s] = max(self._fetched_to[s], bars[-1].open_ms)

                try:
                    self.client.fetch_closed(s, self.timeframe, since, last, on_page=keep)
                except ExchangeUnavailable as e:
                    ok = False
                    failures.append(str(e))
            # A symbol is settled through its newest fetched bar; after a successful fetch, also through
            # ``stale_bars`` before now: the exchange has had time to publish, so a missing bar is a hole.
            known[s] = self._fetched_to[s] if not ok else max(self._fetched_to[s], last - self.stale_bars * tf)
        if failures:
            self.failed_polls += 1
            log.warning("%s: poll incomplete, resuming next time: %s", self.client.id, "; ".join(failures))
        horizon = min(known.values())
        out: list[tuple[Bar, ...]] = []
        t = self._cursor
        while t <= horizon:
            row: list[Bar] = []
            for s in self.symbols:
                bar = self._pending[s].pop(t, None)
                if bar is None:
                    prev = self._last.get(s)
                    if prev is None:
                        continue  # no history yet for this symbol: nothing to repeat
                    bar = Bar(s, t, t + tf, prev.close, prev.close, prev.close, prev.close, 0.0)
                    self.forward_filled[s] += 1
                    log.info("%s %s: no candle at %s; forward-filled (flat, zero volume)", self.client.id, s,
                             bar.open_at.isoformat())
                self._last[s] = bar
                row.append(bar)
            if row:
                out.append(tuple(row))
            t += tf
        self._cursor = max(self._cursor, horizon + tf)
        self.delivered_slices += len(out)
        return out

    def slices(self) -> Iterator[tuple[Bar, ...]]:
        """What has closed by now: the warm-up on the first call, then the bars since the last call (finite)."""
        batch = self.warmup(self.cfg.warmup_bars) if self._cursor is None else self.poll()
        yield from batch

    # a live feed does not know its bars in advance
    n_slices = None
    n_bars = None

    def arrays(self) -> None:
        return None

    def close(self) -> None:
        self.client.close()


def _num(x: Any) -> float | None:
    try:
        return float(x) if x is not None else None
    except (TypeError, ValueError):
        return None


def _step(value: Any, mode: Any) -> float:
    """ccxt precision → a step size: TICK_SIZE gives the step, DECIMAL_PLACES the number of decimals."""
    v = _num(value)
    if v is None or v <= 0:
        return 0.0
    import ccxt

    if mode == ccxt.DECIMAL_PLACES:
        return 10.0 ** -v
    if mode == ccxt.SIGNIFICANT_DIGITS:
        return 0.0  # a step that depends on the price: unknown as a fixed step
    return v
