"""Market feeds: the synthetic market's statistics and determinism, the CSV feed's validation, repairs and alignment."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import engine.inputs.feeds as feeds
from engine.config import MarketConfig
from engine.errors import ConfigError, DataError
from engine.inputs.categories import categorize
from engine.inputs.feeds import bars_from_columns, build_feed
from engine.inputs.feeds.files import FilesFeed
from engine.inputs.feeds.synthetic import REGIMES, SyntheticFeed, _linear_recurrence, _prefix_scan
from engine.types import Bar, NewsCategory

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
TF = 300_000
SYMS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
ADVERSE = {NewsCategory.HACK, NewsCategory.DELISTING, NewsCategory.REGULATORY, NewsCategory.OUTAGE}
POSITIVE = {NewsCategory.LISTING, NewsCategory.PARTNERSHIP}
MARKET_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "market"


def variance_ratio(r: np.ndarray, k: int = 8) -> float:
    """VR = Var(k-bar returns) / (k · Var(1-bar returns)), overlapping k-bar sums (as the context uses)."""
    csum = np.concatenate(([0.0], np.cumsum(r)))
    return float((csum[k:] - csum[:-k]).var(ddof=1) / (k * r.var(ddof=1)))


def log_returns(feed: SyntheticFeed, sym: str) -> np.ndarray:
    return np.diff(np.log(feed.arrays()[sym]["close"]))


@pytest.fixture(scope="module")
def big() -> SyntheticFeed:
    """~42 days of 5m bars, four symbols: enough for stable statistics."""
    return SyntheticFeed([*SYMS, "DOGE/USDT"], "5m", 12_000, T0, 11)


# ---------------------------------------------------------------------------------- synthetic feed


def test_same_seed_is_bit_identical_and_another_seed_differs() -> None:
    a = SyntheticFeed(SYMS, "5m", 3_000, T0, 7)
    b = SyntheticFeed(SYMS, "5m", 3_000, T0, 7)
    c = SyntheticFeed(SYMS, "5m", 3_000, T0, 8)
    for sym in SYMS:
        for col, arr in a.arrays()[sym].items():
            assert arr.tobytes() == b.arrays()[sym][col].tobytes(), (sym, col)
        assert not np.array_equal(a.arrays()[sym]["close"], c.arrays()[sym]["close"])
    assert list(a.slices()) == list(b.slices())
    assert a.news() == b.news() and len(a.news()) > 0
    assert a.news() != c.news()


def test_slices_are_ordered_aligned_and_match_the_arrays() -> None:
    feed = SyntheticFeed(SYMS, "5m", 2_500, T0, 3)  # > 2 build batches, last one partial
    slices = list(feed.slices())
    assert len(slices) == 2_500 == feed.n_slices and feed.n_bars == sum(map(len, slices))
    for i, sl in enumerate(slices):
        assert tuple(b.symbol for b in sl) == SYMS
        assert {b.close_ms for b in sl} == {T0 + (i + 1) * TF}
        assert all(b.open_ms == b.close_ms - TF for b in sl)
    arr = feed.arrays()["ETH/USDT"]
    eth = [sl[1] for sl in slices]
    assert [b.close for b in eth] == arr["close"].tolist()
    assert [b.volume for b in eth] == arr["volume"].tolist()
    assert arr["open_ms"][0] == T0 and feed.timeframe_ms == TF and feed.symbols == SYMS
    assert type(eth[0]) is Bar  # a real Bar: equality and hashing work across feeds


def test_ohlc_is_consistent(big: SyntheticFeed) -> None:
    for sym, c in big.arrays().items():
        o, h, lo, cl, v = c["open"], c["high"], c["low"], c["close"], c["volume"]
        assert (lo > 0).all() and (v > 0).all(), sym
        assert (h >= np.maximum(o, cl)).all() and (lo <= np.minimum(o, cl)).all(), sym
        same = o[1:] == cl[:-1]  # open = previous close, but for rare tiny gaps
        assert same.mean() > 0.97, sym
        assert np.abs(np.log(o[1:][~same] / cl[:-1][~same])).max() < 0.01, sym
        assert not c["close"].flags.writeable


def test_per_bar_volatility_and_price_levels(big: SyntheticFeed) -> None:
    levels = {"BTC/USDT": 40_000, "ETH/USDT": 2_500, "SOL/USDT": 100, "DOGE/USDT": 50}
    for sym, level in levels.items():
        sd = log_returns(big, sym).std()
        assert 0.0015 < sd < 0.007, (sym, sd)
        assert 0.7 < big.arrays()[sym]["open"][0] / level < 1.4, sym
    hourly = SyntheticFeed(["BTC/USDT"], "1h", 2_000, T0, 11, news=False)
    assert 2.5 < log_returns(hourly, "BTC/USDT").std() / log_returns(big, "BTC/USDT").std() < 5.5  # ~sqrt(12)


def test_volatility_clusters(big: SyntheticFeed) -> None:
    r = np.abs(log_returns(big, "ETH/USDT"))
    assert np.corrcoef(r[1:], r[:-1])[0, 1] > 0.08  # |r| autocorrelated: GARCH-like clustering
    z = (r - r.mean()) / r.std()
    kurt = (log_returns(big, "ETH/USDT") ** 4).mean() / log_returns(big, "ETH/USDT").var() ** 2
    assert kurt > 4 and z.max() > 5  # fat tails


def test_symbols_are_correlated_in_a_realistic_range(big: SyntheticFeed) -> None:
    returns = np.array([log_returns(big, s) for s in big.symbols])
    corr = np.corrcoef(returns)[np.triu_indices(len(big.symbols), 1)]
    assert (corr > 0.4).all() and (corr < 0.8).all(), corr


def test_regimes_show_in_the_variance_ratio() -> None:
    feed = SyntheticFeed(SYMS, "5m", 12_000, T0, 5, news=False)
    by_regime: dict[str, list[float]] = {name: [] for name in REGIMES}
    for sym in SYMS:
        r = log_returns(feed, sym)
        reg = feed.regimes[sym][1:]  # r[i] is the return of bar i + 1
        for start in range(0, len(r) - 96, 24):
            window = reg[start:start + 96]
            if (window == window[0]).all():
                by_regime[REGIMES[window[0]]].append(variance_ratio(r[start:start + 96]))
    trend, revert, chop = (np.array(by_regime[k]) for k in ("trending", "mean_reverting", "chop"))
    assert min(len(trend), len(revert), len(chop)) > 50
    assert np.median(trend) > 1.25 and (trend > 1.25).mean() > 0.7
    assert np.median(revert) < 0.8 and (revert < 0.8).mean() > 0.8
    assert 0.75 < np.median(chop) < 1.15
    # stretches of hundreds of bars
    starts = np.flatnonzero(np.diff(feed.regimes["BTC/USDT"]) != 0)
    assert np.diff(starts).min() >= 96 and 150 < np.diff(starts).mean() < 700


def test_volume_is_realistic(big: SyntheticFeed) -> None:
    days = big.bars * TF / 86_400_000
    quote = {s: float((c["volume"] * c["close"]).sum() / days) for s, c in big.arrays().items()}
    assert 10e6 < quote["BTC/USDT"] < 100e6 and 10e6 < quote["ETH/USDT"] < 100e6, quote
    assert 1e6 < quote["SOL/USDT"] < 10e6 and 1e6 < quote["DOGE/USDT"] < 10e6, quote
    c = big.arrays()["BTC/USDT"]
    hour = (c["open_ms"] % 86_400_000) // 3_600_000
    qv = c["volume"] * c["close"]
    assert qv[(hour >= 13) & (hour < 17)].mean() > 1.3 * qv[(hour >= 1) & (hour < 5)].mean()  # intraday season
    r = np.abs(np.diff(np.log(c["close"])))
    assert qv[1:][r > np.quantile(r, 0.9)].mean() > 1.3 * qv[1:][r < np.quantile(r, 0.5)].mean()  # moves trade more


def test_news_items_are_plausible(big: SyntheticFeed) -> None:
    items = big.news()
    days = big.bars * TF / 86_400_000
    assert 0.6 * 4 * days < len(items) < 1.4 * 4 * days
    assert [n.published_ms for n in items] == sorted(n.published_ms for n in items)
    assert len({n.id for n in items}) == len(items)
    bases = {"BTC", "ETH", "SOL", "DOGE"}
    closes = set(big.arrays()["BTC/USDT"]["close_ms"].tolist())
    for n in items:
        assert n.source == "synthetic" and len(n.symbols) == 1 and n.symbols[0] in bases
        assert n.symbols[0] in n.headline
        assert categorize(n.headline) is n.category  # the keyword rules read synthetic news correctly
        assert n.published_ms in closes  # published at a bar close
    assert {n.category for n in items} == set(NewsCategory)


def test_news_is_followed_by_a_reaction_of_its_sign(big: SyntheticFeed) -> None:
    signed = []
    for n in big.news():
        sym = next(s for s in big.symbols if s.startswith(n.symbols[0] + "/"))
        c = big.arrays()[sym]
        i = int(np.searchsorted(c["close_ms"], n.published_ms))
        if n.category is NewsCategory.OTHER or i + 24 >= big.bars:
            continue
        sign = -1.0 if n.category in ADVERSE else 1.0
        signed.append(sign * np.log(c["close"][i + 24] / c["close"][i]))
    signed_arr = np.array(signed)
    assert len(signed_arr) > 100
    assert signed_arr.mean() > 0.01 and (signed_arr > 0).mean() > 0.7


def test_news_reaction_starts_after_publication() -> None:
    """No look-ahead: the market with and without news is identical up to the first publication bar."""
    on = SyntheticFeed(SYMS, "5m", 3_000, T0, 21)
    off = SyntheticFeed(SYMS, "5m", 3_000, T0, 21, news=False)
    assert off.news() == ()
    for sym in SYMS:
        base = sym.split("/")[0]
        first = min(n.published_ms for n in on.news()
                    if n.symbols == (base,) and n.category is not NewsCategory.OTHER)
        i = int(np.searchsorted(on.arrays()[sym]["close_ms"], first))  # the bar that closes at publication
        a, b = on.arrays()[sym], off.arrays()[sym]
        for col in ("open", "high", "low", "close", "volume"):
            assert np.array_equal(a[col][: i + 1], b[col][: i + 1]), (sym, col)
        assert a["close"][i + 1] != b["close"][i + 1]


def test_unpublished_news_leaves_the_market_unchanged() -> None:
    shown = SyntheticFeed(SYMS, "5m", 1_000, T0, 4)
    hidden = SyntheticFeed(SYMS, "5m", 1_000, T0, 4, publish_news=False)
    assert hidden.news() == () and len(shown.news()) > 0
    assert list(hidden.slices()) == list(shown.slices())


def test_limits_and_arguments() -> None:
    feed = SyntheticFeed(["BTC/USDT"], "15m", 10, T0, 1, min_notional=5.0, qty_step=0.001)
    assert feed.limits()["BTC/USDT"].min_notional == 5.0 and feed.limits()["BTC/USDT"].qty_step == 0.001
    assert feed.timeframe_ms == 900_000 and len(list(feed.slices())) == 10
    with pytest.raises(ValueError, match="unique"):
        SyntheticFeed(["BTC/USDT", "BTC/USDT"], "5m", 10, T0, 1)
    with pytest.raises(ValueError, match="bars"):
        SyntheticFeed(["BTC/USDT"], "5m", 0, T0, 1)
    with pytest.raises(ConfigError, match="timeframe"):
        SyntheticFeed(["BTC/USDT"], "5x", 10, T0, 1)
    assert len(list(SyntheticFeed(["BTC/USDT"], "5m", 1, T0, -3).slices())) == 1


def test_linear_recurrence_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(0)
    n = 1_000
    u = rng.standard_normal((2, n))
    cases = [
        (0.06 * u**2 + 0.92, np.full((2, n), 0.02)),  # GARCH-like, some coefficients > 1
        (np.full((2, n), 0.4), u),  # AR(1)
        (np.where(rng.random((2, n)) < 0.5, 0.4, 0.0), u),  # zeros: the doubling scan path
    ]
    for c, b in cases:
        expect = np.empty_like(b)
        prev = np.zeros(2)
        for t in range(n):
            prev = c[:, t] * prev + b[:, t]
            expect[:, t] = prev
        np.testing.assert_allclose(_linear_recurrence(c, b), expect, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(_prefix_scan(c, b), expect, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("fast", [True, False])
def test_bars_from_columns_builds_real_bars(monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    if not fast:
        monkeypatch.setattr(feeds, "_SETTERS", None)
    bars = bars_from_columns("X/Y", [0, 5], [5, 10], [1.0, 2.0], [2.0, 3.0], [0.5, 1.5], [1.5, 2.5], [7.0, 8.0])
    assert bars == [Bar("X/Y", 0, 5, 1.0, 2.0, 0.5, 1.5, 7.0), Bar("X/Y", 5, 10, 2.0, 3.0, 1.5, 2.5, 8.0)]
    assert hash(bars[0]) == hash(Bar("X/Y", 0, 5, 1.0, 2.0, 0.5, 1.5, 7.0))
    with pytest.raises(AttributeError):
        bars[0].close = 3.0  # type: ignore[misc]


# ----------------------------------------------------------------------------------------- build_feed


def test_build_feed_synthetic_from_config() -> None:
    market = MarketConfig.model_validate({"symbols": ["BTC/USDT", "ETH/USDT"], "synthetic": {"bars": 300}})
    feed = build_feed(market, seed=7, with_news=True)
    assert isinstance(feed, SyntheticFeed) and feed.bars == 300 and feed.start_ms == T0
    assert feed.limits()["ETH/USDT"].min_notional == market.limits.min_notional
    quiet = build_feed(market, seed=7, with_news=False)
    assert quiet.news() == () and list(quiet.slices()) == list(feed.slices())


def test_build_feed_files_and_ccxt_sources(tmp_path: Path) -> None:
    write_csv(tmp_path / "X_ETH-BTC_5m.csv", good_rows(5))
    files = MarketConfig.model_validate({"source": "files", "symbols": ["ETH/BTC"], "files": {"dir": str(tmp_path)}})
    assert isinstance(build_feed(files, seed=1, with_news=False), FilesFeed)
    with pytest.raises(ConfigError, match=r"^market\.files\.dir: required"):
        build_feed(MarketConfig.model_validate({"source": "files"}), seed=1, with_news=False)
    from engine.inputs.feeds.ccxt_feed import CcxtFeed

    live = build_feed(MarketConfig.model_validate({"source": "ccxt"}), seed=1, with_news=False)
    assert isinstance(live, CcxtFeed) and live.symbols == ("BTC/USDT", "ETH/USDT", "SOL/USDT")


# ------------------------------------------------------------------------------------------ files feed

HEADER = "timestamp,open,high,low,close,volume"
ISO0 = "2018-01-10T04:55:00Z"
MS0 = 1_515_560_100_000  # 2018-01-10T04:55:00Z


def iso(i: int) -> str:
    from engine.types import ms_to_dt

    return ms_to_dt(MS0 + i * TF).strftime("%Y-%m-%dT%H:%M:%SZ")


def good_rows(n: int, *, skip: tuple[int, ...] = (), start: int = 0, price: float = 1.0) -> list[str]:
    """``n`` consistent 5m rows from 2018-01-10T04:55Z (bar ``start`` on), leaving out bars ``skip``."""
    rows = []
    for i in range(start, start + n):
        if i in skip:
            continue
        o, c = price + 0.01 * i, price + 0.01 * (i + 1)
        rows.append(f"{iso(i)},{o:.2f},{c + 0.005:.3f},{o - 0.005:.3f},{c:.2f},{10 + i}")
    return rows


def write_csv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def load_error(tmp_path: Path, rows: list[str], *, header: str = HEADER, **kw: object) -> str:
    write_csv(tmp_path / "BITTREX_ETH-BTC_5m.csv", rows, header)
    with pytest.raises(DataError) as err:
        FilesFeed(tmp_path, ["ETH/BTC"], "5m", **kw)  # type: ignore[arg-type]
    return str(err.value)


def test_files_feed_reads_bars_by_open_time(tmp_path: Path) -> None:
    write_csv(tmp_path / "BITTREX_ETH-BTC_5m.csv", good_rows(4))
    feed = FilesFeed(tmp_path, ["ETH/BTC"], "5m", min_notional=0.0001, qty_step=0.01)
    bars = [sl[0] for sl in feed.slices()]
    assert [b.open_ms for b in bars] == [MS0 + i * TF for i in range(4)]
    assert bars[0] == Bar("ETH/BTC", MS0, MS0 + TF, 1.0, 1.015, 0.995, 1.01, 10.0)
    assert feed.repairs == {"ETH/BTC": {}} and feed.news() == ()
    assert feed.limits()["ETH/BTC"].min_notional == 0.0001 and feed.limits()["ETH/BTC"].qty_step == 0.01


def test_epoch_milliseconds_read_like_iso(tmp_path: Path) -> None:
    rows = good_rows(3)
    write_csv(tmp_path / "A_ETH-BTC_5m.csv", rows)
    (tmp_path / "ms").mkdir()
    as_ms = [f"{MS0 + i * TF}," + r.split(",", 1)[1] for i, r in enumerate(rows)]
    write_csv(tmp_path / "ms" / "A_ETH-BTC_5m.csv", as_ms)
    from_iso = list(FilesFeed(tmp_path, ["ETH/BTC"], "5m").slices())
    assert from_iso == list(FilesFeed(tmp_path / "ms", ["ETH/BTC"], "5m").slices()) and len(from_iso) == 3


def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as err:
        FilesFeed(missing, ["ETH/BTC"], "5m")
    assert str(err.value) == f"market.files.dir: directory '{missing}' does not exist"


def test_no_file_for_a_symbol_lists_what_is_there(tmp_path: Path) -> None:
    write_csv(tmp_path / "BITTREX_LTC-BTC_5m.csv", good_rows(3))
    write_csv(tmp_path / "BITTREX_ETH-BTC_1m.csv", good_rows(3))
    with pytest.raises(DataError) as err:
        FilesFeed(tmp_path, ["ETH/BTC"], "5m")
    assert str(err.value) == (
        f"market.files.dir: no file for ETH/BTC at 5m in '{tmp_path}' (expected a name like "
        f"VENUE_ETH-BTC_5m.csv); files for ETH-BTC: BITTREX_ETH-BTC_1m.csv"
    )
    with pytest.raises(DataError, match=r"no file for XRP/BTC at 5m .* found: BITTREX_ETH-BTC_1m\.csv, "
                                         r"BITTREX_LTC-BTC_5m\.csv$"):
        FilesFeed(tmp_path, ["XRP/BTC"], "5m")


def test_several_files_need_a_venue(tmp_path: Path) -> None:
    write_csv(tmp_path / "BITTREX_ETH-BTC_5m.csv", good_rows(3))
    write_csv(tmp_path / "BINANCE_ETH-BTC_5m.csv", good_rows(4))
    with pytest.raises(DataError) as err:
        FilesFeed(tmp_path, ["ETH/BTC"], "5m")
    assert str(err.value) == (
        f"market.files.dir: several files for ETH/BTC at 5m in '{tmp_path}': BINANCE_ETH-BTC_5m.csv, "
        f"BITTREX_ETH-BTC_5m.csv; set market.files.venue to choose one"
    )
    feed = FilesFeed(tmp_path, ["ETH/BTC"], "5m", venue="binance")
    assert feed.files["ETH/BTC"].name == "BINANCE_ETH-BTC_5m.csv" and len(list(feed.slices())) == 4


def test_empty_files(tmp_path: Path) -> None:
    (tmp_path / "BITTREX_ETH-BTC_5m.csv").write_bytes(b"")
    with pytest.raises(DataError) as err:
        FilesFeed(tmp_path, ["ETH/BTC"], "5m")
    assert str(err.value) == ("BITTREX_ETH-BTC_5m.csv: empty file (expected the header "
                              "'timestamp,open,high,low,close,volume' and at least one bar)")
    assert load_error(tmp_path, []) == ("BITTREX_ETH-BTC_5m.csv: empty file (the header "
                                        "'timestamp,open,high,low,close,volume' and no bars)")


def test_missing_or_wrong_columns(tmp_path: Path) -> None:
    assert load_error(tmp_path, ["2018-01-10T04:55:00Z,1,2,0.5,1.5"], header="timestamp,open,high,low,close") == (
        "BITTREX_ETH-BTC_5m.csv:1: expected the header 'timestamp,open,high,low,close,volume', found "
        "'timestamp,open,high,low,close' (missing volume)"
    )
    # no header at all: the first bar is taken for one, and named
    msg = load_error(tmp_path, good_rows(2)[1:], header=good_rows(1)[0])
    assert msg.startswith("BITTREX_ETH-BTC_5m.csv:1: expected the header 'timestamp,open,high,low,close,volume', "
                          "found '2018-01-10T04:55:00Z,1.00,1.015,0.995,1.01,10' (missing timestamp, open, high, low")


def test_extra_columns_blank_lines_crlf_and_bom_are_fine(tmp_path: Path) -> None:
    rows = [r + ",42" for r in good_rows(3)]
    text = "\r\n".join([" Timestamp,Open,High,Low,Close,Volume,trades", rows[0], "", rows[1], rows[2], "", ""])
    (tmp_path / "BITTREX_ETH-BTC_5m.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    bars = [sl[0] for sl in FilesFeed(tmp_path, ["ETH/BTC"], "5m").slices()]
    assert [b.volume for b in bars] == [10.0, 11.0, 12.0]
    (tmp_path / "BITTREX_ETH-BTC_5m.csv").write_bytes(text.replace(",1.03,12,", ",x,12,").encode())
    with pytest.raises(DataError, match=r"^BITTREX_ETH-BTC_5m\.csv:5: expected a number in column 'close', "):
        FilesFeed(tmp_path, ["ETH/BTC"], "5m")  # line numbers count the blank line


@pytest.mark.parametrize(
    ("line", "row", "message"),
    [
        (3, f"{iso(1)},1.01,abc,1.0,1.02,11", "expected a number in column 'high', found 'abc'"),
        (4, f"{iso(2)},1.02,1.03,1.0,,12", "expected a number in column 'close', found an empty or NaN value"),
        (4, f"{iso(2)},1.02,1.03,1.0,NaN,12", "expected a number in column 'close', found an empty or NaN value"),
        (3, f"{iso(1)},1.01,1.03,1.0,1.02,inf", "expected a number in column 'volume', found inf"),
        (3, f"{iso(1)},1.01,1.03,0,1.02,11", "expected prices > 0, found low=0.0"),
        (3, f"{iso(1)},-1.01,1.03,1.0,1.02,11", "expected prices > 0, found open=-1.01"),
        (3, f"{iso(1)},1.01,1.0,1.03,1.02,11", "expected high >= low, found high=1.0 < low=1.03"),
        (3, f"{iso(1)},1.05,1.03,1.0,1.02,11", "expected low <= open <= high, found open=1.05 outside "
                                               "[low=1.0, high=1.03]"),
        (3, f"{iso(1)},1.01,1.03,1.0,0.99,11", "expected low <= close <= high, found close=0.99 outside "
                                               "[low=1.0, high=1.03]"),
        (3, f"{iso(1)},1.01,1.03,1.0,1.02,-5", "expected volume >= 0, found volume=-5.0"),
        (3, f"{iso(1)},1.01,1.03,1.0,1.02,11,99", "expected 6 comma-separated fields "
                                                  "(timestamp,open,high,low,close,volume), found 7"),
        (3, "yesterday,1.01,1.03,1.0,1.02,11", "expected an ISO 8601 UTC time like 2018-01-10T04:55:00Z or epoch "
                                               "milliseconds in column 'timestamp', found 'yesterday'"),
    ],
)
def test_bad_rows_name_file_line_expected_and_found(tmp_path: Path, line: int, row: str, message: str) -> None:
    rows = good_rows(4)
    rows[line - 2] = row
    assert load_error(tmp_path, rows) == f"BITTREX_ETH-BTC_5m.csv:{line}: {message}"


def test_epoch_seconds_are_refused(tmp_path: Path) -> None:
    rows = [f"{(MS0 + i * TF) // 1000}," + r.split(",", 1)[1] for i, r in enumerate(good_rows(3))]
    assert load_error(tmp_path, rows) == (
        "BITTREX_ETH-BTC_5m.csv:2: expected epoch milliseconds in column 'timestamp', found 1515560100 "
        "(before 1973: seconds instead of milliseconds?)"
    )


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "BITTREX_ETH-BTC_5m.csv", good_rows(3))
    path.write_bytes(path.read_bytes().replace(b"1.01,", b"1.01\xff,", 1))
    with pytest.raises(DataError) as err:
        FilesFeed(tmp_path, ["ETH/BTC"], "5m")
    assert str(err.value) == "BITTREX_ETH-BTC_5m.csv:2: expected UTF-8 text, found the byte 0xff"


def test_out_of_order_timestamps(tmp_path: Path) -> None:
    rows = good_rows(4)
    rows[1], rows[2] = rows[2], rows[1]
    assert load_error(tmp_path, rows) == (
        "BITTREX_ETH-BTC_5m.csv:4: expected timestamps in increasing order, found 2018-01-10T05:00:00Z after "
        "2018-01-10T05:05:00Z (line 3)"
    )


def test_off_grid_timestamp_is_a_mixed_timeframe(tmp_path: Path) -> None:
    rows = good_rows(4)
    rows[2] = "2018-01-10T05:01:00Z" + rows[2][len(ISO0):]
    assert load_error(tmp_path, rows) == (
        "BITTREX_ETH-BTC_5m.csv:4: expected a bar every 5m (on the grid of the first bar, 2018-01-10T04:55:00Z), "
        "found 2018-01-10T05:01:00Z, 1m after the previous bar (mixed timeframes?)"
    )


def test_gap_longer_than_allowed(tmp_path: Path) -> None:
    rows = good_rows(10, skip=(2, 3, 4, 5))
    assert load_error(tmp_path, rows, max_gap_bars=3) == (
        "BITTREX_ETH-BTC_5m.csv:4: expected at most 3 missing bars in a row (market.files.max_gap_bars), found a "
        "gap of 4 bars (20m) after 2018-01-10T05:00:00Z"
    )


def test_duplicate_timestamp_with_other_values(tmp_path: Path) -> None:
    rows = good_rows(3)
    rows.insert(2, rows[1].rsplit(",", 1)[0] + ",999")
    assert load_error(tmp_path, rows) == (
        "BITTREX_ETH-BTC_5m.csv:4: duplicate timestamp 2018-01-10T05:00:00Z with values different from line 3"
    )


def test_exact_duplicates_and_gaps_are_repaired_counted_and_logged(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    rows = good_rows(12, skip=(3, 4, 8))
    rows.insert(1, rows[1])
    rows.insert(5, rows[5])
    write_csv(tmp_path / "BITTREX_ETH-BTC_5m.csv", rows)
    with caplog.at_level(logging.WARNING, logger="tradevet.data"):
        feed = FilesFeed(tmp_path, ["ETH/BTC"], "5m")
    assert feed.repairs == {"ETH/BTC": {"duplicate_rows_dropped": 2, "gaps_filled": 2, "bars_filled": 3}}
    logged = [r.getMessage() for r in caplog.records if r.name == "tradevet.data"]
    assert logged == ["BITTREX_ETH-BTC_5m.csv: dropped 2 exact duplicate rows; filled 3 missing bars in 2 gaps "
                      "(flat, zero volume, at the previous close)"]
    bars = [sl[0] for sl in feed.slices()]
    assert [b.open_ms for b in bars] == [MS0 + i * TF for i in range(12)]
    prev = bars[2]
    for filled in bars[3:5]:
        assert (filled.open, filled.high, filled.low, filled.close, filled.volume) == (prev.close,) * 4 + (0.0,)
    assert bars[5].volume == 15.0  # the real bar after the gap is untouched


def test_gaps_stay_holes_without_fill(tmp_path: Path) -> None:
    write_csv(tmp_path / "A_ETH-BTC_5m.csv", good_rows(6, skip=(2, 3)))
    write_csv(tmp_path / "A_LTC-BTC_5m.csv", good_rows(6))
    feed = FilesFeed(tmp_path, ["ETH/BTC", "LTC/BTC"], "5m", fill_gaps=False)
    assert [len(sl) for sl in feed.slices()] == [2, 2, 1, 1, 2, 2]
    assert feed.repairs == {"ETH/BTC": {}, "LTC/BTC": {}}
    alone = FilesFeed(tmp_path, ["ETH/BTC"], "5m", fill_gaps=False)
    assert [sl[0].open_ms for sl in alone.slices()] == [MS0 + i * TF for i in (0, 1, 4, 5)]
    # what the progress bar and the choice of the background writer go by
    assert (feed.n_slices, feed.n_bars) == (6, 10) and (alone.n_slices, alone.n_bars) == (4, 4)


def test_symbols_join_late_and_short_files_are_extended_or_stop(tmp_path: Path) -> None:
    write_csv(tmp_path / "A_ETH-BTC_5m.csv", good_rows(20))
    write_csv(tmp_path / "A_LTC-BTC_5m.csv", good_rows(15, start=3))  # joins at bar 3, ends at bar 17
    write_csv(tmp_path / "A_XMR-BTC_5m.csv", good_rows(10))  # ends at bar 9
    feed = FilesFeed(tmp_path, ["ETH/BTC", "LTC/BTC", "XMR/BTC"], "5m", max_gap_bars=5)
    slices = list(feed.slices())
    assert len(slices) == 20 == feed.n_slices and feed.n_bars == sum(map(len, slices))
    names = [tuple(b.symbol.split("/")[0] for b in sl) for sl in slices]
    assert names[:3] == [("ETH", "XMR")] * 3
    assert names[3:10] == [("ETH", "LTC", "XMR")] * 7
    assert names[10:] == [("ETH", "LTC")] * 10  # XMR is 10 bars short (> 5): it stops
    assert feed.repairs["LTC/BTC"] == {"tail_bars_filled": 2}  # 2 bars short: extended, flat
    assert slices[-1][1].volume == 0.0 and slices[-1][1].close == slices[-3][1].close
    assert all(len({b.close_ms for b in sl}) == 1 for sl in slices)


def test_files_on_different_grids_are_refused(tmp_path: Path) -> None:
    write_csv(tmp_path / "A_ETH-BTC_5m.csv", good_rows(4))
    write_csv(tmp_path / "A_LTC-BTC_5m.csv", ["2018-01-10T04:57:00Z" + r[len(ISO0):] for r in good_rows(1)])
    with pytest.raises(DataError) as err:
        FilesFeed(tmp_path, ["ETH/BTC", "LTC/BTC"], "5m")
    assert str(err.value) == ("market.files.dir: A_LTC-BTC_5m.csv is not on the 5m time grid of A_ETH-BTC_5m.csv "
                              "(its bars open 2m later in the period: mixed timeframes or shifted clocks?)")


BITTREX = MARKET_DATA / "bittrex_20180110-20180130"


@pytest.mark.skipif(not BITTREX.is_dir(), reason="shared market data not present (../shared/data/market)")
def test_replay_of_the_real_bittrex_files(caplog: pytest.LogCaptureFixture) -> None:
    symbols = sorted(p.name.split("_")[1].replace("-", "/") for p in BITTREX.glob("BITTREX_*_5m.csv"))
    assert len(symbols) == 10
    with caplog.at_level(logging.WARNING, logger="tradevet.data"):
        feed = FilesFeed(BITTREX, symbols, "5m")
    # gaps as listed in SOURCES.md: ADA 5, DASH 2, POWR 6, XMR 2, ZEC 2; ETC and ZEC end one bar early
    assert feed.repairs["ADA/BTC"]["gaps_filled"] == 5 and feed.repairs["POWR/BTC"]["gaps_filled"] == 6
    assert feed.repairs["ETC/BTC"] == {"tail_bars_filled": 1} and feed.repairs["ETH/BTC"] == {}
    assert len([r for r in caplog.records if r.name == "tradevet.data"]) == 6  # once per repaired file
    slices = list(feed.slices())
    assert len(slices) == 5_760 and all(len(sl) == 10 for sl in slices)
    closes = [sl[0].close_ms for sl in slices]
    assert closes == sorted(closes) and closes[1] - closes[0] == TF
    assert slices[0][3] == Bar("ETH/BTC", MS0, MS0 + TF, 0.0984, 0.0994766, 0.09828605, 0.0994766, 1820.54447418)
    for sym, c in feed.arrays().items():
        assert (c["high"] >= np.maximum(c["open"], c["close"])).all(), sym
        assert (c["low"] <= np.minimum(c["open"], c["close"])).all(), sym
