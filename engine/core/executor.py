"""Paper execution: decisions in → fills at the next bar's open, exits by stop/target/time → trades.

``ShadowBook`` simulates signals *as emitted* with the very same fill rules, touching no wallet: the
shadow trade that scores what a veto or a modification avoided.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from engine.config import ExecutionConfig
from engine.core.fills import check_exit, entry_blocked, slip
from engine.core.portfolio import EntryMeta, Portfolio, trade_figures
from engine.types import (
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
    Trade,
)

__all__ = ["ExecutionReport", "PaperExecutor", "PendingEntry", "ShadowBook"]


@dataclass(frozen=True, slots=True)
class PendingEntry:
    signal: Signal
    decision: Decision
    notional: float  # quote amount requested at decision time
    placed_ms: int


@dataclass(slots=True)
class ExecutionReport:
    fills: list[Fill] = field(default_factory=list)
    trades: list[Trade] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


class PaperExecutor:
    """Owns pending entries; books every fill into the ``Portfolio``."""

    def __init__(self, cfg: ExecutionConfig, portfolio: Portfolio, limits: Mapping[str, MarketLimits],
                 timeframe_ms: int) -> None:
        self.cfg = cfg
        self.portfolio = portfolio
        self.limits = dict(limits)
        self.timeframe_ms = timeframe_ms
        self.pending: dict[str, list[PendingEntry]] = {}
        self.metas: dict[str, EntryMeta] = {}
        self._fee = cfg.fee_bps / 10_000.0

    def deposit(self, amount: float, at_ms: int) -> Fill:
        fill = Fill(id="deposit:0", signal_id="", symbol=self.cfg.quote, side=Side.LONG, kind=FillKind.DEPOSIT,
                    filled_ms=at_ms, requested_price=1.0, fill_price=1.0, qty=amount, fee=0.0, reason="deposit")
        self.portfolio.apply(fill)
        return fill

    def submit(self, signal: Signal, decision: Decision, equity: float, now_ms: int) -> None:
        """Queue an entry for the next bar's open. Notional = equity × size_hint × size_pct."""
        notional = equity * signal.size_hint * decision.size_pct / 100.0
        self.pending.setdefault(signal.symbol, []).append(PendingEntry(signal, decision, notional, now_ms))
        self.metas[signal.id] = EntryMeta(signal.strategy_id, decision.stop_loss, decision.take_profit)

    def on_bar(self, bar: Bar, marks: Mapping[str, float], out: ExecutionReport) -> None:
        """Entries at this bar's open first, then exits over the bar for every position on its symbol."""
        queued = self.pending.pop(bar.symbol, None)
        if queued:
            for p in queued:
                self._enter(p, bar, marks, out)
        positions = [p for p in self.portfolio.positions.values() if p.symbol == bar.symbol]
        for pos in positions:
            bars_held = (bar.close_ms - pos.opened_ms) // self.timeframe_ms
            hit = check_exit(pos.side, pos.stop_loss, pos.take_profit, bar, bars_held,
                             self.cfg.max_bars_held, self.cfg.slippage_bps)
            if hit is not None:
                self._exit(pos.signal_id, bar, hit.reason, hit.requested_price, hit.fill_price,
                           out, ambiguous=hit.ambiguous, gap=hit.gap)

    def on_bars(self, bars: Sequence[Bar], marks: Mapping[str, float], out: ExecutionReport) -> None:
        """``on_bar`` for each bar of a slice, skipping the symbols with nothing pending or open (a bar only
        ever changes the orders and positions of its own symbol)."""
        busy = {p.symbol for p in self.portfolio.positions.values()}
        if self.pending:
            busy.update(self.pending)
        if busy:
            for bar in bars:
                if bar.symbol in busy:
                    self.on_bar(bar, marks, out)

    def close_all(self, marks: Mapping[str, float], at_ms: int, out: ExecutionReport) -> None:
        """Mark every open position out at the last close (a finite replay ran out of data)."""
        for pos in sorted(self.portfolio.positions.values(), key=lambda p: p.signal_id):
            price = marks.get(pos.symbol, pos.entry_price)
            fill_price = slip(price, pos.side, pos.side is Side.SHORT, self.cfg.slippage_bps)
            bar = Bar(pos.symbol, at_ms - self.timeframe_ms, at_ms, price, price, price, price, 0.0)
            self._exit(pos.signal_id, bar, ExitReason.END, price, fill_price, out)
        for sym in sorted(self.pending):
            for p in self.pending[sym]:
                out.outcomes.append(Outcome(p.signal.id, OutcomeKind.REALIZED, filled=False,
                                            note="run ended before the entry could fill"))
        self.pending.clear()

    # ---------------------------------------------------------------------------------- internals
    def _enter(self, p: PendingEntry, bar: Bar, marks: Mapping[str, float], out: ExecutionReport) -> None:
        sig, dec = p.signal, p.decision
        blocked = entry_blocked(sig.side, bar.open, dec.stop_loss, dec.take_profit)
        if blocked is not None:
            self._no_fill(sig.id, f"entry cancelled: {blocked}", out)
            return
        buying = sig.side is Side.LONG
        price = slip(bar.open, sig.side, buying, self.cfg.slippage_bps)
        notional = p.notional
        notes = ""
        # No leverage: what is committed (at cost, plus fees) never exceeds equity.
        equity = self.portfolio.equity(marks)
        available = equity - self.portfolio.gross_exposure(marks)
        if notional * (1 + self._fee) > available:
            notional = max(0.0, available / (1 + self._fee))
            notes = f"size reduced to available buying power {notional:.2f}"
        qty = notional / price if price > 0 else 0.0
        lim = self.limits.get(sig.symbol)
        if lim is not None and lim.qty_step > 0:
            qty = math.floor(qty / lim.qty_step + 1e-9) * lim.qty_step
        if lim is not None and lim.min_qty > 0 and qty < lim.min_qty:
            self._no_fill(sig.id, f"below exchange minimum quantity {lim.min_qty:g} (got {qty:.8g})", out)
            return
        if lim is not None and lim.min_notional > 0 and qty * price < lim.min_notional:
            self._no_fill(sig.id, f"below exchange minimum notional {lim.min_notional:g} (got {qty * price:.4g})", out)
            return
        if qty <= 0:
            self._no_fill(sig.id, "no buying power left", out)
            return
        fill = Fill(id=f"{sig.id}:entry", signal_id=sig.id, symbol=sig.symbol, side=sig.side, kind=FillKind.ENTRY,
                    filled_ms=bar.open_ms, requested_price=bar.open, fill_price=price, qty=qty,
                    fee=qty * price * self._fee, reason="next_open" + (f"; {notes}" if notes else ""))
        self.portfolio.apply(fill, self.metas[sig.id])
        out.fills.append(fill)

    def _exit(self, signal_id: str, bar: Bar, reason: ExitReason, requested: float, price: float,
              out: ExecutionReport, *, ambiguous: bool = False, gap: bool = False) -> None:
        pos = self.portfolio.positions[signal_id]
        fill = Fill(id=f"{signal_id}:exit", signal_id=signal_id, symbol=pos.symbol, side=pos.side,
                    kind=FillKind.EXIT, filled_ms=bar.close_ms, requested_price=requested, fill_price=price,
                    qty=pos.qty, fee=pos.qty * price * self._fee, reason=str(reason), ambiguous=ambiguous, gap=gap)
        trade = self.portfolio.apply(fill)
        assert trade is not None
        self.metas.pop(signal_id, None)
        out.fills.append(fill)
        out.trades.append(trade)
        out.outcomes.append(Outcome(signal_id, OutcomeKind.REALIZED, filled=True, pnl_pct=trade.pnl_pct,
                                    r_multiple=trade.r_multiple, exit_reason=str(reason), ambiguous=ambiguous,
                                    opened_ms=trade.opened_ms, closed_ms=trade.closed_ms))

    @staticmethod
    def _no_fill(signal_id: str, note: str, out: ExecutionReport) -> None:
        out.outcomes.append(Outcome(signal_id, OutcomeKind.REALIZED, filled=False, note=note))


