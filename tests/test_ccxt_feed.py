"""CcxtFeed via the real ccxt client against the fake Binance on 127.0.0.1 → markets, limits, aligned closed bars.

Covers warm-up, closed-bar polling, back-fill after a pause, 1s bars, holes, and transient/permanent errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from engine.clock import SimClock
from engine.config import CcxtConfig
from engine.errors import ConfigError, DataError
from engine.inputs.feeds.ccxt_feed import CcxtFeed, ExchangeUnavailable, last_closed_open_ms
from engine.types import Bar
from tests.fake_exchange import FakeExchange, SymbolSpec, make_bars

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
TF = 300_000
SYMS = ("BTC/USDT", "ETH/USDT")
SPOT = {"fetchMarkets": {"types": ["spot"]}}


def _cfg(ex: FakeExchange, **kw: object) -> CcxtConfig:
    return CcxtConfig.model_validate({"urls": ex.ccxt_urls(), "options": SPOT, **kw})


class Env:
    """A fake exchange and the feed's clock moved together (the exchange's now is the world's now)."""

    def __init__(self, ex: FakeExchange, clock: SimClock) -> None:
        self.ex = ex
        self.clock = clock

    def at(self, ms: int) -> None:
        self.ex.now_ms = ms
        self.clock.advance_to(ms)

    def advance(self, ms: int) -> None:
        self.at(self.clock.now_ms() + ms)

    def feed(self, symbols: tuple[str, ...] = SYMS, timeframe: str = "5m", **kw: object) -> CcxtFeed:
        opts: dict[str, object] = {"backoff_s": 0.01, "backoff_max_s": 0.05, "seed": 1, "rate_limit_ms": 5}
        opts.update(kw)
        cfg_kw = {k: opts.pop(k) for k in ("timeout_ms",) if k in opts}
        return CcxtFeed(_cfg(self.ex, **cfg_kw), symbols, timeframe, clock=self.clock, **opts)  # type: ignore[arg-type]


@pytest.fixture
def bars() -> dict[str, list[Bar]]:
    return make_bars(SYMS, "5m", T0, 6000, seed=3)


@pytest.fixture
def env(bars: dict[str, list[Bar]]) -> Iterator[Env]:
    now = T0 + 2000 * TF + 60_000  # bar 1999 closed a minute ago, bar 2000 is forming
    with FakeExchange(bars, timeframe="5m", now_ms=now) as ex:
        yield Env(ex, SimClock(now))


def _flat(slices: list[tuple[Bar, ...]]) -> dict[str, list[Bar]]:
    out: dict[str, list[Bar]] = {}
    for s in slices:
        for b in s:
            out.setdefault(b.symbol, []).append(b)
    return out


def _assert_contiguous(slices: list[tuple[Bar, ...]], first_open: int, tf: int = TF) -> None:
    assert [s[0].open_ms for s in slices] == [first_open + i * tf for i in range(len(slices))]
    for s in slices:
        assert len({b.close_ms for b in s}) == 1


# ------------------------------------------------------------------------------------------ markets


def test_load_markets_and_limits_map_binance_filters(bars: dict[str, list[Bar]]) -> None:
    specs = {
        "BTC/USDT": SymbolSpec(tick_size="0.10000000", step_size="0.00100000", min_qty="0.00200000",
                               min_notional="10.00000000", notional_filter="MIN_NOTIONAL"),
        "ETH/USDT": SymbolSpec(tick_size="0.01000000", step_size="0.00010000", min_qty="0.00010000",
                               min_notional="5.00000000"),
    }
    now = T0 + 100 * TF
    with FakeExchange(bars, timeframe="5m", now_ms=now, specs=specs) as ex:
        feed = Env(ex, SimClock(now)).feed()
        t = time.perf_counter()
        lim = feed.limits()
        took = time.perf_counter() - t
        feed.limits()  # markets are loaded once
        assert ex.requests["/api/v3/exchangeInfo"] == 1
        assert ex.unknown_paths == []
    btc, eth = lim["BTC/USDT"], lim["ETH/USDT"]
    assert (btc.min_notional, btc.min_qty, btc.qty_step, btc.price_tick) == (10.0, 0.002, 0.001, 0.1)
    assert (eth.min_notional, eth.min_qty, eth.qty_step, eth.price_tick) == (5.0, 0.0001, 0.0001, 0.01)
    assert (btc.market_type, eth.market_type) == ("spot", "spot")  # binance's /api/v3 is its spot market
    assert took < 5.0


