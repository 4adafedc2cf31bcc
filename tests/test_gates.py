"""Rule gates: each passes with its note, blocks with its reason, and its lock expires on the SimClock;
building gates from config and running them in order."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from engine.clock import SimClock
from engine.config import GateConfig
from engine.core.executor import PaperExecutor
from engine.core.gates import (
    GATES,
    Cooldown,
    CorrelationCap,
    GateView,
    LossStreak,
    MaxDrawdown,
    MaxOpenPositions,
    MinVolume,
    build_gates,
    evaluate_gates,
)
from engine.core.market import MarketState
from engine.core.portfolio import EntryMeta, Portfolio
from engine.errors import ConfigError
from engine.types import ExitReason, Fill, FillKind, GateResult, Side, Signal
from tests.conftest import SYM, T0, TF, accept, bar_close_ms, deposit_fill, exec_config, flat_bar, make_signal


@dataclass
class World:
    clock: SimClock = field(default_factory=lambda: SimClock(T0))
    market: MarketState = field(default_factory=lambda: MarketState(TF))
    portfolio: Portfolio = field(default_factory=Portfolio)
    executor: PaperExecutor | None = None
    view: GateView | None = None
    n: int = 0

    def __post_init__(self) -> None:
        self.portfolio.apply(deposit_fill(10_000.0))
        self.executor = PaperExecutor(exec_config(), self.portfolio, {}, TF)
        self.view = GateView(self.clock, self.market, self.portfolio, self.executor, TF, 288)

    def open(self, strategy: str, symbol: str, side: Side = Side.LONG, price: float = 100.0, qty: float = 1.0,
             at_ms: int = T0) -> str:
        self.n += 1
        sid = f"{strategy}:{symbol}:{self.n}"
        self.portfolio.apply(Fill(f"{sid}:entry", sid, symbol, side, FillKind.ENTRY, at_ms, price, price, qty, 0.0,
                                  "next_open"), EntryMeta(strategy, price * 0.9, price * 1.2))
        return sid

    def close(self, sid: str, price: float, at_ms: int, reason: ExitReason = ExitReason.STOP) -> None:
        pos = self.portfolio.positions[sid]
        self.portfolio.apply(Fill(f"{sid}:exit", sid, pos.symbol, pos.side, FillKind.EXIT, at_ms, price, price,
                                  pos.qty, 0.0, str(reason)))

    def trade(self, strategy: str, symbol: str, pnl: float, closed_ms: int,
              reason: ExitReason = ExitReason.STOP) -> None:
        sid = self.open(strategy, symbol, price=100.0, qty=10.0, at_ms=closed_ms - TF)
        self.close(sid, 100.0 + pnl / 10.0, closed_ms, reason)


def signal(strategy: str = "s1", symbol: str = SYM, side: Side = Side.LONG) -> Signal:
    return make_signal(side, strategy_id=strategy, symbol=symbol, sid=f"new:{strategy}:{symbol}")


# ------------------------------------------------------------------------------------------- volume


def feed_volume(w: World, bars: int, volume: float, close: float) -> None:
    for i in range(bars):
        w.market.append(flat_bar(i, close, volume=volume))


def test_min_volume_pass_and_block() -> None:
    w = World()
    feed_volume(w, 288, volume=10.0, close=500.0)  # 288 × 5 000 = 1.44M over exactly one day
    ok = MinVolume({"min_quote_volume_24h": 1_000_000}).evaluate(signal(), w.view)
    assert ok == GateResult("min_volume", True, "24h quote volume 1.4M USDT ≥ 1.0M USDT")
    no = MinVolume({"min_quote_volume_24h": 2_000_000}).evaluate(signal(), w.view)
    assert no == GateResult("min_volume", False, "24h quote volume 1.4M USDT < 2.0M USDT")


def test_min_volume_pro_rates_a_short_history() -> None:
    w = World()
    feed_volume(w, 144, volume=10.0, close=500.0)  # half a day: 720k, i.e. 1.44M a day
    r = MinVolume({"min_quote_volume_24h": 1_000_000}).evaluate(signal(), w.view)
    assert r == GateResult("min_volume", True, "24h quote volume 1.4M USDT ≥ 1.0M USDT (pro-rated from 12.0h)")


def test_min_volume_counts_only_the_last_day() -> None:
    w = World()
    for i in range(288):
        w.market.append(flat_bar(i, 100.0, volume=1_000.0))  # 28.8M ...
    for i in range(288, 576):
        w.market.append(flat_bar(i, 100.0, volume=10.0))  # ... then a quiet day: 288k
    r = MinVolume({"min_quote_volume_24h": 1_000_000}).evaluate(signal(), w.view)
    assert r == GateResult("min_volume", False, "24h quote volume 288.0k USDT < 1.0M USDT")


# ---------------------------------------------------------------------------------------- positions


def test_max_open_positions_counts_open_pending_and_reserved() -> None:
    w = World()
    gate = MaxOpenPositions({"max_total": 4, "max_per_strategy": 2, "max_per_symbol": 1})
    name = "max_open_positions"
    assert gate.evaluate(signal(), w.view) == GateResult(name, True, "0/4 slots used")

    w.open("s1", SYM)
    assert gate.evaluate(signal("s1", SYM), w.view) == GateResult(name, False, "s1 already holds BTC/USDT")
    assert gate.evaluate(signal("s2", SYM), w.view).passed  # another strategy may hold it too
    assert gate.evaluate(signal("s1", "ETH/USDT"), w.view) == GateResult(name, True, "1/4 slots used")

    pending = signal("s2", "ETH/USDT")
    w.executor.submit(pending, accept(pending), 10_000.0, bar_close_ms(0))  # queued for the next open
    assert gate.evaluate(signal("s2", "ETH/USDT"), w.view) == GateResult(name, False, "s2 already holds ETH/USDT")
    assert gate.evaluate(signal("s3", "ETH/USDT"), w.view) == GateResult(name, True, "2/4 slots used")

    w.view.reserved.append(signal("s1", "SOL/USDT"))  # passed earlier in this very slice
    assert gate.evaluate(signal("s1", "ADA/USDT"), w.view) == GateResult(name, False, "2/2 slots of s1 used")
    assert gate.evaluate(signal("s3", "ADA/USDT"), w.view) == GateResult(name, True, "3/4 slots used")
    w.view.reserved.append(signal("s3", "XRP/USDT"))
    assert gate.evaluate(signal("s4", "ADA/USDT"), w.view) == GateResult(name, False, "4/4 slots used")
    w.view.reserved.clear()
    assert gate.evaluate(signal("s4", "ADA/USDT"), w.view) == GateResult(name, True, "2/4 slots used")


# ----------------------------------------------------------------------------------------- cooldown


def test_cooldown_blocks_until_its_lock_expires() -> None:
    w = World()
    exit_ms = bar_close_ms(10)
    w.trade("s1", SYM, -5.0, exit_ms, ExitReason.TARGET)
    gate = Cooldown({"bars": 6})
    w.clock.advance_to(exit_ms + 2 * TF)
    r = gate.evaluate(signal(), w.view)
    assert r == GateResult("cooldown", False, "cooldown: 4 more bar(s) after the last BTC/USDT trade",
                           exit_ms + 6 * TF)
    assert gate.evaluate(signal("s2"), w.view) == GateResult("cooldown", True, "no cooldown")
    assert gate.evaluate(signal("s1", "ETH/USDT"), w.view).passed
    w.clock.advance_to(r.until_ms - 1)
    assert not gate.evaluate(signal(), w.view).passed
    w.clock.advance_to(r.until_ms)
    assert gate.evaluate(signal(), w.view) == GateResult("cooldown", True, "no cooldown")


def _vetoed(w: World, strategy: str, symbol: str, i: int) -> int:
    """A veto that skipped the signal of ``strategy`` on ``symbol`` at bar ``i``'s close; returns that time."""
    at = bar_close_ms(i)
    w.view.note_veto(make_signal(strategy_id=strategy, symbol=symbol, created_ms=at))
    return at


