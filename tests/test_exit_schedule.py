"""Exits known in advance (a preloaded replay): the exit bar found at entry by one vectorised search is the bar
at which ``check_exit`` bar by bar first hits, and every fill, trade and outcome is the same, to the bit, as
with the check on every bar — ambiguous bars, gaps through stop or target, time stops, holes in time and the
end of data included."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import engine.core.executor as executor_module
from engine.app import build_feed, build_pipeline
from engine.config import ExecutionConfig, load_config
from engine.core.executor import ExecutionReport, PaperExecutor, ShadowBook
from engine.core.fills import ExitSeries, check_exit, first_exit
from engine.core.portfolio import Portfolio
from engine.drivers.replay import fills_fingerprint
from engine.types import Bar, Outcome, Side, SliceRecord
from tests.conftest import T0, TF, accept, exec_config, make_signal, record_digest, step_all

MARKET = Path(__file__).resolve().parents[2] / "shared" / "data" / "market"
SYMS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def rough_bars(n: int, seed: int, symbol: str, *, holes: bool = False) -> list[Bar]:
    """A random walk whose bars often gap (the open far from the last close), often have wicks wide enough to
    touch a stop and a target at once, sometimes are flat or repeat the last bar's high and low (so that a
    level set at a bar's extreme is touched exactly), and (``holes``) leave out stretches of time."""
    rng = np.random.default_rng(seed)
    out: list[Bar] = []
    close = 100.0
    i = 0
    while len(out) < n:
        i += 1
        if holes and rng.random() < 0.03:
            i += int(rng.integers(1, 40))  # a hole: the time stop counts bars by time, not by bars seen
        jump = rng.normal(0.0, 0.02) if rng.random() < 0.15 else 0.0
        o = close * float(np.exp(jump))
        c = o * float(np.exp(rng.normal(0.0, 0.008)))
        wick = float(rng.uniform(0.0, 0.03)) if rng.random() < 0.3 else float(rng.uniform(0.0, 0.004))
        h, lo = max(o, c) * (1 + wick), min(o, c) * (1 - wick)
        if rng.random() < 0.03:
            o = h = lo = c = close  # flat
        elif out and rng.random() < 0.1:
            h, lo = out[-1].high, out[-1].low  # the same range again
            o, c = lo + (h - lo) * float(rng.uniform()), lo + (h - lo) * float(rng.uniform())
        out.append(Bar(symbol, T0 + (i - 1) * TF, T0 + i * TF, o, h, lo, c, 1.0))
        close = c
    return out


def series_of(bars: list[Bar]) -> ExitSeries:
    return ExitSeries(np.array([b.close_ms for b in bars], dtype=np.int64), np.array([b.open for b in bars]),
                         np.array([b.high for b in bars]), np.array([b.low for b in bars]))


