"""The context pack's fast paths give exactly what the plain computations give — the same bits, so the same
pack hashes: the fast JSON writer against the generic json path, the rolling variances of the vol percentile
against their plain numpy definition, the builder's regime against the full computation, the builder's inline
correlations against the market's, and its caches against recomputation; and the caches stay bounded."""

from __future__ import annotations

import hashlib
import json
import math
import random
import struct
from typing import Any

import numpy as np
import pytest

import engine.core.context as context_mod
import engine.packjson as packjson
from engine.core.context import ContextBuilder, regime_closes, regime_of
from engine.core.market import MarketState
from engine.packjson import pack_json_generic
from engine.types import (
    ContextPack,
    CorrelatedPosition,
    NewsCategory,
    NewsFlag,
    RegimeInfo,
    RegimeTag,
    Side,
    Signal,
    TradeStats,
    TradeSummary,
    _num,
)
from tests.conftest import SYM, TF, ListNews, bar_close_ms, flat_bar, make_signal
from tests.test_context import Ledger, ctx_config

# ------------------------------------------------------------------------------------ pack JSON


def _float_from_bits(rng: random.Random) -> float:
    return struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]


def test_the_fast_float_text_is_json_of_the_rounded_float() -> None:
    rng = random.Random(3)
    values = [0.0, -0.0, 1.0, 100.0, 1e11, 999999999999.5, 1e12, 1e15, 1e16, 1e-4, 1e-5, 9.9999999999995e-5,
              5e-324, 1.7976931348623157e308, 0.1 + 0.2, math.nan, math.inf, -math.inf]
    values += [_float_from_bits(rng) for _ in range(100_000)]
    values += [rng.uniform(-1, 1) * 10.0 ** rng.randint(-20, 25) for _ in range(100_000)]
    values += [float(f"{rng.random():.{rng.randint(1, 14)}g}") * 10.0 ** rng.randint(-6, 18) for _ in range(50_000)]
    values += [float(rng.randint(-10**17, 10**17)) for _ in range(20_000)]
    for x in values:
        assert packjson._jn(x) == json.dumps(_num(x)), x