def test_a_veto_cools_its_setup_down_for_the_next_n_bars_only() -> None:
    w = World()
    at = _vetoed(w, "s1", SYM, 10)
    gate = Cooldown({"bars": 6, "after_veto_bars": 4})
    sid = f"s1:{SYM}:{at}"
    for k in range(1, 5):  # the next 4 bar closes are held
        w.clock.advance_to(at + k * TF)
        r = gate.evaluate(signal(), w.view)
        assert r == GateResult("cooldown", False, f"cooldown: {5 - k} more bar(s) after the veto of {sid}",
                               at + 5 * TF), k
    w.clock.advance_to(at + 5 * TF)  # the 5th bar after the veto: free again
    assert gate.evaluate(signal(), w.view) == GateResult("cooldown", True, "no cooldown")


def test_a_veto_holds_only_its_own_strategy_and_symbol() -> None:
    w = World()
    at = _vetoed(w, "s1", SYM, 10)
    gate = Cooldown({"bars": 6, "after_veto_bars": 48})
    w.clock.advance_to(at + TF)
    assert not gate.evaluate(signal("s1", SYM), w.view).passed
    assert gate.evaluate(signal("s2", SYM), w.view) == GateResult("cooldown", True, "no cooldown")
    assert gate.evaluate(signal("s1", "ETH/USDT"), w.view) == GateResult("cooldown", True, "no cooldown")