# ------------------------------------------------------------------------------- the search itself


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_first_exit_is_the_first_bar_check_exit_hits(seed: int) -> None:
    rng = np.random.default_rng(seed)
    bars = rough_bars(600, seed, "BTC/USDT", holes=seed % 2 == 0)
    ser = series_of(bars)
    reasons: set[tuple[str, bool, bool]] = set()
    for _ in range(400):
        start = int(rng.integers(0, len(bars)))
        side = Side.LONG if rng.random() < 0.5 else Side.SHORT
        ref = bars[start].open
        stop = ref * (1 - side.sign * float(rng.uniform(0.0, 0.06)))
        target = ref * (1 + side.sign * float(rng.uniform(0.0, 0.1)))
        later = bars[min(len(bars) - 1, start + int(rng.integers(0, 60)))]
        if rng.random() < 0.3:  # exactly at a later bar's extreme or open: ties decide
            stop = later.low if side is Side.LONG else later.high
        if rng.random() < 0.3:
            target = later.high if side is Side.LONG else later.low
        if rng.random() < 0.1:
            stop = later.open
        max_held = int(rng.choice([0, 1, 5, 48, 10**9]))
        opened = bars[start].open_ms
        expected, hit = None, None
        for j in range(start, len(bars)):
            hit = check_exit(side, stop, target, bars[j], (bars[j].close_ms - opened) // TF, max_held, 0.0)
            if hit is not None:
                expected = j
                break
        assert first_exit(ser, start, side, stop, target, opened, max_held, TF) == expected
        if hit is not None:
            reasons.add((str(hit.reason), hit.ambiguous, hit.gap))
    # the data exercises every way out (end of data: expected None above)
    assert {("stop", False, True), ("target", False, True), ("stop", True, False), ("stop", False, False),
            ("target", False, False), ("time", False, False)} <= reasons


def test_first_exit_searches_past_its_first_chunks() -> None:
    """A trade that lasts longer than the first chunks (and one that never ends) is still found exactly."""
    bars = [Bar("X", T0 + i * TF, T0 + (i + 1) * TF, 100.0, 100.5, 99.5, 100.0, 1.0) for i in range(5000)]
    bars[3000] = dataclasses.replace(bars[3000], low=94.0)
    ser = series_of(bars)
    assert first_exit(ser, 10, Side.LONG, 95.0, 110.0, bars[10].open_ms, 10**9, TF) == 3000
    assert first_exit(ser, 3001, Side.LONG, 95.0, 110.0, bars[3001].open_ms, 10**9, TF) is None
    assert first_exit(ser, 3001, Side.LONG, 95.0, 110.0, bars[3001].open_ms, 1500, TF) == 3001 + 1499


# ----------------------------------------------------------------- executor and shadow book, slice by slice


def run_session(slices: list[tuple[Bar, ...]], cfg: ExecutionConfig, seed: int,
                series: dict[str, ExitSeries] | None) -> tuple[list, list, list[Outcome], list[Outcome]]:
    """Pipeline-like driving: exits/entries of each slice on the previous marks, then signals at random closes,
    executed and shadowed; at the end of data every open position and shadow is marked out."""
    rng = np.random.default_rng(seed)
    pf = Portfolio(TF)
    ex = PaperExecutor(cfg, pf, {}, TF)
    sh = ShadowBook(cfg, TF)
    if series is not None:
        ex.preload(series)
        sh.preload(series)
    fills = [ex.deposit(10_000.0, T0)]
    trades: list = []
    outcomes: list[Outcome] = []
    shadow_out: list[Outcome] = []
    marks: dict[str, float] = {}
    for n, bars in enumerate(slices):
        last = n >= len(slices) - 3  # signals that are still open, or not even entered, when the data ends
        rep = ExecutionReport()
        ex.on_bars(bars, marks, rep)
        sh.on_bars(bars, shadow_out)
        fills += rep.fills
        trades += rep.trades
        outcomes += rep.outcomes
        marks = {**marks, **{b.symbol: b.close for b in bars}}
        for b in bars:
            if rng.random() < 0.12 or last:
                side = Side.LONG if rng.random() < 0.5 else Side.SHORT
                stop = b.close * (1 - side.sign * float(rng.uniform(0.002, 0.03) + 0.3 * last))
                target = b.close * (1 + side.sign * float(rng.uniform(0.002, 0.05) + 0.3 * last))
                if rng.random() < 0.3 and not last:  # at the bar's extremes, which a later bar may touch exactly
                    stop, target = (b.low, b.high) if side is Side.LONG else (b.high, b.low)
                sig = make_signal(side, entry=b.close, stop=stop, target=target, symbol=b.symbol,
                                  created_ms=b.close_ms, sid=f"s{len(fills)}-{b.symbol}-{b.close_ms}",
                                  size_hint=float(rng.uniform(0.01, 0.1)))
                ex.submit(sig, accept(sig), pf.equity(marks), b.close_ms)
                sh.add(sig)
    rep = ExecutionReport()
    ex.close_all(marks, slices[-1][0].close_ms, rep)
    sh.close_all(marks, slices[-1][0].close_ms, shadow_out)
    return fills + rep.fills, trades + rep.trades, outcomes + rep.outcomes, shadow_out


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("max_held", [6, 10**9])
def test_scheduled_exits_fill_exactly_as_the_check_on_every_bar(seed: int, max_held: int) -> None:
    per_symbol = {s: rough_bars(700, seed * 10 + k, s, holes=k == 2) for k, s in enumerate(SYMS)}
    by_time: dict[int, list[Bar]] = {}
    for s in SYMS:
        for b in per_symbol[s]:
            by_time.setdefault(b.close_ms, []).append(b)
    slices = [tuple(by_time[t]) for t in sorted(by_time)]
    cfg = exec_config(max_bars_held=max_held)
    plain = run_session(slices, cfg, seed, None)
    scheduled = run_session(slices, cfg, seed, {s: series_of(b) for s, b in per_symbol.items()})
    assert scheduled == plain
    fills, trades, outcomes, shadow = plain
    assert len(trades) > 20
    assert fills_fingerprint(scheduled[0]) == fills_fingerprint(fills)
    reasons = {(o.exit_reason, o.ambiguous) for o in outcomes + shadow if o.filled}
    assert {("stop", False), ("stop", True), ("target", False), ("end", False)} <= reasons
    assert {(f.reason, f.gap) for f in fills if f.gap} == {("stop", True), ("target", True)}  # gaps through both
    assert any(not o.filled for o in outcomes)  # entries cancelled at a gap, or not filled by the end
    if max_held < 100:
        assert ("time", False) in reasons


def test_a_bar_that_differs_from_the_series_is_an_error_not_a_silent_miss() -> None:
    bars = [Bar("X", T0 + i * TF, T0 + (i + 1) * TF, 100.0, 100.5, 99.5, 100.0, 1.0) for i in range(50)]
    series = {"X": series_of([*bars[:30], dataclasses.replace(bars[30], low=90.0), *bars[31:]])}
    cfg = exec_config(max_bars_held=10**9, slippage_bps=0)
    pf = Portfolio(TF)
    ex = PaperExecutor(cfg, pf, {}, TF)
    ex.preload(series)
    ex.deposit(10_000.0, T0)
    sig = make_signal(Side.LONG, entry=100.0, stop=95.0, target=110.0, symbol="X", created_ms=bars[0].close_ms)
    ex.submit(sig, accept(sig), 10_000.0, bars[0].close_ms)
    with pytest.raises(RuntimeError, match=r"position .*: the exit scheduled at \d+ did not hit there"):
        for b in bars[1:]:
            ex.on_bars((b,), {"X": 100.0}, ExecutionReport())


# ---------------------------------------------------------------------------------------- whole replays


def _records(loaded, *, preload: bool, schedule: bool) -> list[SliceRecord]:  # type: ignore[no-untyped-def]
    feed = build_feed(loaded)
    pipe = build_pipeline(loaded, feed=feed, preload=False)
    if preload:
        pipe.preload(feed.arrays(), schedule_exits=schedule)
    return step_all(pipe, feed.slices(), loaded.config.execution.starting_equity)


@pytest.mark.parametrize("extra", [
    {"execution": {"max_bars_held": 6, "slippage_bps": 20}},
    {"market": {"type": "futures"}, "execution": {"account": "netting", "max_bars_held": 10**9},
     "strategies": [{"id": "sma", "kind": "sma_cross", "params": {"fast": 5, "slow": 20, "atr_stop": 0.5}}],
     "gates": [], "reviewer": {"mode": "off"}},
], ids=["short-time-stop", "netting-no-time-stop"])
def test_a_replay_with_scheduled_exits_records_what_the_check_on_every_bar_records(
        extra: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    over = {"run": {"db_url": "sqlite://"}, "market": {"synthetic": {"bars": 1500}}}
    for k, v in extra.items():
        over[k] = {**over.get(k, {}), **v} if isinstance(v, dict) else v
    loaded = load_config(overrides=over)
    checks = [0]

    def counted(*a):  # type: ignore[no-untyped-def]
        checks[0] += 1
        return check_exit(*a)

    monkeypatch.setattr(executor_module, "check_exit", counted)
    scheduled = _records(loaded, preload=True, schedule=True)
    scheduled_checks, checks[0] = checks[0], 0
    every_bar = _records(loaded, preload=True, schedule=False)
    exits = sum(1 for r in scheduled for o in r.outcomes if o.filled and o.exit_reason != "end")
    assert scheduled_checks == exits < checks[0]  # one check per exit (realized and shadow), no more
    plain = _records(loaded, preload=False, schedule=False)
    trades = [t for r in scheduled for t in r.trades]
    assert len(trades) > 20 and {str(t.exit_reason) for t in trades} >= {"stop", "target"}
    assert record_digest(scheduled) == record_digest(every_bar) == record_digest(plain)


def test_real_data_with_filled_gaps_schedules_the_same_exits() -> None:
    data = MARKET / "bittrex_20180110-20180130"
    if not data.is_dir():
        pytest.skip("shared market data not present")
    symbols = sorted({p.name.split("_")[1].replace("-", "/") for p in data.glob("*_5m.csv")})[:4]
    loaded = load_config(overrides={
        "run": {"db_url": "sqlite://"}, "news": {"source": "none"}, "gates": [], "reviewer": {"mode": "off"},
        "market": {"source": "files", "symbols": symbols, "timeframe": "5m", "files": {"dir": str(data)}},
        "execution": {"max_bars_held": 24}})
    scheduled = _records(loaded, preload=True, schedule=True)
    every_bar = _records(loaded, preload=True, schedule=False)
    assert sum(len(r.trades) for r in scheduled) > 50
    assert record_digest(scheduled) == record_digest(every_bar)
