"""Fake Binance spot REST (a subset) on 127.0.0.1: bars in → ``/api/v3/exchangeInfo`` and ``/api/v3/klines``.

A real HTTP server, so the real ccxt client is exercised end to end. What ccxt's ``load_markets`` and
``fetch_ohlcv`` call for binance with ``options: {fetchMarkets: {types: [spot]}}`` was found by running
them: ``exchangeInfo`` and ``klines`` only (``time`` and ``ping`` are served too; nothing under ``/sapi``
is needed). Any other path answers 404 and is listed in ``unknown_paths``.

The fake has its own "now" (``now_ms``, or a ``now_fn``): only candles whose open time ≤ now are served,
and the last one may be still forming — it is then served with *partial* values (close pulled to the open,
volume scaled by the elapsed fraction), so a client that delivers a forming candle gets visibly wrong data.

Faults are queued and consumed by the next matching requests: ``fail(n, 429, retry_after=1)``,
``fail(n, 500)``, ``fail(n, 503)`` (maintenance), ``slow(n, delay_s)`` (for client timeouts), and
``reset(n)`` (the connection is closed with a TCP RST, no response).

By hand::

    .venv/bin/python -m tests.fake_exchange --symbols BTC/USDT ETH/USDT --timeframe 1m --port 8765
    curl 'http://127.0.0.1:8765/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=3'
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from engine.config import parse_timeframe
from engine.types import Bar

__all__ = ["FakeExchange", "Fault", "SymbolSpec", "binance_id", "make_bars"]

_MAX_LIMIT = 1000  # Binance's klines maximum
_DEFAULT_LIMIT = 500


def binance_id(symbol: str) -> str:
    """'BTC/USDT' → 'BTCUSDT'."""
    return symbol.replace("/", "").replace("-", "").upper()


def make_bars(symbols: Sequence[str], timeframe: str, start_ms: int, n: int, seed: int = 0,
              *, start_price: float = 100.0, vol: float = 0.01) -> dict[str, list[Bar]]:
    """Seeded random-walk bars (prices rounded to 8 decimals, as Binance serves them)."""
    tf = parse_timeframe(timeframe)
    out: dict[str, list[Bar]] = {}
    for k, sym in enumerate(symbols):
        rng = random.Random(f"{seed}:{sym}")
        price = start_price * (1 + k)
        bars: list[Bar] = []
        for i in range(n):
            o = price
            c = o * math.exp(rng.gauss(0.0, vol))
            h = max(o, c) * (1 + rng.uniform(0, 0.004))
            lo = min(o, c) * (1 - rng.uniform(0, 0.004))
            v = rng.uniform(50.0, 5000.0)
            t = start_ms + i * tf
            bars.append(Bar(sym, t, t + tf, round(o, 8), round(h, 8), round(lo, 8), round(c, 8), round(v, 8)))
            price = c
        out[sym] = bars
    return out


@dataclass(frozen=True)
class SymbolSpec:
    """Exchange filters of one symbol, served in ``exchangeInfo``."""

    tick_size: str = "0.01000000"
    step_size: str = "0.00001000"
    min_qty: str = "0.00001000"
    min_notional: str = "5.00000000"
    notional_filter: str = "NOTIONAL"  # NOTIONAL (current Binance) or MIN_NOTIONAL (older)
    status: str = "TRADING"


@dataclass
class Fault:
    kind: str  # "status" | "slow" | "reset"
    count: int
    status: int = 500
    retry_after: float | None = None
    delay_s: float = 0.0
    path: str = "/api/v3/klines"  # only requests whose path starts with this


class FakeExchange:
    """``with FakeExchange(bars_by_symbol, timeframe="5m", now_ms=...) as ex: ex.url`` (the /api/v3 base)."""

    def __init__(self, bars_by_symbol: Mapping[str, Sequence[Bar]], *, timeframe: str = "5m",
                 now_ms: int | None = None, now_fn: Callable[[], int] | None = None,
                 specs: Mapping[str, SymbolSpec] | None = None, extra_symbols: Sequence[str] = (),
                 port: int = 0) -> None:
        self.timeframe = timeframe
        self.tf_ms = parse_timeframe(timeframe)
        self.bars: dict[str, list[Bar]] = {}
        self._by_id: dict[str, tuple[str, list[Bar], list[int]]] = {}
        for sym, bars in bars_by_symbol.items():
            rows = sorted(bars, key=lambda b: b.open_ms)
            self.bars[sym] = rows
            self._by_id[binance_id(sym)] = (sym, rows, [b.open_ms for b in rows])
        self.extra_symbols = list(extra_symbols)
        self.specs = dict(specs or {})
        last = max((b.open_ms for rows in self.bars.values() for b in rows), default=0)
        self.now_ms = now_ms if now_ms is not None else last + self.tf_ms
        self.now_fn = now_fn
        self.requests: Counter[str] = Counter()  # path → count
        self.log: list[str] = []  # every request line (path + query)
        self.unknown_paths: list[str] = []
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> FakeExchange:
        fake = self

        class Handler(_Handler):
            exchange = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-exchange", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # wake slow responses so shutdown does not wait for them
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeExchange:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start the fake first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base to put in ``urls: {api: {public: ...}}``."""
        return f"http://127.0.0.1:{self.port}/api/v3"

    def ccxt_urls(self) -> dict[str, Any]:
        return {"api": {"public": self.url}}

    # ------------------------------------------------------------------------------------ time
    def now(self) -> int:
        return self.now_fn() if self.now_fn is not None else self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms

    # ---------------------------------------------------------------------------------- faults
    def fail(self, n: int, status: int = 500, *, retry_after: float | None = None,
             path: str = "/api/v3/klines") -> None:
        """The next ``n`` matching requests answer ``status`` (429 with Retry-After, 500, 503 maintenance...)."""
        with self._lock:
            self._faults.append(Fault("status", n, status=status, retry_after=retry_after, path=path))

    def slow(self, n: int, delay_s: float, *, path: str = "/api/v3/klines") -> None:
        """The next ``n`` matching requests wait ``delay_s`` before answering (client timeouts)."""
        with self._lock:
            self._faults.append(Fault("slow", n, delay_s=delay_s, path=path))

    def reset(self, n: int, *, path: str = "/api/v3/klines") -> None:
        """The next ``n`` matching requests get their connection reset (RST), no response."""
        with self._lock:
            self._faults.append(Fault("reset", n, path=path))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if path.startswith(f.path) and f.count > 0:
                    f.count -= 1
                    if f.count == 0:
                        self._faults.remove(f)
                    return f
        return None

    # ------------------------------------------------------------------------------- endpoints
    def exchange_info(self) -> dict[str, Any]:
        symbols = []
        for sym in [*self.bars, *self.extra_symbols]:
            base, quote = sym.split("/")
            spec = self.specs.get(sym, SymbolSpec())
            if spec.notional_filter == "MIN_NOTIONAL":
                notional = {"filterType": "MIN_NOTIONAL", "minNotional": spec.min_notional, "applyToMarket": True,
                            "avgPriceMins": 5}
            else:
                notional = {"filterType": "NOTIONAL", "minNotional": spec.min_notional, "applyMinToMarket": True,
                            "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5}
            symbols.append({
                "symbol": binance_id(sym), "status": spec.status, "baseAsset": base, "baseAssetPrecision": 8,
                "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
                "quoteCommissionPrecision": 8, "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
                "icebergAllowed": True, "ocoAllowed": True, "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": False, "permissions": [], "permissionSets": [["SPOT"]],
                "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": spec.tick_size, "maxPrice": "1000000.00000000",
                     "tickSize": spec.tick_size},
                    {"filterType": "LOT_SIZE", "minQty": spec.min_qty, "maxQty": "9000.00000000",
                     "stepSize": spec.step_size},
                    notional,
                ],
            })
        return {"timezone": "UTC", "serverTime": self.now(), "rateLimits": [], "exchangeFilters": [],
                "symbols": symbols}

    def klines(self, q: Mapping[str, str]) -> tuple[int, Any]:
        import bisect

        sym_id = q.get("symbol", "")
        if sym_id not in self._by_id:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if q.get("interval") != self.timeframe:
            return 400, {"code": -1120, "msg": "Invalid interval."}
        try:
            limit = int(q.get("limit", _DEFAULT_LIMIT))
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
        except ValueError:
            return 400, {"code": -1100, "msg": "Illegal characters found in a parameter."}
        if not 1 <= limit <= _MAX_LIMIT:
            return 400, {"code": -1130, "msg": "Invalid data sent for a parameter."}
        _, rows, opens = self._by_id[sym_id]
        now = self.now()
        hi = bisect.bisect_right(opens, now)  # only candles that have opened
        if end is not None:
            hi = min(hi, bisect.bisect_right(opens, end))
        if start is not None:
            lo = bisect.bisect_left(opens, start)
            sel = rows[lo:min(hi, lo + limit)]
        else:
            sel = rows[max(0, hi - limit):hi]
        return 200, [self._kline(b, now) for b in sel]

    def _kline(self, b: Bar, now: int) -> list[Any]:
        o, h, lo, c, v = b.open, b.high, b.low, b.close, b.volume
        if b.open_ms + self.tf_ms > now:  # still forming: partial values, as a live exchange would show
            frac = max(0.0, min(1.0, (now - b.open_ms) / self.tf_ms))
            c = round(o + (c - o) * frac * 0.5, 8)
            h, lo = max(o, c), min(o, c)
            v = round(v * frac, 8)
        return [b.open_ms, f"{o:.8f}", f"{h:.8f}", f"{lo:.8f}", f"{c:.8f}", f"{v:.8f}",
                b.open_ms + self.tf_ms - 1, f"{v * c:.8f}", 100, f"{v / 2:.8f}", f"{v * c / 2:.8f}", "0"]