def test_vetoes_hold_nothing_by_default() -> None:
    w = World()
    at = _vetoed(w, "s1", SYM, 10)
    w.clock.advance_to(at + TF)
    assert Cooldown().params.after_veto_bars == 0
    assert Cooldown({"bars": 6}).evaluate(signal(), w.view) == GateResult("cooldown", True, "no cooldown")


def test_trade_and_veto_cooldowns_the_later_one_decides() -> None:
    w = World()
    exit_ms = bar_close_ms(10)
    w.trade("s1", SYM, -5.0, exit_ms, ExitReason.TARGET)
    gate = Cooldown({"bars": 6, "after_veto_bars": 2})
    _vetoed(w, "s1", SYM, 11)  # held until bar 14's close; the trade until bar 16's
    w.clock.advance_to(bar_close_ms(12))
    assert gate.evaluate(signal(), w.view) == GateResult(
        "cooldown", False, "cooldown: 4 more bar(s) after the last BTC/USDT trade", exit_ms + 6 * TF)
    at = _vetoed(w, "s1", SYM, 14)  # a later veto outlasts the trade's cooldown
    w.clock.advance_to(bar_close_ms(16))
    assert gate.evaluate(signal(), w.view) == GateResult(
        "cooldown", False, f"cooldown: 1 more bar(s) after the veto of s1:{SYM}:{at}", at + 3 * TF)
    w.clock.advance_to(at + 3 * TF)
    assert gate.evaluate(signal(), w.view).passed


# -------------------------------------------------------------------------------------- loss streak


def test_loss_streak_locks_after_n_stopouts_and_unlocks() -> None:
    w = World()
    gate = LossStreak({"stopouts": 3, "window_bars": 10, "lock_bars": 5})
    times = [bar_close_ms(i) for i in (20, 24, 28)]
    w.trade("s1", SYM, -10.0, times[0])
    w.trade("s1", SYM, -10.0, times[1])
    w.trade("s1", SYM, 30.0, bar_close_ms(26), ExitReason.TARGET)  # a win is not a stop-out
    w.clock.advance_to(times[1])
    assert gate.evaluate(signal(), w.view) == GateResult("loss_streak", True, "2 recent stop-out(s)")
    w.trade("s1", SYM, -10.0, times[2])
    w.clock.advance_to(times[2] + TF)
    r = gate.evaluate(signal(), w.view)
    assert r == GateResult("loss_streak", False, "3 stop-outs of s1 on BTC/USDT within 10 bars: locked",
                           times[2] + 5 * TF)
    assert gate.evaluate(signal("s2"), w.view).passed
    assert gate.evaluate(signal("s1", "ETH/USDT"), w.view) == GateResult("loss_streak", True, "0 recent stop-outs")
    w.clock.advance_to(r.until_ms)
    after = gate.evaluate(signal(), w.view)
    assert after.passed


def test_loss_streak_ignores_stopouts_spread_wider_than_the_window() -> None:
    w = World()
    gate = LossStreak({"stopouts": 3, "window_bars": 10, "lock_bars": 5})
    for i in (0, 11, 22):
        w.trade("s1", SYM, -10.0, bar_close_ms(i))
    w.clock.advance_to(bar_close_ms(23))
    r = gate.evaluate(signal(), w.view)
    assert r.passed and r.reason == "1 recent stop-out(s)"