def test_the_fast_timestamp_text_is_isoformat() -> None:
    from engine.types import ms_to_dt

    rng = random.Random(6)
    edges = [0, 1, 999, 1000, 59_999, 86_399_999, 86_400_000, 951_782_400_000, 951_868_799_999,
             packjson._ISO_FAST_END - 1, packjson._ISO_FAST_END, -1, -86_400_001, 10**13]
    values = edges + [rng.randrange(0, packjson._ISO_FAST_END) for _ in range(200_000)]
    values += [rng.randrange(0, packjson._ISO_FAST_END // 300_000) * 300_000 + rng.choice([0, 1, 500, 999])
               for _ in range(100_000)]
    for ms in values:
        assert packjson._iso_ms(ms) == ms_to_dt(ms).isoformat(), ms


def _summary(rng: random.Random, i: int) -> TradeSummary:
    t0 = 1_735_689_600_000
    return TradeSummary(rng.choice(["BTC/USDT", "ETH/USDT", "Ünï/USDT"]), rng.choice(list(Side)),
                        t0 + i * 300_000, t0 + (i + 7) * 300_000 + rng.choice([0, 1, 999]),
                        rng.uniform(-5, 5), rng.uniform(-3, 3), rng.choice(["stop", "target", "time"]))


def _odd_float(rng: random.Random) -> Any:
    """Mostly plain floats; sometimes a value the fast writer must leave to the generic path."""
    return rng.choice([rng.uniform(-1e6, 1e6), rng.uniform(-1, 1) * 1e-7, 123.0, 1e13, math.nan, math.inf, -0.0,
                       7, np.float64(1.25), None] + [rng.uniform(-10, 10)] * 20)


TEXTS = ["plain", "24h quote volume 3.1M ≥ 1M", 'quote " and \\ backslash', "new\nline\ttab\x00\x1f", "emoji 🚀",
         "", "ünïcödé", "\u2028\u2029", "</script>"]


def _random_pack_parts(rng: random.Random, trades: list[TradeSummary]) -> dict[str, Any]:
    weird = rng.random() < 0.3

    def f() -> Any:
        return _odd_float(rng) if weird else rng.uniform(-1e4, 1e4)

    entry = rng.choice([100.0, 0.1 + 0.2, 65_432.123456789, 1e-8]) if not weird else rng.choice(
        [100.0, 100, math.nan, math.inf, np.float64(1.5), 2.5])
    sig = Signal(rng.choice(["s1:BTC/USDT:1", 'id "q"', "ünï"]), rng.choice(["sma", "rsi 2"]),
                 rng.choice(["BTC/USDT", "ETH/USDT"]), rng.choice(list(Side)),
                 1_735_689_600_000 + rng.randrange(10**6) * rng.choice([1, 1000, 300_000]),
                 entry, entry * 0.95 if isinstance(entry, float) else 95.0, 110.5, rng.choice([0.1, 0.25, 1 / 3]),
                 rng.choice(["5m", "1h"]), tuple(rng.sample(["style:trend", "x", "ü", 'q"'], rng.randint(0, 3))))
    regime = RegimeInfo(rng.choice(list(RegimeTag)), f(), f(), rng.choice([None, 0.0, 55.5, 100.0]), 96, 8)
    corr = tuple(CorrelatedPosition(rng.choice(["ETH/USDT", "SOL/USDT"]), rng.choice(list(Side)), f(),
                                    rng.choice([None, f()]), f(), rng.choice(["s1", "s2"]))
                 for _ in range(rng.randint(0, 6)))
    news = tuple(NewsFlag(rng.choice(list(NewsCategory)), f(), rng.choice(TEXTS), rng.choice(TEXTS))
                 for _ in range(rng.randint(0, 3)))
    k = rng.randint(0, len(trades))
    start = rng.randint(0, len(trades) - k)
    stats = TradeStats(k, rng.choice([None, (k and rng.randint(0, k) / k) or None]), rng.randint(0, k))
    return {"signal": sig, "recent_trades": tuple(trades[start : start + k]), "trade_stats": stats,
            "regime": regime, "correlated": corr, "news": news, "gate_note": rng.choice(TEXTS),
            "equity": rng.choice([10_000.0, 9_876.54321, 1e-3]) if not weird else _odd_float(rng)}


def test_the_fast_pack_json_is_the_generic_json() -> None:
    rng = random.Random(11)
    trades = [_summary(rng, i) for i in range(40)]
    slow = 0
    for _ in range(3000):
        parts = _random_pack_parts(rng, trades)
        pack = ContextPack.build(**parts)
        assert pack.json == pack_json_generic(pack)
        assert pack.hash == hashlib.sha256(pack.json.encode("utf-8")).hexdigest()
        try:
            packjson._signal_json(pack.signal)
            packjson._jn(pack.equity)
        except packjson._Slow:
            slow += 1
    assert 100 < slow < 2000  # both paths were exercised


def test_the_fast_writer_is_what_writes_ordinary_packs(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(5)
    trades = [_summary(rng, i) for i in range(20)]
    parts = _random_pack_parts(random.Random(1), trades)
    parts["signal"] = make_signal(tags=("a", "b"))
    parts["equity"] = 10_000.0
    parts["recent_trades"] = tuple(trades)
    expected = ContextPack.build(**parts)

    def refuse(pack: ContextPack) -> str:
        raise AssertionError("generic path used")

    monkeypatch.setattr(packjson, "pack_json_generic", refuse)
    assert ContextPack.build(**parts).json == expected.json
    with pytest.raises(AssertionError, match="generic path used"):
        ContextPack.build(**{**parts, "equity": 10_000})  # an int: the generic path's business


def test_texts_that_cannot_be_encoded_fail_as_before() -> None:
    with pytest.raises(UnicodeEncodeError):
        ContextPack.build(**{**_random_pack_parts(random.Random(2), []), "gate_note": "lone \ud800 surrogate"})


def test_build_computes_json_and_hash_itself() -> None:
    parts = _random_pack_parts(random.Random(4), [])
    with pytest.raises(TypeError):
        ContextPack.build(**parts, hash="0" * 64)
    with pytest.raises(TypeError):
        ContextPack.build(**{k: v for k, v in parts.items() if k != "equity"})


def test_trade_json_is_shared_by_identity_and_stays_bounded() -> None:
    rng = random.Random(9)
    trades = tuple(_summary(rng, i) for i in range(20))
    copies = tuple(TradeSummary(*(getattr(t, f) for f in TradeSummary.__slots__)) for t in trades)
    text, utf8 = packjson._trades_json(trades)
    assert packjson._trades_json(trades)[0] is text  # kept
    assert packjson._trades_json(copies) == (text, utf8)  # equal values, other objects: the same text
    assert text == "[" + ",".join(packjson._dumps_rounded(t.to_dict()) for t in trades) + "]"
    assert utf8 == text.encode("utf-8")
    for i in range(packjson._TRADES_JSON_MAX + 10):
        packjson._trades_json((_summary(rng, i),))
    assert len(packjson._TRADES_JSON) <= packjson._TRADES_JSON_MAX
    for i in range(packjson._SUMMARY_JSON_MAX + 10):
        packjson._summary_json_of(_summary(rng, i))
    assert len(packjson._SUMMARY_JSON) <= packjson._SUMMARY_JSON_MAX


# ------------------------------------------------------------------------------------ the builder


def _path(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sigma = 0.004 * np.exp(1.5 * np.sin(np.arange(n) / 300.0))  # calm and wild stretches
    r = rng.normal(0, sigma)
    if kind == "flat_stretches":
        r[rng.random(n) < 0.4] = 0.0  # forward-filled gaps
    elif kind == "trend":
        r += 0.003  # a large log price range
    elif kind == "tiny":
        r = rng.normal(0, 1e-7, n)
    start = {"tiny": 1e-6, "trend": 1e-3}.get(kind, 250.0)
    return start * np.exp(np.cumsum(r))


# ------------------------------------------------------------------------------------------ builder


def test_rolling_variances_are_the_plain_numpy_definition_bit_for_bit() -> None:
    def plain(r: np.ndarray, lb: int) -> np.ndarray:
        c1 = np.concatenate(([0.0], np.cumsum(r)))
        c2 = np.concatenate(([0.0], np.cumsum(r * r)))
        s1, s2 = c1[lb:] - c1[:-lb], c2[lb:] - c2[:-lb]
        return (s2 - s1 * s1 / lb) / (lb - 1)

    rng = np.random.default_rng(5)
    for n, lb in ((8, 8), (97, 96), (500, 24), (2016, 96), (3001, 96)):
        for scale in (1e-6, 0.01, 3.0):
            r = rng.normal(0.0, scale, n)
            r[rng.random(n) < 0.05] = 0.0  # flat bars
            got, want = context_mod._rolling_var(r, lb), plain(r, lb)
            assert got.shape == want.shape and np.array_equal(got.view(np.int64), want.view(np.int64))


def test_the_builder_regime_is_the_full_computation_live_and_rebuilt() -> None:
    cfg = ctx_config(regime={"lookback": 24, "k": 4, "vol_history": 6})
    rc = cfg.regime
    n_closes = regime_closes(rc)
    symbols = {SYM: 1, "ETH/USDT": 2}
    m = MarketState(TF)
    paths = {s: _path("plain", 900, seed) for s, seed in symbols.items()}
    live = ContextBuilder(cfg, m, Ledger().portfolio(), ListNews(), TF)
    rng = random.Random(8)
    packs: list[tuple[Signal, str]] = []
    ranked = 0
    for i in range(900):
        for s, c in paths.items():
            m.append(flat_bar(i, float(c[i]), symbol=s))
        for s in symbols:
            if rng.random() < 0.15:
                sig = make_signal(symbol=s, created_ms=bar_close_ms(i), entry=float(paths[s][i]))
                pack = live.build(sig, "note", m.marks())
                assert pack.regime == regime_of(m.history(s).closes(n_closes), rc, TF)
                packs.append((sig, pack.hash))
                ranked += pack.regime.vol_percentile is not None
    assert len(packs) > 150 and ranked > 100
    # rebuilt later from the full market, as of each signal's time (the same builder, then a fresh one)
    for builder in (live, ContextBuilder(cfg, m, Ledger().portfolio(), ListNews(), TF)):
        builder._regime_cache.clear()
        for sig, h in packs[::7]:
            marks = {s: float(paths[s][(sig.created_ms - bar_close_ms(0)) // TF]) for s in symbols}
            assert builder.build(sig, "note", marks).hash == h


def test_recent_trade_parts_follow_the_portfolio() -> None:
    led = Ledger()
    for i in range(30):
        led.round_trip(f"a{i}", "s1", SYM, Side.LONG, 100, 100 + (i % 3) - 1, bar_close_ms(2 * i),
                       bar_close_ms(2 * i + 1))
    pf = led.portfolio()
    b = ContextBuilder(ctx_config(recent_trades=7), MarketState(TF), pf, ListNews(), TF)
    for t in (bar_close_ms(20), bar_close_ms(21), bar_close_ms(40), bar_close_ms(100), bar_close_ms(20)):
        recent = b._recent("s1", t)
        summaries, stats = b._recent_parts(recent)
        assert summaries == tuple(pf.summary(tr) for tr in recent)
        assert stats == context_mod.trade_stats(recent)
    for i in range(400):
        b._recent_parts([pf.trades[i % 30]] * (i % 5))
    assert len(b._recent_cache) <= 256


def test_sanitised_headlines_are_cached_faithfully() -> None:
    from engine.core.headlines import sanitize_headline

    for text in [*TEXTS, "<b>HACK</b> {x}", "a" * 500]:
        for n in (20, 40, 160):
            assert context_mod._sanitized(text, n) == sanitize_headline(text, n)
    assert context_mod._sanitized(12345, 40) == sanitize_headline(12345, 40)  # type: ignore[arg-type]


def test_the_fast_trade_summary_text_is_the_generic_one() -> None:
    rng = random.Random(12)
    fast = 0
    for i in range(5000):
        t = _summary(rng, i)
        if rng.random() < 0.3:  # values the fast writer must leave to the generic path, or render alike
            t = TradeSummary(t.symbol, t.side, rng.choice([t.opened_ms, -5, 10**13]), t.closed_ms,
                             _odd_float(rng), _odd_float(rng), rng.choice(TEXTS))
        try:
            want = packjson._summary_json(t)
        except (TypeError, ValueError):
            continue  # no JSON at all (a NaN the generic writer refuses): nothing to compare
        assert packjson._summary_json_fast(t) == want
        fast += 1
    assert fast > 4000
