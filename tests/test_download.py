"""download(): the fake Binance on 127.0.0.1 → CSV files FilesFeed reads; incremental, append-only, closed bars only."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.clock import SimClock
from engine.config import CcxtConfig
from engine.errors import ConfigError, DataError
from engine.inputs.download import CSV_HEADER, download, iso_ms
from engine.types import Bar, parse_iso_ms
from tests.fake_exchange import FakeExchange, make_bars

T0 = 1_735_689_600_000
TF = 300_000
SYMS = ["BTC/USDT", "ETH/USDT"]


@pytest.fixture
def bars() -> dict[str, list[Bar]]:
    return make_bars(SYMS, "5m", T0, 4000, seed=9)


@pytest.fixture
def ex(bars: dict[str, list[Bar]]) -> Iterator[FakeExchange]:
    with FakeExchange(bars, timeframe="5m", now_ms=T0 + 2500 * TF + 90_000) as fake:  # bar 2500 forming
        yield fake


def _cfg(ex: FakeExchange) -> CcxtConfig:
    return CcxtConfig(urls=ex.ccxt_urls(), options={"fetchMarkets": {"types": ["spot"]}})


def _get(ex: FakeExchange, out: Path, since: int = T0, **kw: object) -> dict[str, Path]:
    kw.setdefault("clock", SimClock(ex.now_ms))
    return download(_cfg(ex), SYMS, "5m", since, out, backoff_s=0.01, rate_limit_ms=5, **kw)  # type: ignore[arg-type]


def _rows(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_files_are_named_formatted_and_hold_only_closed_candles(ex: FakeExchange, bars: dict[str, list[Bar]],
                                                                tmp_path: Path) -> None:
    files = _get(ex, tmp_path / "data")
    assert {p.name for p in files.values()} == {"BINANCE_BTC-USDT_5m.csv", "BINANCE_ETH-USDT_5m.csv"}
    lines = _rows(files["BTC/USDT"])
    assert lines[0] == CSV_HEADER
    assert lines[1] == "2025-01-01T00:00:00Z," + ",".join(repr(x) for x in (
        bars["BTC/USDT"][0].open, bars["BTC/USDT"][0].high, bars["BTC/USDT"][0].low, bars["BTC/USDT"][0].close,
        bars["BTC/USDT"][0].volume))
    assert len(lines) == 1 + 2500  # bars 0..2499; bar 2500 is still forming and is not written
    assert lines[-1].startswith(iso_ms(T0 + 2499 * TF))
    assert ex.requests["/api/v3/klines"] == 2 * 3  # 2500 candles = three pages of 1000 per symbol


def test_a_second_call_only_appends(ex: FakeExchange, bars: dict[str, list[Bar]], tmp_path: Path) -> None:
    files = _get(ex, tmp_path)
    before = {s: p.read_bytes() for s, p in files.items()}
    ex.advance(10 * TF)
    calls = len(ex.log)
    _get(ex, tmp_path, since=T0 + 5 * TF)  # an earlier since does not rewrite anything
    for s, p in files.items():
        after = p.read_bytes()
        assert after.startswith(before[s])  # byte-identical prefix
        new = after[len(before[s]):].decode().splitlines()
        assert [parse_iso_ms(r.split(",")[0]) for r in new] == [T0 + i * TF for i in range(2500, 2510)]
    fetched = ex.log[calls:]
    klines = [q for q in fetched if q.startswith("/api/v3/klines")]
    assert len(klines) == 2 and all(f"startTime={T0 + 2500 * TF}" in q for q in klines)
    current = {s: p.read_bytes() for s, p in files.items()}
    calls = len(ex.log)
    assert _get(ex, tmp_path) == files  # nothing new closed: nothing fetched, nothing written
    assert {s: p.read_bytes() for s, p in files.items()} == current
    assert not [q for q in ex.log[calls:] if q.startswith("/api/v3/klines")]


def test_files_read_back_with_files_feed_give_the_bars_the_exchange_served(ex: FakeExchange,
                                                                          bars: dict[str, list[Bar]],
                                                                          tmp_path: Path) -> None:
    files_mod = pytest.importorskip("engine.inputs.feeds.files")
    _get(ex, tmp_path)
    feed = files_mod.FilesFeed(tmp_path, SYMS, "5m")
    got: dict[str, list[Bar]] = {s: [] for s in SYMS}
    for s in feed.slices():
        for b in s:
            got[b.symbol].append(b)
    for sym in SYMS:
        assert got[sym] == bars[sym][:2500]


def test_until_is_exclusive_and_since_is_rounded_up_to_the_grid(ex: FakeExchange, tmp_path: Path) -> None:
    files = _get(ex, tmp_path, since=T0 + 10 * TF + 1, until_ms=T0 + 20 * TF)
    rows = _rows(files["ETH/USDT"])[1:]
    assert [parse_iso_ms(r.split(",")[0]) for r in rows] == [T0 + i * TF for i in range(11, 20)]


def test_progress_is_reported_per_page(ex: FakeExchange, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    _get(ex, tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert len(seen) == 6
    assert seen[-1] == (5000, 5000)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_exchange_errors_are_retried_and_the_file_is_complete(ex: FakeExchange, tmp_path: Path) -> None:
    ex.fail(2, 500)
    ex.fail(1, 429, retry_after=0.01)
    files = _get(ex, tmp_path)
    assert len(_rows(files["BTC/USDT"])) == 2501


def test_an_exchange_that_keeps_failing_keeps_the_pages_written_and_resumes_later(ex: FakeExchange,
                                                                                  tmp_path: Path) -> None:
    orig = ex.klines
    served = {"n": 0}

    def flaky(q):  # type: ignore[no-untyped-def]
        served["n"] += 1
        if served["n"] > 2:  # after two good pages the exchange goes away for good
            return 503, {"code": -1008, "msg": "System is under maintenance."}
        return orig(q)

    ex.klines = flaky  # type: ignore[method-assign]
    with pytest.raises(DataError, match="still failing"):
        download(_cfg(ex), SYMS, "5m", T0, tmp_path, clock=SimClock(ex.now_ms), retries=1, backoff_s=0.01,
                 rate_limit_ms=5)
    path = tmp_path / "BINANCE_BTC-USDT_5m.csv"
    assert len(_rows(path)) == 1 + 2000  # two whole pages
    ex.klines = orig  # type: ignore[method-assign]
    _get(ex, tmp_path)
    rows = _rows(path)[1:]
    assert [parse_iso_ms(r.split(",")[0]) for r in rows] == [T0 + i * TF for i in range(2500)]


def test_a_torn_last_line_is_dropped_before_appending(ex: FakeExchange, tmp_path: Path) -> None:
    files = _get(ex, tmp_path, until_ms=T0 + 10 * TF)
    path = files["BTC/USDT"]
    good = path.read_bytes()
    path.write_bytes(good + b"2025-01-01T00:50:00Z,100.1,10")  # an interrupted write
    _get(ex, tmp_path, until_ms=T0 + 12 * TF)
    text = path.read_bytes()
    assert text.startswith(good)
    assert [parse_iso_ms(r.split(",")[0]) for r in _rows(path)[1:]] == [T0 + i * TF for i in range(12)]


def test_a_foreign_file_is_not_appended_to(ex: FakeExchange, tmp_path: Path) -> None:
    (tmp_path / "BINANCE_BTC-USDT_5m.csv").write_text("date;price\n1;2\n")
    with pytest.raises(DataError, match="expected the header"):
        _get(ex, tmp_path)


def test_bad_arguments_are_clear_errors(ex: FakeExchange, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="'csv' or 'parquet'"):
        _get(ex, tmp_path, fmt="xlsx")
    with pytest.raises(ConfigError, match="timeframe"):
        download(_cfg(ex), SYMS, "5 minutes", T0, tmp_path)
    with pytest.raises(DataError, match="'DOGE/USDT'"):
        download(_cfg(ex), ["DOGE/USDT"], "5m", T0, tmp_path, clock=SimClock(ex.now_ms))
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    with pytest.raises(ConfigError, match="pip install pyarrow"):
        _get(ex, tmp_path, fmt="parquet")