def test_loss_streak_counts_as_a_scan_of_every_stop_out_would() -> None:
    """The gate counts stop-outs by binary search in the (ascending) stop-out times: the same counts, and so
    the same results, as testing every time, with repeated times and a full 64-entry history."""
    import random

    rng = random.Random(3)
    gate = LossStreak({"stopouts": 3, "window_bars": 12, "lock_bars": 6})
    for _ in range(300):
        w = World()
        times = sorted(bar_close_ms(rng.randrange(200)) for _ in range(rng.randrange(1, 90)))
        w.portfolio.stopouts[("s1", SYM)].extend(times)
        stops = list(w.portfolio.stopouts[("s1", SYM)])  # the last 64
        now = max(times[-1], bar_close_ms(rng.randrange(220)))
        w.clock.advance_to(now)
        last, window = stops[-1], 12 * TF
        n = sum(1 for t in stops if t > last - window)
        recent = sum(1 for t in stops if t > now - window)
        if n >= 3 and now < last + 6 * TF:
            want = GateResult("loss_streak", False, f"{n} stop-outs of s1 on {SYM} within 12 bars: locked",
                              last + 6 * TF)
        else:
            want = GateResult("loss_streak", True, f"{recent} recent stop-out(s)")
        assert gate.evaluate(signal(), w.view) == want


# ----------------------------------------------------------------------------------------- drawdown


def test_max_drawdown_from_the_realized_peak() -> None:
    w = World()
    gate = MaxDrawdown({"max_drawdown_pct": 15})
    assert gate.evaluate(signal(), w.view) == GateResult("max_drawdown", True, "drawdown 0.0% < 15%")
    w.trade("s1", SYM, 1_000.0, bar_close_ms(1), ExitReason.TARGET)  # peak 11 000
    w.trade("s1", SYM, -1_000.0, bar_close_ms(2))  # 10 000: 9.09 % below the peak
    assert gate.evaluate(signal(), w.view) == GateResult("max_drawdown", True, "drawdown 9.1% < 15%")
    w.trade("s2", "ETH/USDT", -1_000.0, bar_close_ms(3))  # 9 000: 18.18 %
    r = gate.evaluate(signal(), w.view)
    assert r == GateResult("max_drawdown", False, "drawdown 18.2% ≥ 15%")
    w.trade("s2", "ETH/USDT", 1_000.0, bar_close_ms(4), ExitReason.TARGET)  # back to 10 000
    assert gate.evaluate(signal(), w.view).passed


def test_max_drawdown_ignores_open_losses() -> None:
    w = World()
    w.open("s1", SYM, price=100.0, qty=50.0)
    w.market.append(flat_bar(0, 10.0))  # marked 90 % down, but not realized
    assert MaxDrawdown({"max_drawdown_pct": 15}).evaluate(signal("s2"), w.view).passed


# -------------------------------------------------------------------------------------- correlation


