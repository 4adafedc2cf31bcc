"""Paper executor + portfolio + shadow book: entries at the next open, fees, exits, minimums, no leverage,
shorts, the wallet rebuilt from the ledger, shadow parity, end-of-run mark-out."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from engine.config import ExecutionConfig
from engine.core.executor import ExecutionReport, PaperExecutor, ShadowBook
from engine.core.portfolio import EntryMeta, Portfolio
from engine.types import (
    Action,
    Bar,
    Decision,
    ExitReason,
    Fill,
    FillKind,
    MarketLimits,
    Outcome,
    OutcomeKind,
    Side,
    Signal,
)
from tests.conftest import T0, TF, accept, bar_close_ms, exec_config, make_bar, make_signal, random_bars

FEE = 10 / 10_000
SLIP = 5 / 10_000


class Rig:
    """Executor + portfolio fed like the pipeline feeds them (marks are the previous closes)."""

    def __init__(self, cfg: ExecutionConfig | None = None, limits: dict[str, MarketLimits] | None = None,
                 equity: float = 10_000.0) -> None:
        self.cfg = cfg or exec_config()
        self.pf = Portfolio(TF)
        self.ex = PaperExecutor(self.cfg, self.pf, limits or {}, TF)
        self.fills: list[Fill] = [self.ex.deposit(equity, T0)]
        self.metas: dict[str, EntryMeta] = {}
        self.marks: dict[str, float] = {}
        self.outcomes: list[Outcome] = []

    def submit(self, sig: Signal, dec: Decision | None = None, equity: float | None = None) -> None:
        dec = dec or accept(sig)
        eq = self.pf.equity(self.marks) if equity is None else equity
        self.ex.submit(sig, dec, eq, sig.created_ms)
        self.metas[sig.id] = EntryMeta(sig.strategy_id, dec.stop_loss, dec.take_profit)

    def bar(self, b: Bar) -> ExecutionReport:
        out = ExecutionReport()
        self.ex.on_bar(b, self.marks, out)
        self.marks[b.symbol] = b.close
        self.fills += out.fills
        self.outcomes += out.outcomes
        return out


def entry_bar(open_: float = 100.5) -> Bar:
    return make_bar(1, open_, max(open_, 101.0), min(open_, 100.0), 100.8)


def _pending(rig: Rig) -> int:
    return sum(map(len, rig.ex.pending.values()))


# ------------------------------------------------------------------------------------------ entries


def test_entry_fills_at_the_next_open_with_adverse_slippage_and_fee() -> None:
    rig = Rig()
    sig = make_signal(entry=100.0, stop=95.0, target=110.0, size_hint=0.1)
    rig.submit(sig, equity=10_000.0)
    assert _pending(rig) == 1 and rig.pf.positions == {}
    out = rig.bar(entry_bar(100.5))
    (fill,) = out.fills
    price = 100.5 * (1 + SLIP)
    assert fill.kind is FillKind.ENTRY and fill.side is Side.LONG
    assert fill.filled_ms == entry_bar().open_ms
    assert fill.requested_price == 100.5 and fill.fill_price == pytest.approx(price)
    assert fill.qty == pytest.approx(1000.0 / price)  # 10 000 × 0.1 × 100 %
    assert fill.fee == pytest.approx(1000.0 * FEE)
    assert fill.reason == "next_open"
    assert rig.pf.cash == pytest.approx(10_000 - 1000 - 1.0)
    pos = rig.pf.positions[sig.id]
    assert (pos.stop_loss, pos.take_profit, pos.initial_stop, pos.strategy_id) == (95.0, 110.0, 95.0, "s1")
    assert _pending(rig) == 0
    # equity at a mark = cash + position value: only the fee and the slippage were lost
    assert rig.pf.equity({sig.symbol: 100.8}) == pytest.approx(10_000 - 1.0 + fill.qty * (100.8 - price))


def test_size_pct_scales_the_notional() -> None:
    rig = Rig()
    sig = make_signal()
    rig.submit(sig, accept(sig, size_pct=40.0), equity=10_000.0)
    (fill,) = rig.bar(entry_bar()).fills
    assert fill.qty * fill.fill_price == pytest.approx(10_000 * 0.1 * 0.4)


def test_pending_entry_waits_for_its_own_symbol() -> None:
    rig = Rig()
    sig = make_signal(symbol="ETH/USDT")
    rig.submit(sig)
    assert rig.bar(entry_bar()).fills == []  # a BTC bar
    assert _pending(rig) == 1
    out = rig.bar(make_bar(1, 100.5, 101, 100, 100.8, symbol="ETH/USDT"))
    assert len(out.fills) == 1 and out.fills[0].symbol == "ETH/USDT"


@pytest.mark.parametrize(("open_", "what"), [(94.0, "stop 95"), (95.0, "stop 95"), (111.0, "target 110")])
def test_entry_cancelled_when_the_open_is_beyond_stop_or_target(open_: float, what: str) -> None:
    rig = Rig()
    sig = make_signal(entry=100.0, stop=95.0, target=110.0)
    rig.submit(sig)
    out = rig.bar(make_bar(1, open_, open_ + 1, open_ - 1, open_))
    assert out.fills == [] and rig.pf.positions == {} and _pending(rig) == 0
    (o,) = out.outcomes
    assert (o.signal_id, o.kind, o.filled) == (sig.id, OutcomeKind.REALIZED, False)
    assert o.note == f"entry cancelled: open {open_:g} gapped through the {what}"
    assert rig.pf.cash == 10_000.0


def test_exchange_minimum_notional() -> None:
    rig = Rig(limits={"BTC/USDT": MarketLimits("BTC/USDT", min_notional=2000.0)})
    sig = make_signal(size_hint=0.1)  # 1000 notional
    rig.submit(sig, equity=10_000.0)
    out = rig.bar(entry_bar())
    assert out.fills == []
    (o,) = out.outcomes
    assert not o.filled and o.note.startswith("below exchange minimum notional 2000 (got 1000")


def test_exchange_minimum_quantity() -> None:
    rig = Rig(limits={"BTC/USDT": MarketLimits("BTC/USDT", min_qty=20.0)})
    sig = make_signal(size_hint=0.1)  # ~9.95 units
    rig.submit(sig, equity=10_000.0)
    out = rig.bar(entry_bar())
    assert out.fills == [] and out.outcomes[0].note.startswith("below exchange minimum quantity 20")


def test_quantity_step_rounds_down() -> None:
    step = 0.25
    rig = Rig(limits={"BTC/USDT": MarketLimits("BTC/USDT", qty_step=step)})
    sig = make_signal(size_hint=0.1)
    rig.submit(sig, equity=10_000.0)
    (fill,) = rig.bar(entry_bar()).fills
    raw = 1000.0 / (100.5 * (1 + SLIP))
    assert fill.qty == pytest.approx(math.floor(raw / step) * step)
    assert fill.qty <= raw and raw - fill.qty < step
    assert (fill.qty / step) == pytest.approx(round(fill.qty / step))


def test_no_leverage_size_reduced_to_buying_power() -> None:
    rig = Rig()
    first = make_signal(size_hint=0.6, sid="first")
    rig.submit(first, equity=10_000.0)
    rig.bar(entry_bar())
    second = make_signal(size_hint=0.9, sid="second", created_ms=bar_close_ms(1))
    rig.submit(second, equity=10_000.0)
    out = rig.bar(make_bar(2, 100.8, 101.5, 100.2, 101.0))
    (fill,) = out.fills
    assert "size reduced to available buying power" in fill.reason
    marks = {"BTC/USDT": 100.8}  # what the executor saw: the previous close
    committed = rig.pf.positions["first"].qty * 100.8 + fill.qty * fill.fill_price + fill.fee
    equity_before = 10_000 - rig.fills[1].fee + rig.pf.positions["first"].qty * (100.8 - rig.fills[1].fill_price)
    assert committed <= equity_before + 1e-6
    assert committed == pytest.approx(equity_before, rel=1e-9)  # uses all of it, not less
    assert rig.pf.cash >= -1e-6  # a long-only book never borrows cash
    assert rig.pf.gross_exposure(marks) <= rig.pf.equity(marks) * (1 + 1e-9) + 1e-6


def test_whole_equity_signal_never_borrows() -> None:
    rig = Rig()
    sig = make_signal(size_hint=1.0)
    rig.submit(sig, equity=10_000.0)
    (fill,) = rig.bar(entry_bar()).fills
    assert fill.qty * fill.fill_price + fill.fee <= 10_000.0 + 1e-6
    assert rig.pf.cash >= -1e-6


# -------------------------------------------------------------------------------------------- exits


def open_long(rig: Rig, **kw) -> tuple[Signal, Fill]:  # type: ignore[no-untyped-def]
    sig = make_signal(entry=100.0, stop=95.0, target=110.0, **kw)
    rig.submit(sig, equity=10_000.0)
    (fill,) = rig.bar(entry_bar()).fills
    return sig, fill


def expected_trade(entry: Fill, exit_price: float, side: Side, initial_stop: float) -> tuple[float, float, float]:
    fees = entry.fee + entry.qty * exit_price * FEE
    pnl = side.sign * (exit_price - entry.fill_price) * entry.qty - fees
    return pnl, pnl / (entry.fill_price * entry.qty) * 100, pnl / (abs(entry.fill_price - initial_stop) * entry.qty)


@pytest.mark.parametrize(
    ("bar", "reason", "exit_price", "ambiguous", "gap"),
    [
        ((99, 99.5, 94, 96), ExitReason.STOP, 95 * (1 - SLIP), False, False),
        ((101, 110.5, 100, 109), ExitReason.TARGET, 110.0, False, False),
        ((100, 111, 94, 105), ExitReason.STOP, 95 * (1 - SLIP), True, False),
        ((90, 92, 89, 91), ExitReason.STOP, 90 * (1 - SLIP), False, True),
        ((112, 113, 111, 112), ExitReason.TARGET, 112.0, False, True),
    ],
    ids=["stop", "target", "both-touched", "gap-stop", "gap-target"],
)
def test_long_exit_books_the_trade(bar, reason, exit_price, ambiguous, gap) -> None:  # type: ignore[no-untyped-def]
    rig = Rig()
    sig, entry = open_long(rig)
    b = make_bar(2, *bar)
    out = rig.bar(b)
    (fill,) = out.fills
    (trade,) = out.trades
    (outcome,) = out.outcomes
    assert fill.kind is FillKind.EXIT and fill.reason == str(reason)
    assert fill.fill_price == pytest.approx(exit_price) and fill.filled_ms == b.close_ms
    assert (fill.ambiguous, fill.gap) == (ambiguous, gap)
    pnl, pnl_pct, r = expected_trade(entry, exit_price, Side.LONG, 95.0)
    assert trade.pnl == pytest.approx(pnl) and trade.pnl_pct == pytest.approx(pnl_pct)
    assert trade.r_multiple == pytest.approx(r)
    assert trade.exit_reason is reason and trade.ambiguous == ambiguous
    assert trade.bars_held == 2 and trade.opened_ms == entry.filled_ms and trade.closed_ms == b.close_ms
    assert (outcome.kind, outcome.filled, outcome.exit_reason, outcome.ambiguous) == (
        OutcomeKind.REALIZED, True, str(reason), ambiguous)
    assert outcome.pnl_pct == pytest.approx(pnl_pct)
    assert rig.pf.positions == {}
    assert rig.pf.cash == pytest.approx(10_000 + pnl)
    assert rig.pf.realized_equity == pytest.approx(10_000 + pnl)
    assert rig.pf.last_exit_ms[("s1", sig.symbol)] == b.close_ms
    assert list(rig.pf.stopouts.get(("s1", sig.symbol), [])) == ([b.close_ms] if reason is ExitReason.STOP else [])


def test_stop_can_hit_on_the_entry_bar() -> None:
    rig = Rig()
    sig = make_signal(entry=100.0, stop=95.0, target=110.0)
    rig.submit(sig)
    out = rig.bar(make_bar(1, 100.5, 101, 94, 95.5))
    assert [f.kind for f in out.fills] == [FillKind.ENTRY, FillKind.EXIT]
    assert out.trades[0].exit_reason is ExitReason.STOP and out.trades[0].bars_held == 1


def test_time_stop_at_max_bars_held_at_the_close() -> None:
    rig = Rig(exec_config(max_bars_held=3))
    _, entry = open_long(rig)  # the entry bar is bar 1 of 3
    assert rig.bar(make_bar(2, 100.8, 101, 100, 100.6)).fills == []
    b3 = make_bar(3, 100.6, 101, 100.1, 100.9)
    out = rig.bar(b3)
    (trade,) = out.trades
    assert trade.exit_reason is ExitReason.TIME and trade.bars_held == 3
    assert out.fills[0].requested_price == 100.9
    assert trade.exit_price == pytest.approx(100.9 * (1 - SLIP))
    assert trade.closed_ms == b3.close_ms and trade.entry_price == entry.fill_price


def test_short_mirrors_long() -> None:
    rig = Rig()
    sig = make_signal(Side.SHORT, entry=100.0, stop=105.0, target=90.0)
    rig.submit(sig, equity=10_000.0)
    (entry,) = rig.bar(entry_bar(99.5)).fills
    assert entry.side is Side.SHORT and entry.fill_price == pytest.approx(99.5 * (1 - SLIP))  # selling: lower
    assert rig.pf.cash == pytest.approx(10_000 + 1000 - 1.0)  # short sale proceeds minus the fee
    assert rig.pf.equity({sig.symbol: 98.0}) == pytest.approx(10_000 - 1.0 + entry.qty * (entry.fill_price - 98.0))
    out = rig.bar(make_bar(2, 101, 106, 100, 104))
    (trade,) = out.trades
    exit_price = 105 * (1 + SLIP)  # buying back: higher
    assert trade.exit_price == pytest.approx(exit_price) and trade.exit_reason is ExitReason.STOP
    pnl, pnl_pct, r = expected_trade(entry, exit_price, Side.SHORT, 105.0)
    assert trade.pnl == pytest.approx(pnl) and pnl < 0
    assert trade.pnl_pct == pytest.approx(pnl_pct) and trade.r_multiple == pytest.approx(r)
    assert rig.pf.cash == pytest.approx(10_000 + pnl)


def test_short_target() -> None:
    rig = Rig()
    sig = make_signal(Side.SHORT, entry=100.0, stop=105.0, target=90.0)
    rig.submit(sig, equity=10_000.0)
    (entry,) = rig.bar(entry_bar(99.5)).fills
    (trade,) = rig.bar(make_bar(2, 95, 96, 89, 91)).trades
    assert trade.exit_reason is ExitReason.TARGET and trade.exit_price == 90.0
    assert trade.pnl == pytest.approx(expected_trade(entry, 90.0, Side.SHORT, 105.0)[0]) and trade.pnl > 0


def test_modified_stop_is_the_positions_stop() -> None:
    rig = Rig()
    sig = make_signal(entry=100.0, stop=95.0, target=110.0)
    rig.submit(sig, accept(sig, size_pct=50, stop=98.0))
    rig.bar(entry_bar())
    out = rig.bar(make_bar(2, 99.5, 99.8, 97.5, 98.5))  # through 98, not 95
    (trade,) = out.trades
    assert trade.exit_reason is ExitReason.STOP and trade.exit_price == pytest.approx(98 * (1 - SLIP))


# ------------------------------------------------------------------------------- ledger and shadow


def random_session(seed: int, *, limits: dict[str, MarketLimits] | None = None, modify: bool = True,
                   n: int = 300) -> tuple[Rig, ShadowBook, list[Outcome], dict[str, Signal], dict[str, Decision]]:
    """Three symbols of random bars; signals at random closes (both sides), accepted or modified."""
    rng = np.random.default_rng(seed)
    syms = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    series = {s: random_bars(n, seed=seed * 10 + k, symbol=s, vol=0.006) for k, s in enumerate(syms)}
    cfg = exec_config(max_bars_held=12)
    rig = Rig(cfg, limits)
    shadow = ShadowBook(cfg, TF)
    shadow_out: list[Outcome] = []
    signals: dict[str, Signal] = {}
    decisions: dict[str, Decision] = {}
    for i in range(n):
        for s in syms:
            b = series[s][i]
            rig.bar(b)
            shadow.on_bar(b, shadow_out)
        for s in syms:
            if rng.random() < 0.06:
                b = series[s][i]
                side = Side.LONG if rng.random() < 0.5 else Side.SHORT
                d_stop, d_tgt = rng.uniform(0.004, 0.02), rng.uniform(0.004, 0.03)
                sig = make_signal(side, entry=b.close, stop=b.close * (1 - side.sign * d_stop),
                                  target=b.close * (1 + side.sign * d_tgt), symbol=s, created_ms=b.close_ms,
                                  strategy_id=f"st{int(rng.integers(0, 2))}", size_hint=float(rng.uniform(0.05, 0.3)))
                dec = accept(sig)
                if modify and rng.random() < 0.3:
                    tighter = sig.stop_loss + side.sign * d_stop * b.close * 0.5
                    dec = Decision(sig.id, Action.EXECUTE, float(rng.uniform(10, 100)), tighter, sig.take_profit, (),
                                   "modify")
                signals[sig.id] = sig
                decisions[sig.id] = dec
                rig.submit(sig, dec)
                shadow.add(sig)
    return rig, shadow, shadow_out, signals, decisions


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_wallet_rebuilt_from_the_ledger_equals_the_live_one(seed: int) -> None:
    rig, *_ = random_session(seed)
    live = rig.pf
    assert len(live.trades) >= 10, "the scenario must close trades"
    rebuilt = Portfolio.from_ledger(rig.fills, rig.metas, TF)
    assert rebuilt.cash == live.cash
    assert rebuilt.deposits == live.deposits == 10_000
    assert rebuilt.realized_pnl == live.realized_pnl
    assert rebuilt.realized_peak == live.realized_peak
    assert rebuilt.positions == live.positions
    strip = [dataclasses.replace(t, bars_held=0) for t in live.trades]
    assert [dataclasses.replace(t, bars_held=0) for t in rebuilt.trades] == strip
    assert rebuilt.last_exit_ms == live.last_exit_ms
    assert {k: list(v) for k, v in rebuilt.stopouts.items()} == {k: list(v) for k, v in live.stopouts.items()}
    marks = rig.marks
    assert rebuilt.equity(marks) == live.equity(marks)
    # money is conserved: equity = deposit + realized pnl + unrealized pnl − entry fees of open positions
    open_part = sum(p.unrealized_pnl(marks[p.symbol]) - p.entry_fee for p in live.positions.values())
    assert live.equity(marks) == pytest.approx(10_000 + sum(t.pnl for t in live.trades) + open_part, rel=1e-12)


def test_wallet_rebuilt_from_the_ledger_keeps_bars_held() -> None:
    """``from_ledger`` promises an exact rebuild; the trades' bars_held is part of what was booked."""
    rig, *_ = random_session(1)
    rebuilt = Portfolio.from_ledger(rig.fills, rig.metas, TF)
    assert [t.bars_held for t in rebuilt.trades] == [t.bars_held for t in rig.pf.trades]