def test_unknown_symbol_is_a_data_error_naming_it_and_close_matches(bars: dict[str, list[Bar]]) -> None:
    with FakeExchange(bars, timeframe="5m", extra_symbols=["BTC/USDC", "SOL/USDT"]) as ex:
        feed = Env(ex, SimClock(T0 + 10 * TF)).feed(symbols=("BTC/USDT", "BTC/USD"))
        with pytest.raises(DataError) as e:
            feed.load()
    msg = str(e.value)
    assert "'BTC/USD'" in msg and "BTC/USDT" in msg and "BTC/USDC" in msg


def test_unknown_timeframe_and_exchange_are_clear_errors(env: Env) -> None:
    with pytest.raises(DataError, match="no '7m' candles"):
        env.feed(timeframe="7m").load()
    with pytest.raises(ConfigError, match="did you mean 'binance'"):
        CcxtFeed(CcxtConfig(exchange="binanse"), SYMS, "5m", clock=env.clock)


def test_feed_protocol_attributes(env: Env) -> None:
    feed = env.feed()
    assert feed.symbols == SYMS and feed.timeframe == "5m" and feed.timeframe_ms == TF
    assert tuple(feed.news()) == ()


# ------------------------------------------------------------------------------------------- warm-up


def test_warmup_pages_history_into_aligned_closed_slices(env: Env, bars: dict[str, list[Bar]]) -> None:
    feed = env.feed()
    slices = feed.warmup(1500)
    assert len(slices) == 1500
    _assert_contiguous(slices, T0 + 500 * TF)
    assert all(tuple(b.symbol for b in s) == SYMS for s in slices)
    got = _flat(slices)
    for sym in SYMS:
        assert got[sym] == bars[sym][500:2000]  # exactly what the exchange holds, forming bar 2000 excluded
    assert env.ex.requests["/api/v3/klines"] >= 4  # 1500 bars need two pages per symbol
    assert feed.forward_filled == {}