@dataclass(slots=True)
class _Shadow:
    signal: Signal
    entry: float = 0.0
    opened_ms: int = 0
    open: bool = False


class ShadowBook:
    """Every reviewed signal, simulated as emitted (same fills, fees, exits), scored in pnl %."""

    def __init__(self, cfg: ExecutionConfig, timeframe_ms: int) -> None:
        self.cfg = cfg
        self.timeframe_ms = timeframe_ms
        self.by_symbol: dict[str, list[_Shadow]] = {}
        self._fee = cfg.fee_bps / 10_000.0

    def add(self, signal: Signal) -> None:
        self.by_symbol.setdefault(signal.symbol, []).append(_Shadow(signal))

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_symbol.values())

    def on_bars(self, bars: Sequence[Bar], out: list[Outcome]) -> None:
        if self.by_symbol:
            for bar in bars:
                if bar.symbol in self.by_symbol:
                    self.on_bar(bar, out)

    def on_bar(self, bar: Bar, out: list[Outcome]) -> None:
        lst = self.by_symbol.get(bar.symbol)
        if not lst:
            return
        keep: list[_Shadow] = []
        for s in lst:
            sig = s.signal
            if not s.open:
                blocked = entry_blocked(sig.side, bar.open, sig.stop_loss, sig.take_profit)
                if blocked is not None:
                    out.append(Outcome(sig.id, OutcomeKind.SHADOW, filled=False, note=f"entry cancelled: {blocked}"))
                    continue
                s.entry = slip(bar.open, sig.side, sig.side is Side.LONG, self.cfg.slippage_bps)
                s.opened_ms = bar.open_ms
                s.open = True
            bars_held = (bar.close_ms - s.opened_ms) // self.timeframe_ms
            hit = check_exit(sig.side, sig.stop_loss, sig.take_profit, bar, bars_held,
                             self.cfg.max_bars_held, self.cfg.slippage_bps)
            if hit is None:
                keep.append(s)
                continue
            out.append(self._outcome(s, hit.fill_price, bar.close_ms, str(hit.reason), hit.ambiguous))
        if keep:
            self.by_symbol[bar.symbol] = keep
        else:
            del self.by_symbol[bar.symbol]

    def close_all(self, marks: Mapping[str, float], at_ms: int, out: list[Outcome]) -> None:
        for sym in sorted(self.by_symbol):
            for s in self.by_symbol[sym]:
                if not s.open:
                    out.append(Outcome(s.signal.id, OutcomeKind.SHADOW, filled=False,
                                       note="run ended before the entry could fill"))
                    continue
                price = slip(marks.get(sym, s.entry), s.signal.side, s.signal.side is Side.SHORT,
                             self.cfg.slippage_bps)
                out.append(self._outcome(s, price, at_ms, str(ExitReason.END), False))
        self.by_symbol.clear()

    def _outcome(self, s: _Shadow, exit_price: float, at_ms: int, reason: str, ambiguous: bool) -> Outcome:
        fees = (s.entry + exit_price) * self._fee  # per unit
        _, pnl_pct, r = trade_figures(s.signal.side, s.entry, exit_price, 1.0, fees, s.signal.stop_loss)
        return Outcome(s.signal.id, OutcomeKind.SHADOW, filled=True, pnl_pct=pnl_pct, r_multiple=r,
                       exit_reason=reason, ambiguous=ambiguous, opened_ms=s.opened_ms, closed_ms=at_ms)