def test_from_ledger_needs_every_entry_meta() -> None:
    rig = Rig()
    open_long(rig)
    with pytest.raises(KeyError):
        Portfolio.from_ledger(rig.fills, {})


@pytest.mark.parametrize("seed", [4, 5])
@pytest.mark.parametrize("step", [0.0, 0.01])
def test_shadow_pnl_equals_the_realized_pnl_of_the_same_signal(seed: int, step: float) -> None:
    limits = {s: MarketLimits(s, qty_step=step) for s in ("BTC/USDT", "ETH/USDT", "SOL/USDT")}
    rig, _, shadow_out, _, _ = random_session(seed, limits=limits, modify=False)
    realized = {o.signal_id: o for o in rig.outcomes}
    shadows = {o.signal_id: o for o in shadow_out}
    compared = 0
    for sid, sh in shadows.items():
        re = realized.get(sid)
        if re is None or not re.filled or not sh.filled:
            if re is not None and re.note.startswith("entry cancelled"):
                assert not sh.filled and sh.note == re.note
            continue
        assert sh.kind is OutcomeKind.SHADOW
        assert sh.pnl_pct == pytest.approx(re.pnl_pct, rel=1e-9, abs=1e-9)
        assert sh.r_multiple == pytest.approx(re.r_multiple, rel=1e-9, abs=1e-9)
        assert (sh.exit_reason, sh.ambiguous, sh.opened_ms, sh.closed_ms) == (
            re.exit_reason, re.ambiguous, re.opened_ms, re.closed_ms)
        compared += 1
    assert compared >= 10