def test_poll_delivers_only_closed_bars_never_the_forming_one(env: Env, bars: dict[str, list[Bar]]) -> None:
    feed = env.feed()
    feed.warmup(10)
    assert feed.poll() == []
    env.advance(TF // 2)  # bar 2000 is still forming (the fake serves it with partial values)
    assert feed.poll() == []
    env.at(T0 + 2001 * TF)  # bar 2000 closes exactly now
    (s,) = feed.poll()
    assert s == (bars["BTC/USDT"][2000], bars["ETH/USDT"][2000])
    assert feed.poll() == []


def test_poll_without_warmup_starts_at_the_latest_closed_bar(env: Env, bars: dict[str, list[Bar]]) -> None:
    feed = env.feed()
    (s,) = feed.poll()
    assert s[0] == bars["BTC/USDT"][1999]


def test_gap_after_a_pause_is_back_filled_in_order_with_paging(env: Env, bars: dict[str, list[Bar]]) -> None:
    feed = env.feed()
    feed.warmup(5)
    env.advance(7 * TF + TF // 2)  # paused for 7.5 bars
    got = feed.poll()
    _assert_contiguous(got, T0 + 2000 * TF)
    assert len(got) == 7
    env.advance(2500 * TF)  # a long outage: more than two pages per symbol
    before = env.ex.requests["/api/v3/klines"]
    more = feed.poll()
    assert env.ex.requests["/api/v3/klines"] - before >= 6
    _assert_contiguous(got + more, T0 + 2000 * TF)
    flat = _flat(got + more)
    for sym in SYMS:
        assert flat[sym] == bars[sym][2000:4507]


def test_one_second_timeframe() -> None:
    t0 = T0 + 123_000
    b = make_bars(SYMS, "1s", t0, 400, seed=5)
    now = t0 + 200_000 + 400  # bar 199 closed 0.4 s ago
    with FakeExchange(b, timeframe="1s", now_ms=now) as ex:
        env = Env(ex, SimClock(now))
        feed = env.feed(timeframe="1s")
        warm = feed.warmup(120)
        _assert_contiguous(warm, t0 + 80_000, 1000)
        env.advance(3000)
        new = feed.poll()
        assert [s[0] for s in new] == b["BTC/USDT"][200:203]
        assert ex.log[-1].count("interval=1s") == 1


def test_weekly_bars_are_on_the_monday_grid() -> None:
    week = 7 * 86_400_000
    monday = 1_736_121_600_000  # 2025-01-06T00:00:00Z, a Monday
    assert last_closed_open_ms(monday + week + 5, week, 4 * 86_400_000) == monday


# ----------------------------------------------------------------------------------- missing candles


def test_a_hole_in_one_symbol_is_forward_filled_flat_and_counted(bars: dict[str, list[Bar]]) -> None:
    holed = dict(bars)
    holed["ETH/USDT"] = [b for i, b in enumerate(bars["ETH/USDT"]) if i not in (1995, 1996)]
    now = T0 + 2000 * TF + 1000
    with FakeExchange(holed, timeframe="5m", now_ms=now) as ex:
        feed = Env(ex, SimClock(now)).feed()
        slices = feed.warmup(10)
    _assert_contiguous(slices, T0 + 1990 * TF)
    eth = _flat(slices)["ETH/USDT"]
    prev = bars["ETH/USDT"][1994]
    for filled in eth[5:7]:
        assert (filled.open, filled.high, filled.low, filled.close, filled.volume) == (prev.close,) * 4 + (0.0,)
    assert eth[7] == bars["ETH/USDT"][1997]
    assert feed.forward_filled == {"ETH/USDT": 2}


def test_a_late_symbol_is_waited_for_before_being_filled(bars: dict[str, list[Bar]]) -> None:
    late = dict(bars)
    late["ETH/USDT"] = bars["ETH/USDT"][:2000]  # the exchange stops publishing ETH after bar 1999
    now = T0 + 2000 * TF + 1000
    with FakeExchange(late, timeframe="5m", now_ms=now) as ex:
        env = Env(ex, SimClock(now))
        feed = env.feed(stale_bars=2)
        feed.warmup(3)
        env.advance(TF)  # bar 2000 closed: BTC has it, ETH not (yet)
        assert feed.poll() == []
        env.advance(TF)
        assert feed.poll() == []
        env.advance(TF)  # ETH has now been silent for more than two bars: bar 2000 is filled
        got = feed.poll()
    assert [s[0].open_ms for s in got] == [T0 + 2000 * TF]
    assert got[0][1].volume == 0.0 and got[0][1].close == bars["ETH/USDT"][1999].close
    assert feed.forward_filled["ETH/USDT"] == 1


def test_a_symbol_listed_later_joins_at_its_first_bar(bars: dict[str, list[Bar]]) -> None:
    later = {"BTC/USDT": bars["BTC/USDT"], "ETH/USDT": bars["ETH/USDT"][1995:]}
    now = T0 + 2000 * TF + 1000
    with FakeExchange(later, timeframe="5m", now_ms=now) as ex:
        slices = Env(ex, SimClock(now)).feed().warmup(10)
    assert [len(s) for s in slices] == [1] * 5 + [2] * 5


# ------------------------------------------------------------------------------------------ failures


def test_429_with_retry_after_is_retried_and_honoured_within_the_bound(env: Env, caplog: pytest.LogCaptureFixture
                                                                       ) -> None:
    delays: list[float] = []
    feed = env.feed(sleep=delays.append, backoff_max_s=0.5)
    feed.warmup(3)
    env.advance(TF)
    env.ex.fail(2, 429, retry_after=0.3)
    with caplog.at_level(logging.INFO, logger="tradevet.feeds.ccxt"):
        got = feed.poll()
    assert len(got) == 1
    assert len(delays) == 2 and all(d >= 0.3 for d in delays)
    assert "DDoSProtection" in caplog.text or "RateLimitExceeded" in caplog.text
    env.advance(TF)
    env.ex.fail(1, 429, retry_after=30)  # the server's wait is capped by our own bound
    feed.poll()
    assert delays[-1] <= 0.5


def test_backoff_is_exponential_with_seeded_jitter(env: Env) -> None:
    def delays_for(seed: int) -> list[float]:
        out: list[float] = []
        feed = env.feed(sleep=out.append, seed=seed, backoff_s=0.1, backoff_max_s=100.0, retries=4)
        feed.load()
        env.ex.fail(5, 500)  # retries=4: five tries in all
        with pytest.raises(ExchangeUnavailable):
            feed.client.call("probe", feed.client.exchange.fetch_ohlcv, "BTC/USDT", "5m", limit=1)
        env.ex.clear_faults()
        return out

    a, b, c = delays_for(1), delays_for(1), delays_for(2)
    assert len(a) == 4 and a == b and a != c
    for i, d in enumerate(a):
        assert 0.1 * 2**i * 0.5 <= d <= 0.1 * 2**i * 1.5


def test_a_long_outage_never_raises_then_catches_up_without_gap_or_duplicate(
        env: Env, bars: dict[str, list[Bar]], caplog: pytest.LogCaptureFixture) -> None:
    feed = env.feed(retries=2)
    delivered = feed.warmup(5)
    for status in (500, 503, 429):
        env.advance(TF)
        env.ex.fail(1000, status)
        with caplog.at_level(logging.WARNING, logger="tradevet.feeds.ccxt"):
            assert feed.poll() == []
        env.ex.clear_faults()
    assert "poll incomplete" in caplog.text
    assert feed.failed_polls == 3
    env.advance(TF)
    delivered += feed.poll()
    _assert_contiguous(delivered, T0 + 1995 * TF)
    assert _flat(delivered)["BTC/USDT"] == bars["BTC/USDT"][1995:2004]


def test_a_partial_outage_delivers_only_complete_slices(env: Env, bars: dict[str, list[Bar]]) -> None:
    feed = env.feed(retries=1)
    delivered = feed.warmup(2)
    env.advance(3 * TF)
    env.ex.fail(2, 500)  # BTC (first symbol) fails twice = gives up; ETH succeeds
    assert feed.poll() == []
    env.advance(TF)
    delivered += feed.poll()
    _assert_contiguous(delivered, T0 + 1998 * TF)
    assert [s[1] for s in delivered] == bars["ETH/USDT"][1998:2004]


def test_timeouts_and_connection_resets_are_survived(env: Env, bars: dict[str, list[Bar]]) -> None:
    feed = env.feed(timeout_ms=250, retries=3)
    delivered = feed.warmup(2)
    env.advance(TF)
    env.ex.slow(2, 1.0)
    env.ex.reset(1)
    t = time.perf_counter()
    delivered += feed.poll()
    assert time.perf_counter() - t < 5.0
    env.advance(TF)
    env.ex.slow(100, 1.0)
    assert feed.poll() == []  # four timeouts in a row: gave up, no exception
    env.ex.clear_faults()
    env.advance(TF)
    delivered += feed.poll()
    _assert_contiguous(delivered, T0 + 1998 * TF)
    assert _flat(delivered)["ETH/USDT"] == bars["ETH/USDT"][1998:2003]
    assert feed.client.retried >= 6


def test_a_permanent_exchange_error_is_a_data_error(env: Env) -> None:
    feed = env.feed()
    feed.warmup(2)
    env.ex._by_id.pop("ETHUSDT")  # delisted: klines answer -1121 Invalid symbol
    env.advance(TF)
    with pytest.raises(DataError, match="Invalid symbol"):
        feed.poll()


def test_markets_unreachable_at_poll_time_is_not_raised(env: Env) -> None:
    feed = env.feed(retries=1)
    env.ex.fail(10, 503, path="/api/v3/exchangeInfo")
    assert feed.poll() == []
    with pytest.raises(ExchangeUnavailable):  # but at start-up it is an error the user must see
        feed.load()
    env.ex.clear_faults()
    assert len(feed.poll()) == 1