class _Handler(BaseHTTPRequestHandler):
    exchange: FakeExchange
    protocol_version = "HTTP/1.1"  # keep-alive, as ccxt's requests session expects

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the tests read ``exchange.log``
        return None

    def setup(self) -> None:
        super().setup()
        # headers and body go out as separate writes; without NODELAY, Nagle + delayed ACK add ~40 ms a reply
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        ex = self.exchange
        parts = urlsplit(self.path)
        path = parts.path
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with ex._lock:
            ex.requests[path] += 1
            ex.log.append(self.path)
        fault = ex._take_fault(path)
        if fault is not None:
            if fault.kind == "reset":
                # SO_LINGER 0 → close sends RST: the client sees a connection reset mid-request
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            if fault.kind == "slow":
                ex._closing.wait(fault.delay_s)
            elif fault.kind == "status":
                self._fault_reply(fault)
                return
        if path == "/api/v3/exchangeInfo":
            self._json(200, ex.exchange_info())
        elif path == "/api/v3/klines":
            self._json(*ex.klines(q))
        elif path == "/api/v3/time":
            self._json(200, {"serverTime": ex.now()})
        elif path == "/api/v3/ping":
            self._json(200, {})
        else:
            with ex._lock:
                ex.unknown_paths.append(path)
            self._json(404, {"code": -1, "msg": f"fake exchange: {path} is not served"})

    def _fault_reply(self, f: Fault) -> None:
        headers: dict[str, str] = {}
        if f.status == 429:
            body: Any = {"code": -1003, "msg": "Too much request weight used; current limit is 6000 request "
                                               "weight per 1 MINUTE."}
            if f.retry_after is not None:
                headers["Retry-After"] = f"{f.retry_after:g}"
        elif f.status == 503:
            body = {"code": -1008, "msg": "System is under maintenance."}
        else:
            body = {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}
        self._json(f.status, body, headers)

    def _json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # the client gave up (its timeout fired while we were slow): nothing to answer
            self.close_connection = True


def _main() -> None:
    p = argparse.ArgumentParser(description="Fake Binance spot REST on 127.0.0.1 (exchangeInfo, klines).")
    p.add_argument("--symbols", nargs="+", default=["BTC/USDT", "ETH/USDT"])
    p.add_argument("--timeframe", default="1m")
    p.add_argument("--bars", type=int, default=2000, help="Bars per symbol, ending at the wall clock's now.")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--port", type=int, default=8765)
    a = p.parse_args()
    tf = parse_timeframe(a.timeframe)
    now = time.time_ns() // 1_000_000
    start = (now // tf - a.bars + 1) * tf
    # enough future bars that a client polling the live clock keeps getting new candles for a day
    bars = make_bars(a.symbols, a.timeframe, start, a.bars + 86_400_000 // tf, a.seed)
    with FakeExchange(bars, timeframe=a.timeframe, now_fn=lambda: time.time_ns() // 1_000_000, port=a.port) as ex:
        print(f"fake exchange on {ex.url} ({', '.join(a.symbols)} {a.timeframe}); "
              f"ccxt urls: {json.dumps(ex.ccxt_urls())}; Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    _main()