def test_shadow_of_a_single_signal_by_hand() -> None:
    cfg = exec_config()
    shadow = ShadowBook(cfg, TF)
    sig = make_signal(entry=100.0, stop=95.0, target=110.0)
    shadow.add(sig)
    out: list[Outcome] = []
    shadow.on_bar(entry_bar(100.5), out)
    assert out == [] and len(shadow) == 1
    shadow.on_bar(make_bar(2, 101, 110.5, 100, 109), out)
    (o,) = out
    entry = 100.5 * (1 + SLIP)
    pnl = (110 - entry) - (entry + 110) * FEE
    assert o.filled and o.exit_reason == "target" and o.pnl_pct == pytest.approx(pnl / entry * 100)
    assert o.r_multiple == pytest.approx(pnl / (entry - 95))
    assert len(shadow) == 0


def test_close_all_marks_out_positions_and_reports_unfilled_entries() -> None:
    rig = Rig()
    sig, entry = open_long(rig)
    later = make_signal(sid="late", created_ms=bar_close_ms(1))
    rig.submit(later)
    out = ExecutionReport()
    rig.ex.close_all({sig.symbol: 103.0}, bar_close_ms(5), out)
    (fill,) = out.fills
    (trade,) = out.trades
    assert fill.reason == "end" and fill.requested_price == 103.0
    assert fill.fill_price == pytest.approx(103.0 * (1 - SLIP)) and fill.filled_ms == bar_close_ms(5)
    assert trade.exit_reason is ExitReason.END and trade.bars_held == 5
    assert trade.pnl == pytest.approx(expected_trade(entry, 103.0 * (1 - SLIP), Side.LONG, 95.0)[0])
    unfilled = [o for o in out.outcomes if not o.filled]
    assert [o.signal_id for o in unfilled] == ["late"]
    assert unfilled[0].note == "run ended before the entry could fill"
    assert rig.pf.positions == {} and _pending(rig) == 0
    assert rig.pf.cash == pytest.approx(10_000 + trade.pnl)