def correlated_market(n: int = 300, seed: int = 1) -> tuple[MarketState, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    common = rng.normal(0, 0.01, n)
    rets = {
        "A/USDT": common + rng.normal(0, 0.002, n),
        "B/USDT": common + rng.normal(0, 0.002, n),
        "C/USDT": common + rng.normal(0, 0.002, n),
        "D/USDT": -common + rng.normal(0, 0.002, n),  # moves against A
        "E/USDT": rng.normal(0, 0.01, n),  # unrelated
    }
    m = MarketState(TF)
    closes = {s: 100 * np.exp(np.cumsum(r)) for s, r in rets.items()}
    for i in range(n):
        for s, c in closes.items():
            m.append(flat_bar(i, float(c[i]), symbol=s))
    return m, closes


def ref_corr(closes: dict[str, np.ndarray], a: str, b: str, lookback: int) -> float:
    ra, rb = np.diff(np.log(closes[a]))[-lookback:], np.diff(np.log(closes[b]))[-lookback:]
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.mark.parametrize(
    ("positions", "side", "max_correlated"),
    [
        ([("B/USDT", Side.LONG), ("C/USDT", Side.LONG)], Side.LONG, 2),
        ([("B/USDT", Side.LONG), ("C/USDT", Side.LONG)], Side.SHORT, 2),
        ([("B/USDT", Side.LONG), ("D/USDT", Side.SHORT)], Side.LONG, 2),
        ([("B/USDT", Side.LONG), ("D/USDT", Side.LONG)], Side.LONG, 2),
        ([("B/USDT", Side.LONG), ("C/USDT", Side.LONG)], Side.LONG, 3),
        ([("E/USDT", Side.LONG), ("B/USDT", Side.SHORT), ("C/USDT", Side.SHORT)], Side.SHORT, 2),
    ],
)
def test_correlation_cap(positions: list[tuple[str, Side]], side: Side, max_correlated: int) -> None:
    m, closes = correlated_market()
    w = World(market=m)
    for i, (sym, s) in enumerate(positions):
        w.open(f"st{i}", sym, s)
    gate = CorrelationCap({"min_corr": 0.8, "max_correlated": max_correlated})
    # independent count: |corr| ≥ 0.8 and the same bet (same side & positive corr, or opposite & negative)
    n = 0
    for sym, s in positions:
        c = ref_corr(closes, "A/USDT", sym, 288)
        if abs(c) >= 0.8 and ((s is side) == (c > 0)):
            n += 1
    assert abs(ref_corr(closes, "A/USDT", "E/USDT", 288)) < 0.5  # the scenario is what it claims
    assert min(ref_corr(closes, "A/USDT", s, 288) for s in ("B/USDT", "C/USDT")) > 0.9
    r = gate.evaluate(signal("new", "A/USDT", side), w.view)
    if n >= max_correlated:
        assert r == GateResult("correlation_cap", False,
                               f"{n} open position(s) correlated ≥ 0.8 in the same direction")
    else:
        assert r == GateResult("correlation_cap", True, f"{n} correlated same-direction position(s)")


def test_correlation_cap_blocks_the_designed_case() -> None:
    m, _ = correlated_market()
    w = World(market=m)
    w.open("x", "B/USDT")
    w.open("y", "D/USDT", Side.SHORT)
    r = CorrelationCap({"min_corr": 0.8, "max_correlated": 2}).evaluate(signal("new", "A/USDT"), w.view)
    assert not r.passed and r.reason.startswith("2 open position(s)")


# ------------------------------------------------------------------------------------------ building


def test_build_gates_from_the_default_config(default_config) -> None:  # type: ignore[no-untyped-def]
    gates = build_gates(default_config.gates)
    assert [g.name for g in gates] == [g.kind for g in default_config.gates]
    cd = next(g for g in gates if g.name == "cooldown")
    assert cd.params.bars == 6  # type: ignore[attr-defined]


def test_unknown_gate_kind_lists_known_kinds_and_the_closest() -> None:
    with pytest.raises(ConfigError) as ei:
        build_gates([GateConfig(kind="cooldown"), GateConfig(kind="min_volum")])
    known = ", ".join(sorted(GATES))
    assert str(ei.value) == f"gates[1].kind: unknown gate kind 'min_volum' (known: {known}); did you mean 'min_volume'?"
    assert known == "cooldown, correlation_cap, loss_streak, max_drawdown, max_open_positions, min_volume"


def test_unknown_gate_kind_without_a_close_match() -> None:
    with pytest.raises(ConfigError) as ei:
        build_gates([GateConfig(kind="zzz")])
    assert "did you mean" not in str(ei.value) and str(ei.value).startswith("gates[0].kind: unknown gate kind 'zzz'")


@pytest.mark.parametrize(
    ("kind", "params", "prefix", "got"),
    [
        ("cooldown", {"bars": 0}, "gates[1].params.bars: ", "(got 0)"),
        ("cooldown", {"after_veto_bars": -1}, "gates[1].params.after_veto_bars: ", "(got -1)"),
        ("cooldown", {"after_veto_bar": 48}, "gates[1].params.after_veto_bar: ", "did you mean 'after_veto_bars'?"),
        ("min_volume", {"min_quote_volume_24h": -1}, "gates[1].params.min_quote_volume_24h: ", "(got -1)"),
        ("max_drawdown", {"max_drawdown_pct": 150}, "gates[1].params.max_drawdown_pct: ", "(got 150)"),
        ("loss_streak", {"stopouts": "many"}, "gates[1].params.stopouts: ", "(got 'many')"),
        ("correlation_cap", {"min_cor": 0.5}, "gates[1].params.min_cor: ", "did you mean 'min_corr'?"),
    ],
)
def test_bad_gate_params_name_the_path(kind: str, params: dict, prefix: str, got: str) -> None:
    with pytest.raises(ConfigError) as ei:
        build_gates([GateConfig(kind="cooldown"), GateConfig(kind=kind, params=params)])
    msg = str(ei.value)
    assert msg.startswith(prefix) and msg.endswith(got)


class AlwaysPass:
    """A user gate loaded by "module:Class"."""

    def __init__(self, note: str = "fine") -> None:
        self.note = note

    def evaluate(self, signal: Signal, view: GateView) -> GateResult:
        return GateResult("always", True, self.note)


def test_user_gate_by_module_and_class() -> None:
    (g,) = build_gates([GateConfig(kind="tests.test_gates:AlwaysPass", params={"note": "ok"})])
    assert isinstance(g, AlwaysPass) and g.note == "ok"
    assert g.name == "tests.test_gates:AlwaysPass"


def test_user_gate_that_cannot_be_imported() -> None:
    with pytest.raises(ConfigError, match=r"^gates\[0\]\.kind: cannot import module 'no_such_mod_xyz'"):
        build_gates([GateConfig(kind="no_such_mod_xyz:Gate")])
    with pytest.raises(ConfigError, match=r"^gates\[0\]\.kind: module 'tests.test_gates' has no 'Nope'"):
        build_gates([GateConfig(kind="tests.test_gates:Nope")])


# ---------------------------------------------------------------------------------------- evaluation


class Scripted:
    def __init__(self, name: str, passed: bool, reason: str) -> None:
        self.name, self.passed, self.reason = name, passed, reason
        self.calls = 0

    def evaluate(self, signal: Signal, view: GateView) -> GateResult:
        self.calls += 1
        return GateResult(self.name, self.passed, self.reason, None if self.passed else 123)


def test_evaluate_gates_stops_at_the_first_block() -> None:
    w = World()
    a, b, c = Scripted("a", True, "a ok"), Scripted("b", False, "b says no"), Scripted("c", True, "c ok")
    results, note = evaluate_gates([a, b, c], signal(), w.view)
    assert note is None
    assert [r.gate for r in results] == ["a", "b"] and results[1].reason == "b says no"
    assert (a.calls, b.calls, c.calls) == (1, 1, 0)


def test_evaluate_gates_joins_notes() -> None:
    w = World()
    gates = [Scripted("a", True, "a ok"), Scripted("quiet", True, ""), Scripted("c", True, "c ok")]
    results, note = evaluate_gates(gates, signal(), w.view)
    assert note == "a ok; c ok" and len(results) == 3
    assert evaluate_gates([], signal(), w.view) == ([], "no gates")


def test_real_gates_make_the_documented_note() -> None:
    w = World()
    feed_volume(w, 288, volume=10.0, close=500.0)
    w.open("s9", "ETH/USDT")
    w.clock.advance_to(bar_close_ms(300))
    gates = build_gates([GateConfig(kind="min_volume"), GateConfig(kind="max_open_positions"),
                         GateConfig(kind="cooldown")])
    results, note = evaluate_gates(gates, signal(), w.view)
    assert all(r.passed for r in results)
    assert note == "24h quote volume 1.4M USDT ≥ 1.0M USDT; 1/5 slots used; no cooldown"


def test_money_format_boundaries() -> None:
    w = World()
    feed_volume(w, 288, volume=1.0, close=1.0)  # 288
    r = MinVolume({"min_quote_volume_24h": 999}).evaluate(signal(), w.view)
    assert r.reason == "24h quote volume 288 USDT < 999 USDT"
    assert math.isclose(w.market.history(SYM).quote_volume_24h(), 288.0)


def test_the_min_volume_median_is_numpys_bit_for_bit() -> None:
    import numpy as np

    from engine.core.gates import _median

    rng = np.random.default_rng(2)
    for n in range(1, 40):
        xs = (rng.lognormal(3, 2, n) * rng.choice([1.0, 1e-9, 1e9])).tolist()
        assert _median(sorted(xs)) == float(np.median(xs))