def test_shadow_close_all() -> None:
    shadow = ShadowBook(exec_config(), TF)
    a = make_signal(Side.SHORT, entry=100.0, stop=105.0, target=90.0, sid="a")
    b = make_signal(sid="b", symbol="ETH/USDT")
    shadow.add(a)
    shadow.add(b)
    out: list[Outcome] = []
    shadow.on_bar(entry_bar(100.0), out)
    shadow.close_all({"BTC/USDT": 98.0}, bar_close_ms(3), out)
    by = {o.signal_id: o for o in out}
    assert not by["b"].filled and by["b"].note == "run ended before the entry could fill"
    entry, exit_ = 100.0 * (1 - SLIP), 98.0 * (1 + SLIP)
    pnl = (entry - exit_) - (entry + exit_) * FEE
    assert by["a"].filled and by["a"].exit_reason == "end" and by["a"].pnl_pct == pytest.approx(pnl / entry * 100)
    assert len(shadow) == 0


def test_deposit_fill() -> None:
    pf = Portfolio(TF)
    ex = PaperExecutor(exec_config(), pf, {}, TF)
    f = ex.deposit(2500.0, T0)
    assert f.kind is FillKind.DEPOSIT and f.cash_delta == 2500.0
    assert pf.cash == pf.deposits == pf.realized_equity == pf.realized_peak == 2500.0
